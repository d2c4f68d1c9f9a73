"""TLS of the client URLs: the gRPC server's credentials and the per-call certificate checks
gRPC's TLS cannot make.

Owns: ``server_credentials`` (the certificate served on ``https`` client URLs, re-read when its
files change, and ``--client-cert-auth`` against ``--trusted-ca-file``) and
``CertificateChecks``, the interceptor for ``--client-crl-file`` and
``--client-cert-allowed-hostname``.

Contracts:
- certificates are re-read for new connections when a file changes (size, mtime or inode);
  material that does not load keeps the last good certificate and logs why once;
- gRPC's TLS library takes no revocation list and no name rule, so with ``--client-crl-file``
  or ``--client-cert-allowed-hostname`` every call is checked before it runs: a revoked or
  not-allowed client certificate gets ``UNAUTHENTICATED`` and nothing else.  etcd refuses
  such a client in the handshake instead; the client is refused either way.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import grpc.aio

from raftkv.tlsutil import (
    Stamp,
    TLSConfigError,
    TLSInfo,
    cert_name_refusal,
    file_stamp,
    read_material,
)

log = logging.getLogger("raftkv.tls")


def server_credentials(info: TLSInfo) -> grpc.ServerCredentials:
    """Credentials for ``add_secure_port``: ``info``'s certificate, re-read on change."""
    require = info.client_cert_auth and not info.auto
    paths = tuple(p for p in (info.cert_file, info.key_file, info.trusted_ca_file) if p)

    def configuration() -> Any:
        key, chain = read_material(info.key_file), read_material(info.cert_file)
        roots = read_material(info.trusted_ca_file) if require else None
        return grpc.ssl_server_certificate_configuration([(key, chain)], root_certificates=roots)

    state = {"stamp": file_stamp(paths), "error": ""}

    def fetch() -> Any:
        # Called by gRPC for every handshake: None keeps the current certificate.
        stamp = file_stamp(paths)
        if stamp == state["stamp"]:
            return None
        state["stamp"] = stamp
        try:
            config = configuration()
        except (TLSConfigError, ValueError, RuntimeError) as exc:
            if str(exc) != state["error"]:
                log.warning("client certificate not reloaded: %s", exc)
            state["error"] = str(exc)
            return None
        state["error"] = ""
        log.info("client certificate reloaded from %s", info.cert_file)
        return config

    return grpc.dynamic_ssl_server_credentials(
        configuration(), fetch, require_client_authentication=require
    )


class _Revocations:
    """The serial numbers of ``--client-crl-file``, re-read when the file changes."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._stamp: Stamp = ()
        self._serials: frozenset[int] = frozenset()
        self.serials()

    def serials(self) -> frozenset[int]:
        stamp = file_stamp((self.path,))
        if stamp != self._stamp:
            self._serials = frozenset(load_crl_serials(self.path))
            self._stamp = stamp
        return self._serials


def load_crl_serials(path: str) -> list[int]:
    """Revoked serial numbers of a PEM or DER CRL; ``TLSConfigError`` when it does not parse."""
    from cryptography import x509

    data = read_material(path)
    try:
        crl = (
            x509.load_pem_x509_crl(data) if b"-----BEGIN" in data else x509.load_der_x509_crl(data)
        )
    except ValueError as exc:
        raise TLSConfigError(f"cannot load CRL file {path}: {exc}") from None
    return [r.serial_number for r in crl]


class CertificateChecks(grpc.aio.ServerInterceptor):
    """Refuses calls whose client certificate is revoked or not allowed by name."""

    def __init__(self, info: TLSInfo) -> None:
        self._crl = _Revocations(info.crl_file) if info.crl_file else None
        self._hostnames = info.allowed_hostnames
        # PEM -> (serial, name refusal): each certificate is parsed once; the revocation list
        # (re-read when its file changes) is consulted on every call.
        self._certs: dict[bytes, tuple[int, str | None]] = {}

    def refusal(self, auth: dict[str, list[bytes]]) -> str | None:
        pems = auth.get("x509_pem_cert") or []
        if not pems:
            return "no client certificate"
        pem = pems[0]
        known = self._certs.get(pem)
        if known is None:
            if len(self._certs) > 4096:
                self._certs.clear()
            known = self._certs[pem] = self._parse(pem)
        serial, name_refusal = known
        if self._crl is not None and serial in self._crl.serials():
            return f"client certificate serial {serial:x} is revoked"
        return name_refusal

    def _parse(self, pem: bytes) -> tuple[int, str | None]:
        from cryptography import x509

        cert = x509.load_pem_x509_certificate(pem)
        if not self._hostnames:
            return cert.serial_number, None
        try:
            san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            names = [("DNS", n) for n in san.get_values_for_type(x509.DNSName)] + [
                ("IP Address", str(ip)) for ip in san.get_values_for_type(x509.IPAddress)
            ]
        except x509.ExtensionNotFound:
            names = []
        return cert.serial_number, cert_name_refusal({"subjectAltName": names}, (), self._hostnames)

    async def intercept_service(
        self,
        continuation: Callable[[Any], Awaitable[Any]],
        handler_call_details: Any,
    ) -> Any:
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        return _guarded(handler, self)


def _guarded(handler: Any, checks: CertificateChecks) -> Any:
    async def check(context: Any) -> None:
        why = checks.refusal(context.auth_context())
        if why is not None:
            log.warning("rejected client call %s: %s", context.peer(), why)
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, why)

    def wrap(behavior: Callable[..., Any]) -> Callable[..., Any]:
        if inspect.isasyncgenfunction(behavior):

            async def stream(request: Any, context: Any) -> AsyncIterator[Any]:
                await check(context)
                async for item in behavior(request, context):
                    yield item

            return stream

        async def call(request: Any, context: Any) -> Any:
            await check(context)
            return await behavior(request, context)

        return call

    ser, de = handler.response_serializer, handler.request_deserializer
    if handler.unary_unary is not None:
        return grpc.unary_unary_rpc_method_handler(wrap(handler.unary_unary), de, ser)
    if handler.unary_stream is not None:
        return grpc.unary_stream_rpc_method_handler(wrap(handler.unary_stream), de, ser)
    if handler.stream_unary is not None:
        return grpc.stream_unary_rpc_method_handler(wrap(handler.stream_unary), de, ser)
    return grpc.stream_stream_rpc_method_handler(wrap(handler.stream_stream), de, ser)
