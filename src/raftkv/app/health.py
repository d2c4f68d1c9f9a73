"""etcd 3.5's health endpoints: ``/health``, ``/livez`` and ``/readyz``.

- ``/health``: ``{"health":"true","reason":""}`` (200) or ``"false"`` with etcd's reason
  (503): ``ALARM NOSPACE`` / ``ALARM CORRUPT`` (``?exclude=NOSPACE`` skips an alarm),
  ``RAFT NO LEADER`` (not with ``?serializable=true``), ``RANGE ERROR:<error>`` when a
  one-key range (linearizable unless ``?serializable=true``) fails within the request
  timeout.  The range runs as root, as etcd's ``AuthStore().WithRoot``.
- ``/livez`` (check ``serializable_read``) and ``/readyz`` (``data_corruption``,
  ``serializable_read``, ``linearizable_read``, ``non_learner``): ``ok`` (200), with each
  check's ``[+]name ok`` line first under ``?verbose``; a failure answers 503 with every
  check's line (``[-]name failed: <error>``).  ``?exclude=<check>`` leaves checks out and
  ``/readyz/<check>`` runs one.

A member this one's guard verdict or apply fenced (``Fence.self_alarmed``) reports CORRUPT
here even before the alarm entry reached its log: it serves nothing, and says so.

Metrics (etcd's names): ``etcd_server_health_success``, ``etcd_server_health_failures``,
``etcd_server_healthcheck{type,name}`` and ``etcd_server_healthchecks_total{type,name,status}``.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Iterator, Sequence

from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from raftkv import errors
from raftkv.auth.tokens import AuthInfo
from raftkv.proto import rpc_pb2 as pb
from raftkv.server.member import Member

log = logging.getLogger("raftkv.health")

_ALARM_REASONS = {int(pb.NOSPACE): "ALARM NOSPACE", int(pb.CORRUPT): "ALARM CORRUPT"}

HEALTH_SUCCESS, HEALTH_ERROR = "success", "error"

Check = Callable[[], Awaitable[None]]
"""A named check: returns, or raises an exception whose text is the failure."""


class HealthMetrics(Collector):
    """etcd's health metrics.  ``etcd_server_health_success`` and ``_failures`` are counters
    without the ``_total`` suffix in etcd; prometheus_client would append it to a counter, so
    they are exposed untyped under etcd's exact names (queries and dashboards match)."""

    def __init__(self) -> None:
        self.success = 0
        self.failures = 0
        self.last: dict[tuple[str, str], float] = {}
        self.runs: dict[tuple[str, str, str], int] = {}

    def record(self, kind: str, name: str, ok: bool) -> None:
        self.last[(kind, name)] = 1.0 if ok else 0.0
        key = (kind, name, HEALTH_SUCCESS if ok else HEALTH_ERROR)
        self.runs[key] = self.runs.get(key, 0) + 1

    def collect(self) -> Iterator[Metric]:
        for name, value, help_text in (
            ("etcd_server_health_success", self.success, "successful"),
            ("etcd_server_health_failures", self.failures, "failed"),
        ):
            untyped = Metric(name, f"The total number of {help_text} health checks", "unknown")
            untyped.add_sample(name, {}, value)
            yield untyped
        gauge = GaugeMetricFamily(
            "etcd_server_healthcheck",
            "The result of each kind of healthcheck.",
            labels=["type", "name"],
        )
        for (kind, check), result in sorted(self.last.items()):
            gauge.add_metric([kind, check], result)
        yield gauge
        counter = CounterMetricFamily(
            "etcd_server_healthchecks",
            "The total number of each kind of healthcheck.",
            labels=["type", "name", "status"],
        )
        for labels, count in sorted(self.runs.items()):
            counter.add_metric(list(labels), count)
        yield counter


class Health:
    """The member's health answers; one per process, shared by every HTTP listener."""

    def __init__(self, member: Member, registry: CollectorRegistry | None) -> None:
        self.member = member
        self.metrics = HealthMetrics()
        if registry is not None:
            registry.register(self.metrics)
        self.livez: dict[str, Check] = {"serializable_read": self._read(serializable=True)}
        self.readyz: dict[str, Check] = {
            "data_corruption": self._no_corruption,
            "serializable_read": self._read(serializable=True),
            "linearizable_read": self._read(serializable=False),
            "non_learner": self._non_learner,
        }

    # -- /health --------------------------------------------------------------------------

    def alarm_reason(self, excluded: Sequence[str]) -> str:
        alarms = {alarm for _member, alarm in self.member.applier.alarms}
        if self.member.fence.self_alarmed():
            alarms.add(int(pb.CORRUPT))
        for alarm in sorted(alarms):
            if pb.AlarmType.Name(alarm) in excluded:
                continue
            return _ALARM_REASONS.get(alarm, "ALARM UNKNOWN")
        return ""

    async def health(self, excluded: Sequence[str], serializable: bool) -> tuple[bool, str]:
        reason = self.alarm_reason(excluded)
        if not reason and not serializable and not self.member.raft.lead:
            reason = "RAFT NO LEADER"
        if not reason:
            try:
                await self._range(serializable)
            except Exception as exc:
                reason = f"RANGE ERROR:{_describe(exc)}"
        if reason:
            log.warning("serving /health false: %s", reason)
            self.metrics.failures += 1
            return False, reason
        self.metrics.success += 1
        return True, ""

    # -- checks ---------------------------------------------------------------------------

    async def _range(self, serializable: bool) -> None:
        member = self.member
        auth = member.applier.auth
        root = AuthInfo("root", auth.revision) if auth.enabled else None
        req = pb.RangeRequest(keys_only=True, limit=1, serializable=serializable)
        async with asyncio.timeout(member.request_timeout):
            await member.kv.range(req, root)

    def _read(self, serializable: bool) -> Check:
        async def check() -> None:
            await self._range(serializable)

        return check

    async def _no_corruption(self) -> None:
        if self.member.fence.self_alarmed() or any(
            alarm == pb.CORRUPT for _m, alarm in self.member.applier.alarms
        ):
            raise RuntimeError("alarm activated: CORRUPT")

    async def _non_learner(self) -> None:
        member = self.member
        if member.member_id not in member.raft.conf_state.voters:
            raise RuntimeError("not supported for learner")

    async def run_checks(self, kind: str, checks: dict[str, Check]) -> tuple[bool, str]:
        ok, lines = True, []
        for name, check in checks.items():
            try:
                await check()
            except Exception as exc:
                ok = False
                lines.append(f"[-]{name} failed: {_describe(exc)}\n")
                self.metrics.record(kind, name, ok=False)
            else:
                lines.append(f"[+]{name} ok\n")
                self.metrics.record(kind, name, ok=True)
        return ok, "".join(lines)

    # -- HTTP -----------------------------------------------------------------------------

    def add_routes(self, app: web.Application) -> None:
        app.router.add_route("*", "/health", self.handle_health)
        for kind, checks in (("livez", self.livez), ("readyz", self.readyz)):
            app.router.add_route("*", f"/{kind}", self._registry_handler(kind, checks, None))
            for name in checks:
                app.router.add_route(
                    "*", f"/{kind}/{name}", self._registry_handler(kind, checks, name)
                )

    async def handle_health(self, request: web.Request) -> web.StreamResponse:
        if request.method != "GET":
            return _method_not_allowed()
        excluded = [q for q in request.query.getall("exclude", []) if q]
        serializable = request.query.get("serializable") == "true"
        ok, reason = await self.health(excluded, serializable)
        body = json.dumps(
            {"health": "true" if ok else "false", "reason": reason}, separators=(",", ":")
        )
        return _text(body if ok else body + "\n", 200 if ok else 503)

    def _registry_handler(
        self, kind: str, checks: dict[str, Check], only: str | None
    ) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def handle(request: web.Request) -> web.StreamResponse:
            if request.method != "GET":
                return _method_not_allowed()
            if only is not None:
                chosen = {only: checks[only]}
            else:
                excluded = {q for q in request.query.getall("exclude", []) if q}
                missing = excluded - set(checks)
                if missing:
                    log.warning(
                        "some health checks cannot be excluded: %s",
                        ",".join(f'"{m}"' for m in sorted(missing)),
                    )
                chosen = {n: c for n, c in checks.items() if n not in excluded}
            ok, reason = await self.run_checks(kind, chosen)
            if not ok:
                log.error("health check error path=%s reason=%r", request.path, reason)
                return _text(reason + "\n", 503)
            verbose = "verbose" in request.query
            return _text((reason if verbose else "") + "ok\n", 200, nosniff=True)

        return handle


def _describe(exc: BaseException) -> str:
    if isinstance(exc, errors.EtcdError):
        return exc.message
    if isinstance(exc, TimeoutError):
        return "context deadline exceeded"
    return str(exc) or type(exc).__name__


def _text(body: str, status: int, nosniff: bool = False) -> web.Response:
    headers = {"X-Content-Type-Options": "nosniff"} if nosniff or status != 200 else {}
    return web.Response(
        text=body, status=status, content_type="text/plain", charset="utf-8", headers=headers
    )


def _method_not_allowed() -> web.Response:
    resp = _text("Method Not Allowed\n", 405)
    resp.headers["Allow"] = "GET"
    return resp
