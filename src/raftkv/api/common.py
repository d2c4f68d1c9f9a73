"""What every service shares: error translation and the servicer context type.

Contract: ``guarded`` runs one RPC body (``fail`` is the same translation for a handler that
catches its own exceptions); an ``EtcdError`` becomes etcd's gRPC status and
message; any other exception is a server bug, logged with its traceback and reported as UNKNOWN
with its text — it never takes the member down.

Corruption at rest found while serving (``BackendCorruptionError``: a stored value failed its
CRC during a Range, a read-only Txn, HashKV, ...) is not a server bug: the client gets etcd's
``etcdserver: corrupt cluster`` (DATA_LOSS) and the error goes to the process's corruption
reporter (``set_corruption_reporter``; ``raftkv serve`` installs its member's
``report_backend_corruption``, which logs the bucket and key and fences the member with a
CORRUPT alarm through Raft).  The corrupt data itself is never returned.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, NoReturn, TypeVar

import grpc.aio

from raftkv import errors
from raftkv.api.ports import AuthPort, Who
from raftkv.mvcc.errors import BackendCorruptionError

log = logging.getLogger("raftkv.api")

Context = grpc.aio.ServicerContext[Any, Any]
T = TypeVar("T")

CorruptionReporter = Callable[[BackendCorruptionError], None]
"""Told about each corruption a client request ran into; must not block or raise."""

_reporter: CorruptionReporter | None = None

FRONT_CN_METADATA = "raftkv-front-cn"
"""Metadata a gRPC front process (``raftkv.app.front``) sets to the CN of the certificate its
client presented; a front drops whatever a client sent under this key."""

_trust_front_cn = False


def set_corruption_reporter(reporter: CorruptionReporter | None) -> None:
    """Install the process's corruption reporter (one member per process; None: none)."""
    global _reporter
    _reporter = reporter


def trust_front_cn(trust: bool) -> None:
    """Take a call's client certificate CN from ``FRONT_CN_METADATA`` (``raftkv serve`` with
    front processes, whose gRPC server then listens only on the fronts' private socket, where
    no call carries a certificate of its own)."""
    global _trust_front_cn
    _trust_front_cn = trust


def report_corruption(exc: BackendCorruptionError) -> None:
    """Hand ``exc`` to the installed reporter, or log it when there is none; never raises."""
    reporter = _reporter
    if reporter is None:
        log.error("backend corruption while serving a request (no reporter installed): %s", exc)
        return
    try:
        reporter(exc)
    except Exception:
        log.exception("the corruption reporter failed on: %s", exc)


async def caller(auth: AuthPort, context: Context) -> Who:
    """Who sent this request, while auth is enabled: the ``token`` metadata (etcd's clients;
    ``authorization`` for the HTTP gateway) or, without one, the client certificate's CN under
    ``--client-cert-auth`` (as a front process forwarded it, see ``trust_front_cn``).  Raises
    ``invalid auth token`` for a token nobody issued."""
    if not auth.enabled:
        return None
    token = token_of(context)
    cn = None
    if token is None and auth.client_cert_auth:
        cn = certificate_cn(context) or _front_cn(context)
    return await auth.who(token, cn)


def token_of(context: Context) -> str | None:
    """The call's auth token: its ``token`` metadata (etcd's clients) or ``authorization``
    (the HTTP gateway)."""
    return _metadata_value(context, ("token", "authorization"))


def certificate_cn(context: Context) -> str | None:
    """The CN of the certificate the client presented (None without TLS or a certificate)."""
    names = list(context.auth_context().get("x509_common_name") or ())
    return names[0].decode() if names else None


def _front_cn(context: Context) -> str | None:
    return _metadata_value(context, (FRONT_CN_METADATA,)) if _trust_front_cn else None


def _metadata_value(context: Context, keys: tuple[str, ...]) -> str | None:
    """The value of the call's first metadata entry under one of ``keys``, as text."""
    for key, value in context.invocation_metadata() or ():
        if key in keys:
            return value if isinstance(value, str) else value.decode()
    return None


async def require_admin(auth: AuthPort, context: Context) -> None:
    """etcd's ``IsAdminPermitted`` for the caller (nothing while auth is disabled)."""
    if auth.enabled:
        auth.check_admin(await caller(auth, context))


async def require_caller(auth: AuthPort, context: Context) -> None:
    """etcd's ``requireAuthInfo``: a known caller (nothing while auth is disabled)."""
    if auth.enabled:
        auth.check_authenticated(await caller(auth, context))


async def guarded_as_admin(auth: AuthPort, context: Context, call: Callable[[], Awaitable[T]]) -> T:
    """``guarded``, once the caller is root (while auth is enabled)."""

    async def body() -> T:
        await require_admin(auth, context)
        return await call()

    return await guarded(context, body)


async def guarded_as_caller(
    auth: AuthPort, context: Context, call: Callable[[], Awaitable[T]]
) -> T:
    """``guarded``, once the caller is known (while auth is enabled)."""

    async def body() -> T:
        await require_caller(auth, context)
        return await call()

    return await guarded(context, body)


async def guarded(context: Context, body: Callable[[], Awaitable[T]]) -> T:
    try:
        return await body()
    except Exception as exc:
        await fail(context, exc)


async def fail(context: Context, exc: Exception) -> NoReturn:
    """End the RPC for ``exc`` raised by its body, as ``guarded`` does; for the hottest
    handlers, which catch exceptions themselves rather than pay for a closure per call."""
    if isinstance(exc, errors.EtcdError):
        await errors.abort(context, exc)
    if isinstance(exc, BackendCorruptionError):
        report_corruption(exc)
        await errors.abort(context, errors.ERR_CORRUPT())
    if isinstance(exc, grpc.aio.AbortError):
        raise exc
    log.exception("unexpected error serving a request", exc_info=exc)
    await errors.abort(context, exc)
