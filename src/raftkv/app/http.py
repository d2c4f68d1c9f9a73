"""The member's HTTP side, on aiohttp: what etcd serves besides gRPC.

- ``--listen-client-http-urls``: the JSON gateway (``/v3/...``, ``raftkv.api.gateway``), the
  health endpoints (``/health``, ``/livez``, ``/readyz``: ``raftkv.app.health``),
  ``/version`` and ``/metrics``;
- ``--listen-metrics-urls``: ``/metrics``, the health endpoints and ``/version``.

``https`` URLs serve the client certificate (``--cert-file``, re-read when it changes) and,
with ``--client-cert-auth``, require a client certificate from ``--trusted-ca-file``
(revocations from ``--client-crl-file`` in the handshake, ``--client-cert-allowed-hostname``
per gateway call).  Contract: handlers never block the event loop; a handler whose client
goes away is cancelled (a watch streamed to nobody ends).
"""

from __future__ import annotations

import json
import logging
from urllib.parse import urlsplit

from aiohttp import web

from raftkv.api.gateway import Gateway
from raftkv.app.client_tls import CertificateChecks
from raftkv.app.health import Health
from raftkv.app.metrics import MemberMetrics, render
from raftkv.app.services import Services
from raftkv.server.config import ServerConfig
from raftkv.server.member import Member
from raftkv.tlsutil import ReloadingContext, TLSInfo
from raftkv.version import ETCD_API_VERSION, SERVER_VERSION

log = logging.getLogger("raftkv.http")


def version_json(member: Member) -> str:
    """etcd's ``/version`` fields (the etcd API level raftkv serves: etcd clients parse them)
    and raftkv's own server, cluster and storage versions beside them."""
    cv = member.versions.cluster_version
    storage = member.applier.storage_version()
    return json.dumps(
        {
            "etcdserver": ETCD_API_VERSION,
            "etcdcluster": ETCD_API_VERSION if cv is not None else "not_decided",
            "storage": ETCD_API_VERSION,
            "raftkv": str(SERVER_VERSION),
            "raftkvCluster": cv.short() if cv is not None else "not_decided",
            "raftkvStorage": storage.short() if storage is not None else "",
        },
        separators=(",", ":"),
    )


class HttpListeners:
    """The aiohttp listeners of one member; ``start`` binds every URL or raises ``OSError``
    naming the URL (nothing is left listening then)."""

    def __init__(
        self,
        member: Member,
        cfg: ServerConfig,
        services: Services,
        tls: TLSInfo | None,
        checks: CertificateChecks | None,
    ) -> None:
        """``tls``: the client side's material (``security.client_tls``); ``checks``: the
        per-call certificate checks the gRPC server uses too."""
        self.member = member
        self.cfg = cfg
        self.metrics = MemberMetrics(member)
        self.health = Health(member, self.metrics.registry)
        self._ssl = (
            ReloadingContext(lambda: tls.server_context(cfg.tls_policy()), tls.files())
            if tls is not None
            else None
        )
        self.gateway = Gateway(services, checks.refusal if checks is not None else None)
        self._runners: list[web.AppRunner] = []

    def _app(self, gateway: bool) -> web.Application:
        app = web.Application(client_max_size=self.cfg.max_request_bytes + 512 * 1024)
        self.health.add_routes(app)
        app.router.add_get("/version", self._version)
        app.router.add_get("/metrics", self._metrics)
        if gateway:
            self.gateway.add_routes(app)
        return app

    async def start(self) -> None:
        plan = [(u, True) for u in self.cfg.listen_client_http_urls] + [
            (u, False) for u in self.cfg.listen_metrics_urls
        ]
        try:
            for url, gateway in plan:
                await self._listen(url, gateway)
        except OSError:
            await self.close()
            raise

    async def _listen(self, url: str, gateway: bool) -> None:
        parts = urlsplit(url)
        ssl_context = None
        if parts.scheme == "https":
            assert self._ssl is not None  # config refuses an https URL without material
            ssl_context = self._ssl.serving()
        runner = web.AppRunner(self._app(gateway), handler_cancellation=True, access_log=None)
        await runner.setup()
        self._runners.append(runner)
        site = web.TCPSite(runner, parts.hostname, parts.port, ssl_context=ssl_context)
        try:
            await site.start()
        except OSError as exc:
            what = "client HTTP requests" if gateway else "metrics"
            reason = exc.strerror or str(exc)
            raise OSError(exc.errno, f"cannot listen for {what} on {url}: {reason}") from None
        log.info("serving HTTP on %s%s", url, " (with the JSON gateway)" if gateway else "")

    async def close(self) -> None:
        for runner in self._runners:
            await runner.cleanup()
        self._runners = []

    async def _version(self, _request: web.Request) -> web.Response:
        return web.Response(text=version_json(self.member), content_type="application/json")

    async def _metrics(self, _request: web.Request) -> web.Response:
        body, content_type = render(self.metrics.registry)
        return web.Response(body=body, headers={"Content-Type": content_type})
