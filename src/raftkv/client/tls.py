"""TLS for client channels: the files etcdctl's flags name, the credentials gRPC dials with, and
what went wrong when a TLS channel does not come up.

Owns:

- :func:`load_material`: ``--cacert``, ``--cert`` and ``--key`` read and checked (PEM, a key
  that matches the certificate, no passphrase) on every call, so a long-running client picks
  up renewed files; every problem is one :class:`~raftkv.client.errors.CtlError` line naming the
  flag and the file (exit 128, as etcdctl's ``newClientCfg``), never a traceback;
- :func:`channel_transport`: the one builder of what a channel to an endpoint needs (target,
  ``grpc.ssl_channel_credentials`` or none, options), used by every client: the command line,
  the inspector, the backup agent and the benchmark's load processes;
- ``--insecure-skip-tls-verify``: gRPC Python cannot switch verification off, so the client
  fetches the certificate the server presents (a handshake with verification off, presenting
  ``--cert`` if given), trusts exactly that certificate for that connection and checks the
  server's names against a name the certificate carries (``grpc.ssl_target_name_override``:
  its first DNS name, else its first IP address, else its common name).  The server's identity
  is not verified; the certificate's validity dates still are, so an expired one is refused;
- :func:`ssl_context`: the same settings for Python's ``ssl`` (HTTPS metrics scraping, probes);
- :func:`explain_failure`: when a channel did not become ready, a handshake with Python's
  ``ssl`` and the same settings tells whether TLS is why (an unverifiable certificate, a
  refused or missing client certificate, TLS against a plaintext server or the reverse).
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import grpc
import grpc.aio

from raftkv.client.endpoints import grpc_target, host_port
from raftkv.client.errors import EXIT_BAD_ARGS, CtlError
from raftkv.client.security import TLSSettings

NAME_OVERRIDE = "grpc.ssl_target_name_override"
_ALERT_NAMES = {"unknown ca": "unknown certificate authority"}
_ALERT_WAIT = 1.0  # seconds a probe waits for a post-handshake alert (TLS 1.3)

ChannelOptions = Sequence[tuple[str, Any]]


@dataclass(frozen=True)
class Material:
    """PEM bytes as ``grpc.ssl_channel_credentials`` takes them; None where not given."""

    roots: bytes | None
    key: bytes | None
    chain: bytes | None


def _bad(message: str) -> CtlError:
    return CtlError(message, EXIT_BAD_ARGS)


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as exc:
        why = exc.strerror or str(exc)
        raise _bad(f"open {path}: {why[:1].lower()}{why[1:]}") from None


def _ca_bundle(path: str) -> bytes:
    from cryptography import x509

    roots = _read(path)
    try:
        x509.load_pem_x509_certificates(roots)
    except ValueError:
        raise _bad(f"--cacert {path}: no PEM certificate found in the CA bundle") from None
    return roots


def _key_pair(cert: str, key: str) -> tuple[bytes, bytes]:
    """(key, certificate chain) PEM, checked to belong together."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    chain, private_pem = _read(cert), _read(key)
    try:
        leaf = x509.load_pem_x509_certificates(chain)[0]
    except ValueError:
        raise _bad(
            f"--cert {cert}: tls: failed to find any PEM data in certificate input"
        ) from None
    try:
        private = serialization.load_pem_private_key(private_pem, password=None)
    except TypeError:
        raise _bad(
            f"--key {key}: the private key is encrypted; give one without a passphrase"
        ) from None
    except ValueError:
        raise _bad(f"--key {key}: tls: failed to find any PEM data in key input") from None
    der, spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    if leaf.public_key().public_bytes(der, spki) != private.public_key().public_bytes(der, spki):
        raise _bad(f"--cert {cert} and --key {key}: tls: private key does not match public key")
    return private_pem, chain


def load_material(tls: TLSSettings) -> Material:
    """The files of ``tls``, read and checked; raises CtlError (exit 128) naming the file."""
    roots = _ca_bundle(tls.cacert) if tls.cacert else None
    key, chain = _key_pair(tls.cert, tls.key) if tls.cert and tls.key else (None, None)
    return Material(roots=roots, key=key, chain=chain)


def ssl_context(tls: TLSSettings, verify: bool = True) -> ssl.SSLContext:
    """A client context for Python's ``ssl`` with the settings of ``tls``: the CA bundle (or the
    system's), the client certificate, and no verification for ``--insecure-skip-tls-verify``
    or ``verify=False``.  Offers ALPN ``h2`` (what gRPC servers expect)."""
    load_material(tls)  # the files' errors, with their flag and path
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.set_alpn_protocols(["h2"])
    try:
        if tls.cert and tls.key:
            ctx.load_cert_chain(tls.cert, tls.key)
        if not verify or tls.skip_verify:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        elif tls.cacert:
            ctx.load_verify_locations(cafile=tls.cacert)
        else:
            ctx.load_default_certs(ssl.Purpose.SERVER_AUTH)
    except (OSError, ssl.SSLError) as exc:
        raise _bad(f"TLS settings do not load: {exc}") from None
    return ctx


def _handshake(endpoint: str, ctx: ssl.SSLContext, timeout: float) -> ssl.SSLSocket:
    """A TLS connection to ``endpoint``; raises OSError (ssl.SSLError included)."""
    host, port = host_port(endpoint)
    sock = socket.create_connection((host, port), timeout=timeout)
    try:
        return ctx.wrap_socket(sock, server_hostname=host)
    except BaseException:
        sock.close()
        raise


def presented_certificate(endpoint: str, tls: TLSSettings, timeout: float) -> bytes | None:
    """The DER certificate the server at ``endpoint`` presents (verification off); None when
    it cannot be reached or does not complete a TLS handshake within ``timeout``."""
    ctx = ssl_context(tls, verify=False)
    try:
        with _handshake(endpoint, ctx, timeout) as conn:
            return conn.getpeercert(binary_form=True)
    except (OSError, ValueError):
        return None


def certificate_name(der: bytes) -> str:
    """A name ``der`` is valid for: its first DNS name (a wildcard made concrete), else its
    first IP address, else its common name; CtlError when it has none."""
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    cert = x509.load_der_x509_certificate(der)
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        dns = san.get_values_for_type(x509.DNSName)
        ips = san.get_values_for_type(x509.IPAddress)
    except x509.ExtensionNotFound:
        dns, ips = [], []
    if dns:
        return "raftkv" + dns[0][1:] if dns[0].startswith("*.") else dns[0]
    if ips:
        return str(ips[0])
    for attr in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME):
        return str(attr.value)
    raise CtlError("the server's certificate names no host: it cannot be trusted even unverified")


@dataclass(frozen=True)
class ChannelTransport:
    """How to open a channel to one endpoint: plaintext when ``credentials`` is None."""

    target: str
    credentials: grpc.ChannelCredentials | None = None
    options: tuple[tuple[str, Any], ...] = ()

    def channel(self, options: ChannelOptions = ()) -> grpc.Channel:
        opts = [*options, *self.options]
        if self.credentials is None:
            return grpc.insecure_channel(self.target, options=opts)
        return grpc.secure_channel(self.target, self.credentials, options=opts)

    def aio_channel(self, options: ChannelOptions = ()) -> grpc.aio.Channel:
        opts = [*options, *self.options]
        if self.credentials is None:
            return grpc.aio.insecure_channel(self.target, options=opts)
        return grpc.aio.secure_channel(self.target, self.credentials, options=opts)


def channel_transport(endpoint: str, tls: TLSSettings, timeout: float) -> ChannelTransport | None:
    """What a channel to ``endpoint`` needs under ``tls``; None when ``--insecure-skip-tls-verify``
    is asked for and the server's certificate could not be fetched within ``timeout`` (the
    endpoint is unreachable).  Raises CtlError for unusable files."""
    target = grpc_target(endpoint)
    if not tls.uses_tls(endpoint):
        return ChannelTransport(target)
    material = load_material(tls)
    if not tls.skip_verify:
        creds = grpc.ssl_channel_credentials(material.roots, material.key, material.chain)
        return ChannelTransport(target, creds)
    der = presented_certificate(endpoint, tls, timeout)
    if der is None:
        return None
    pem = ssl.DER_cert_to_PEM_cert(der).encode()
    creds = grpc.ssl_channel_credentials(pem, material.key, material.chain)
    return ChannelTransport(target, creds, ((NAME_OVERRIDE, certificate_name(der)),))


def _alert(exc: ssl.SSLError) -> str | None:
    reason = str(exc.reason or "")
    if "ALERT_" not in reason:
        return None
    name = reason.split("ALERT_", 1)[1].lower().replace("_", " ")
    return _ALERT_NAMES.get(name, name)


def _tls_problem(endpoint: str, tls: TLSSettings, exc: ssl.SSLError) -> str | None:
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"x509: cannot verify the certificate of {endpoint}: {exc.verify_message}"
    alert = _alert(exc)
    if alert is None:
        if "WRONG_VERSION_NUMBER" in str(exc.reason) or "RECORD_LAYER" in str(exc.reason):
            return f"tls: {endpoint} does not answer with TLS (a plaintext server?)"
        return None
    remote = f"remote error: tls: {alert}"
    if "certificate" not in alert:
        return f"tls: handshake with {endpoint} failed: {remote}"
    if not tls.cert:
        return f"tls: {endpoint} requires a client certificate (--cert and --key): {remote}"
    return f"tls: {endpoint} refused the client certificate {tls.cert}: {remote}"


def _speaks_tls(endpoint: str, timeout: float) -> bool:
    """Whether the server at ``endpoint`` answers a TLS handshake (completing it, or refusing
    it with a TLS alert)."""
    try:
        with _handshake(endpoint, ssl_context(TLSSettings(), verify=False), timeout):
            return True
    except ssl.SSLError as exc:
        return _alert(exc) is not None
    except (OSError, ValueError):
        return False


def explain_failure(endpoint: str, tls: TLSSettings, timeout: float) -> str | None:
    """Why a channel to ``endpoint`` did not become ready, when TLS is why; None otherwise
    (nothing listens, the server is slow, ...).  Takes at most about ``timeout`` + 1 s."""
    if not tls.uses_tls(endpoint):
        if not _speaks_tls(endpoint, timeout):
            return None
        return (
            f"{endpoint} serves TLS: dial https://{grpc_target(endpoint)}, or give "
            "--cacert (and --cert and --key when it asks for a client certificate)"
        )
    try:
        with _handshake(endpoint, ssl_context(tls), timeout) as conn:
            conn.settimeout(min(timeout, _ALERT_WAIT))
            conn.recv(1)  # TLS 1.3 refuses a client certificate after the handshake
    except ssl.SSLError as exc:
        return _tls_problem(endpoint, tls, exc)
    except (OSError, ValueError):
        return None
    return None
