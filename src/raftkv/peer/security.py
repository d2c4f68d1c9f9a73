"""Who may talk on the peer port: TLS for the listeners and the dialer, and the certificate
name checks of ``--peer-cert-allowed-cn`` / ``--peer-cert-allowed-hostname``.

Owns: ``PeerSecurity``, the TLS side of the transport (built by the member from its flags).

Contracts:
- an ``https`` listen URL serves TLS with ``server`` (re-read when the files change); with
  ``--peer-client-cert-auth`` the handshake itself refuses a dialer without a certificate
  signed by the peer CA;
- ``refusal`` is asked once per accepted TLS connection, after the handshake and before any
  frame is read: a certificate whose names are not allowed closes the connection;
- an ``https`` peer URL is dialed with ``client`` (this member's peer certificate, the peer CA,
  host name checked), or with the system's trust store when the member has no peer TLS;
- plaintext peer URLs authenticate nobody: ``unauthenticated_warning`` says so at start.
"""

from __future__ import annotations

import ipaddress
import ssl
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from raftkv.tlsutil import ReloadingContext, cert_name_refusal


@dataclass(frozen=True)
class PeerSecurity:
    server: ReloadingContext | None = None
    client: ReloadingContext | None = None
    allowed_cns: tuple[str, ...] = ()
    allowed_hostnames: tuple[str, ...] = ()
    client_cert_auth: bool = False

    def listen_context(self, url: str) -> ssl.SSLContext | None:
        """The TLS context for a listener on ``url``; None for plaintext."""
        if not is_tls_url(url):
            return None
        if self.server is None:
            raise ValueError(f"peer URL {url} is https but no peer certificate is configured")
        return self.server.serving()

    def dial_context(self, url: str) -> ssl.SSLContext | None:
        if not is_tls_url(url):
            return None
        if self.client is not None:
            return self.client.current()
        return ssl.create_default_context()

    def refusal(self, ssl_object: Any) -> str | None:
        """Why the peer on this accepted TLS connection is not allowed in; None if it is."""
        if not (self.allowed_cns or self.allowed_hostnames):
            return None
        cert = ssl_object.getpeercert() if ssl_object is not None else None
        return cert_name_refusal(cert, self.allowed_cns, self.allowed_hostnames)


PLAINTEXT = PeerSecurity()


def is_tls_url(url: str) -> bool:
    return urllib.parse.urlsplit(url).scheme == "https"


def unauthenticated_warning(listen_urls: Sequence[str], security: PeerSecurity) -> str | None:
    """A start-up warning when a peer listener reachable from other hosts authenticates
    nobody (plaintext, or TLS without ``--peer-client-cert-auth``); None otherwise."""
    exposed = []
    for url in listen_urls:
        host = urllib.parse.urlsplit(url).hostname or ""
        if _is_loopback(host):
            continue
        if is_tls_url(url) and security.client_cert_auth:
            continue
        exposed.append(url)
    if not exposed:
        return None
    return (
        f"the peer port {', '.join(exposed)} is unauthenticated: anyone who can reach it can "
        "act as a member of this cluster; serve it over https with --peer-cert-file, "
        "--peer-key-file, --peer-trusted-ca-file and --peer-client-cert-auth"
    )


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
