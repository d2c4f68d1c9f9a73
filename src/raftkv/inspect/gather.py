"""Asking every member what it holds: the data-gathering half of ``raftkv check consistency``.

Owns: choosing the members to ask (the ``--endpoints`` given, or every member's client URL from
MemberList when one endpoint is given), the per-member survey (Maintenance.Status, a count-only
serializable Range over the whole key space, Maintenance.Alarm GET, the Prometheus counters;
raftkv's versions come with Status, see ``raftkv.client.status``), and
taking HashKV and the key count of every member at one common revision.  Members are dialed with
the TLS and the user's token of ``InspectOptions.security`` (``raftkv.client.conn.dial``), and
HTTPS metrics URLs are read with the same TLS settings.

Contracts: members are asked in parallel, every RPC carries ``command_timeout`` and every dial
``dial_timeout``, so one check is bounded by about ``attempts * (dial + 3 * command)`` seconds;
a member that fails an RPC other than the alarm list or the metrics is reported unreachable with
the reason, never dropped silently.  The common revision is the smallest current revision among
the members that answered; a member that compacted past it, or members whose compact revisions
differ (a compaction being applied), make the check retry with fresh revisions.
"""

from __future__ import annotations

import functools
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

import grpc

from raftkv.client.conn import CtlError, Stubs, dial, grpc_error_text, grpc_target
from raftkv.client.security import ClientSecurity, TLSSettings
from raftkv.client.status import status_with_versions
from raftkv.client.tls import ssl_context
from raftkv.inspect.verdict import COUNTER_NAMES, CheckResult, MemberReport, judge

T = TypeVar("T")
R = TypeVar("R")

_ALARM_NAMES = {0: "NONE", 1: "NOSPACE", 2: "CORRUPT"}
_WHOLE_KEYSPACE = (b"\x00", b"\x00")
_RETRY_PAUSE = 0.2


class UsageError(Exception):
    """The command line asked for something impossible (printed, exit status 2)."""


@dataclass(frozen=True)
class InspectOptions:
    endpoints: list[str]
    dial_timeout: float = 2.0
    command_timeout: float = 5.0
    # Empty, or one URL per endpoint (or per discovered member, in member-list order).
    metrics_urls: tuple[str, ...] = ()
    attempts: int = 5
    security: ClientSecurity = field(default_factory=ClientSecurity)


@dataclass
class _Target:
    endpoint: str
    name: str = ""
    member_id: int = 0
    metrics_url: str | None = None
    error: str | None = None


def _parallel(func: Callable[[T], R], items: Sequence[T]) -> list[R]:
    if len(items) <= 1:
        return [func(i) for i in items]
    with ThreadPoolExecutor(max_workers=len(items)) as pool:
        return list(pool.map(func, items))


def _err(exc: Exception) -> str:
    return grpc_error_text(exc) if isinstance(exc, grpc.RpcError) else str(exc)


def _dial(endpoint: str, opts: InspectOptions) -> tuple[Stubs | None, str]:
    """Stubs for ``endpoint``, or None and why not (unreachable, TLS, authentication)."""
    try:
        stubs = dial(endpoint, opts.dial_timeout, opts.security)
    except CtlError as exc:
        return None, f"dial {endpoint}: {exc.message}"
    if stubs is None:
        return None, f"dial {endpoint}: context deadline exceeded"
    return stubs, ""


def _same_endpoint(a: str, b: str) -> bool:
    return grpc_target(a) == grpc_target(b)


def _member_list(endpoints: Sequence[str], opts: InspectOptions) -> tuple[Any | None, str]:
    """MemberList from the first endpoint that answers, or (None, the last failure)."""
    from raftkv.proto import rpc_pb2

    failure = "no endpoint given"
    for ep in endpoints:
        stubs, why = _dial(ep, opts)
        if stubs is None:
            failure = why
            continue
        try:
            return (
                stubs.cluster.MemberList(rpc_pb2.MemberListRequest(), timeout=opts.command_timeout),
                "",
            )
        except grpc.RpcError as exc:
            failure = f"member list from {ep}: {_err(exc)}"
        finally:
            stubs.close()
    return None, failure


def resolve_targets(opts: InspectOptions) -> list[_Target]:
    """The members to ask, named from MemberList when some endpoint can give it."""
    given = list(opts.endpoints)
    if not given:
        raise UsageError("no endpoint given")
    urls = list(opts.metrics_urls)
    members, failure = _member_list(given, opts)
    targets: list[_Target]
    if len(given) == 1 and members is not None:
        targets = []
        for m in sorted(members.members, key=lambda m: (m.name, m.ID)):
            ep = m.clientURLs[0] if m.clientURLs else ""
            t = _Target(endpoint=ep, name=m.name, member_id=m.ID)
            if not ep:
                t.error = "member has no client URL (not started yet)"
            targets.append(t)
        if len(urls) == len(targets):
            for t, url in zip(targets, urls, strict=True):
                t.metrics_url = url
        elif len(urls) == 1:
            for t in targets:
                if any(_same_endpoint(u, given[0]) for u in _client_urls(members, t.member_id)):
                    t.metrics_url = urls[0]
        elif urls:
            raise UsageError(
                f"--metrics-urls has {len(urls)} URLs for 1 endpoint and "
                f"{len(targets)} members: give one URL per endpoint or per member"
            )
        return targets
    if urls and len(urls) != len(given):
        raise UsageError(
            f"--metrics-urls has {len(urls)} URLs for {len(given)} endpoints: give one per endpoint"
        )
    targets = [_Target(endpoint=ep) for ep in given]
    for i, t in enumerate(targets):
        t.metrics_url = urls[i] if urls else None
        if members is None:
            continue
        for m in members.members:
            if any(_same_endpoint(u, t.endpoint) for u in m.clientURLs):
                t.name, t.member_id = m.name, m.ID
    if members is None and len(given) == 1:
        targets[0].error = failure
    return targets


def _client_urls(members: Any, member_id: int) -> list[str]:
    return [u for m in members.members if member_id == m.ID for u in m.clientURLs]


def scrape_counters(url: str, timeout: float, tls: TLSSettings | None = None) -> dict[str, float]:
    """The ``COUNTER_NAMES`` samples (summed over label sets) found at ``url`` (``/metrics``);
    an ``https://`` URL is read with the TLS settings ``tls`` (CA, client certificate)."""
    if not url.startswith(("http://", "https://")):
        url = "http://" + url
    if not url.rstrip("/").endswith("/metrics"):
        url = url.rstrip("/") + "/metrics"
    req = urllib.request.Request(url, headers={"Accept": "text/plain"})
    ctx = ssl_context(tls or TLSSettings()) if url.startswith("https://") else None
    with urllib.request.urlopen(req, timeout=timeout, context=ctx) as resp:
        text = resp.read().decode("utf-8", "replace")
    return parse_counters(text)


def parse_counters(text: str) -> dict[str, float]:
    found: dict[str, float] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name_end = min((i for i in (line.find("{"), line.find(" ")) if i >= 0), default=-1)
        if name_end < 0:
            continue
        name = line[:name_end]
        if name not in COUNTER_NAMES:
            continue
        rest = line[line.rfind("}") + 1 :] if "{" in line[: name_end + 1] else line[name_end:]
        try:
            value = float(rest.split()[0])
        except (IndexError, ValueError):
            continue
        found[name] = found.get(name, 0.0) + value
    return found


def _survey(target: _Target, opts: InspectOptions) -> tuple[MemberReport, Stubs | None]:
    """Phase one for one member: status, current revision and count, alarms, counters."""
    from raftkv.proto import rpc_pb2

    rep = MemberReport(
        endpoint=target.endpoint,
        name=target.name,
        member_id=target.member_id,
        metrics_url=target.metrics_url,
    )
    if target.error is not None:
        rep.error = target.error
        return rep, None
    stubs, why = _dial(target.endpoint, opts)
    if stubs is None:
        rep.error = why
        return rep, None
    t = opts.command_timeout
    try:
        st, versions = status_with_versions(stubs.maintenance, t)
        key, end = _WHOLE_KEYSPACE
        rng = stubs.kv.Range(
            rpc_pb2.RangeRequest(key=key, range_end=end, count_only=True, serializable=True),
            timeout=t,
        )
    except grpc.RpcError as exc:
        rep.error = _err(exc)
        stubs.close()
        return rep, None
    rep.member_id = st.header.member_id or rep.member_id
    rep.cluster_id = st.header.cluster_id
    rep.version, rep.db_size, rep.leader = st.version, st.dbSize, st.leader
    rep.raft_term, rep.raft_index = st.raftTerm, st.raftIndex
    rep.raft_applied_index = st.raftAppliedIndex
    rep.is_learner = st.isLearner
    rep.raftkv_version = versions.server or None
    rep.cluster_version = versions.cluster or None
    rep.storage_version = versions.storage or None
    rep.revision, rep.key_count = rng.header.revision, rng.count
    try:
        alarms = stubs.maintenance.Alarm(
            rpc_pb2.AlarmRequest(action=rpc_pb2.AlarmRequest.GET), timeout=t
        )
        rep.alarms = sorted(
            (a.memberID, _ALARM_NAMES.get(a.alarm, str(a.alarm))) for a in alarms.alarms
        )
    except grpc.RpcError as exc:
        rep.alarm_error = _err(exc)
    if target.metrics_url:
        try:
            rep.counters = scrape_counters(target.metrics_url, t, opts.security.tls)
        except (OSError, urllib.error.URLError, ValueError) as exc:
            rep.metrics_error = str(exc)
        except CtlError as exc:
            rep.metrics_error = exc.message
    return rep, stubs


@dataclass
class _AtRev:
    hash: int = 0
    compact: int = 0
    current: int = 0
    count: int = 0
    retry: str | None = None  # compacted / future revision: worth another attempt
    error: str | None = None  # anything else: the member stopped answering


def _at_revision(stubs: Stubs, rev: int, timeout: float) -> _AtRev:
    from raftkv.proto import rpc_pb2

    key, end = _WHOLE_KEYSPACE
    try:
        h = stubs.maintenance.HashKV(rpc_pb2.HashKVRequest(revision=rev), timeout=timeout)
        rng = stubs.kv.Range(
            rpc_pb2.RangeRequest(
                key=key, range_end=end, count_only=True, serializable=True, revision=rev
            ),
            timeout=timeout,
        )
    except grpc.RpcError as exc:
        text = _err(exc)
        if exc.code() == grpc.StatusCode.OUT_OF_RANGE:
            return _AtRev(retry=text)
        return _AtRev(error=text)
    return _AtRev(h.hash, h.compact_revision, h.header.revision, rng.count)


def _at_live(rev: int, timeout: float, live: tuple[MemberReport, Stubs]) -> _AtRev:
    return _at_revision(live[1], rev, timeout)


def _hash_at_common_revision(
    live: list[tuple[MemberReport, Stubs]], result: CheckResult, opts: InspectOptions
) -> None:
    """Set hash, key count and revisions on every live member, or explain why not."""
    why = ""
    for attempt in range(max(1, opts.attempts)):
        live = [(r, s) for r, s in live if r.ok]
        if not live:
            return
        if attempt:
            time.sleep(_RETRY_PAUSE)
        common = min(r.revision or 0 for r, _s in live)
        answers = _parallel(functools.partial(_at_live, common, opts.command_timeout), live)
        for (rep, _s), a in zip(live, answers, strict=True):
            if a.error is not None:
                rep.error = f"HashKV at revision {common}: {a.error}"
            elif a.retry is None:
                rep.revision = max(rep.revision or 0, a.current)
        ok = [(r, a) for (r, _s), a in zip(live, answers, strict=True) if r.ok]
        retry = [(r, a) for r, a in ok if a.retry is not None]
        if retry:
            why = "; ".join(f"{r.label}: {a.retry}" for r, a in retry)
            why = f"revision {common} cannot be compared ({why})"
            _refresh_revisions([(r, s) for r, s in live if r.ok], opts)
            continue
        compacts = sorted({a.compact for _r, a in ok})
        if len(compacts) > 1:
            listing = ", ".join(f"{r.label} {a.compact}" for r, a in ok)
            why = f"compact revisions differ, hashes cannot be compared: {listing}"
            continue
        result.common_revision = common
        result.compact_revision = compacts[0] if compacts else None
        for r, a in ok:
            r.hash, r.hash_revision, r.key_count = a.hash, common, a.count
            r.compact_revision = a.compact
        return
    result.problems.append(why)


def _refresh_revisions(live: list[tuple[MemberReport, Stubs]], opts: InspectOptions) -> None:
    from raftkv.proto import rpc_pb2

    key, end = _WHOLE_KEYSPACE

    def one(rs: tuple[MemberReport, Stubs]) -> None:
        rep, stubs = rs
        try:
            rng = stubs.kv.Range(
                rpc_pb2.RangeRequest(key=key, range_end=end, count_only=True, serializable=True),
                timeout=opts.command_timeout,
            )
            rep.revision = rng.header.revision
        except grpc.RpcError as exc:
            rep.error = _err(exc)

    _parallel(one, live)


def check(opts: InspectOptions) -> CheckResult:
    """One complete, judged check of the cluster behind ``opts.endpoints``."""
    targets = resolve_targets(opts)
    surveyed = _parallel(lambda t: _survey(t, opts), targets)
    result = CheckResult(members=[rep for rep, _s in surveyed])
    live = [(rep, s) for rep, s in surveyed if s is not None and rep.ok]
    try:
        _hash_at_common_revision(live, result, opts)
    finally:
        for _rep, s in surveyed:
            if s is not None:
                s.close()
    # Members reached through an endpoint not in MemberList are named by their endpoint.
    for rep in result.members:
        if rep.ok and not rep.name:
            rep.name = rep.endpoint
    return judge(result)
