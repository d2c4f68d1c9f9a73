"""A member's TLS, resolved from its flags at start-up: the certificates of the client URLs
and of the peer transport, generated ones for ``--auto-tls`` / ``--peer-auto-tls``.

Contracts:
- generated certificates live in ``<data-dir>/fixtures/client`` and ``…/fixtures/peer``
  (etcd's places), are made once for the hosts of the listen URLs and reused, mode 0600 in
  directories 0700; given certificate files win over ``--auto-tls``, with etcd's warning;
- every file is checked readable and every context built here, before the member serves, so
  bad material stops the start with one ``TLSConfigError`` line naming the file.
"""

from __future__ import annotations

import logging
import os
import urllib.parse
from collections.abc import Sequence

from raftkv.peer.security import PeerSecurity
from raftkv.server.config import ServerConfig
from raftkv.tlsutil import ReloadingContext, TLSInfo, self_signed_cert

log = logging.getLogger("raftkv.tls")


def _hosts(urls: Sequence[str]) -> list[str]:
    return sorted({urllib.parse.urlsplit(u).hostname or "" for u in urls} - {""})


def _with_auto(
    cfg: ServerConfig, side: str, info: TLSInfo, auto: bool, urls: Sequence[str]
) -> TLSInfo:
    """``info``, or generated material in ``<data-dir>/fixtures/<side>`` (made 0700 with its
    parents) for the hosts of ``urls`` when ``auto`` and no certificate is given."""
    if not auto:
        return info
    if not info.empty():
        log.warning("ignoring %s auto TLS since certs given", side)
        return info
    made = self_signed_cert(
        os.path.join(cfg.resolved_data_dir, "fixtures", side),
        _hosts(urls),
        cfg.self_signed_cert_validity,
    )
    return TLSInfo(
        cert_file=made.cert_file,
        key_file=made.key_file,
        client_cert_auth=info.client_cert_auth,
        auto=True,
    )


def client_side_urls(cfg: ServerConfig) -> tuple[str, ...]:
    """Every URL that serves clients: gRPC, HTTP (``--listen-client-http-urls``) and metrics;
    they share the client TLS material, as in etcd."""
    return cfg.listen_client_urls + cfg.listen_client_http_urls + cfg.listen_metrics_urls


def client_tls(cfg: ServerConfig) -> TLSInfo | None:
    """The client side's TLS material; None when no client-side URL is https."""
    urls = client_side_urls(cfg)
    if not any(urllib.parse.urlsplit(u).scheme == "https" for u in urls):
        return None
    info = _with_auto(cfg, "client", cfg.client_tls(), cfg.auto_tls, urls)
    info.check_files("")
    info.server_context(cfg.tls_policy())  # the pair loads and matches, or one clear line
    return info


def peer_tls(cfg: ServerConfig) -> TLSInfo | None:
    """The peer side's TLS material; None when the member has none (plaintext peers)."""
    info = _with_auto(cfg, "peer", cfg.peer_tls(), cfg.peer_auto_tls, cfg.listen_peer_urls)
    if info.empty():
        return None
    info.check_files("peer-")
    return info


def peer_security(cfg: ServerConfig) -> PeerSecurity:
    """The peer transport's TLS (contexts built now, so bad material fails the start)."""
    info = peer_tls(cfg)
    if info is None:
        return PeerSecurity()
    policy = cfg.tls_policy()
    return PeerSecurity(
        server=ReloadingContext(lambda: info.server_context(policy), info.files()),
        client=ReloadingContext(lambda: info.client_context(policy), info.files()),
        allowed_cns=info.allowed_cns,
        allowed_hostnames=info.allowed_hostnames,
        client_cert_auth=info.client_cert_auth and not info.auto,
    )
