"""etcd's token authentication on the client side, as clientv3 does it.

Owns: :class:`TokenSession` (``Auth.Authenticate`` once per connection; the token sent as gRPC
metadata ``token`` on every call; a new token fetched once, and the call repeated once, when the
server answers that the token is no longer good), :func:`with_token` (a channel whose every call
carries the token: a client interceptor, because gRPC Python sends call credentials only over
TLS and etcd accepts tokens over plaintext too), and :class:`AioTokenSession` (the same for
``grpc.aio``: the benchmark's load processes pass the metadata per call, which costs less than an
interceptor there).

Contracts, clientv3's (``client.go`` ``getToken``, ``retry_interceptor.go``
``shouldRefreshToken``):

- an ``etcdserver: authentication is not enabled`` answer leaves the session without a token
  and calls go out anonymous; so does UNIMPLEMENTED (a server without the Auth service);
- any other failure of Authenticate raises the ``grpc.RpcError`` (e.g. ``etcdserver:
  authentication failed, invalid user ID or password``), for the caller to report;
- the answers that make a session fetch a new token are ``etcdserver: invalid auth token``,
  ``etcdserver: revision of auth store is old`` and ``etcdserver: user name is empty``; a
  refresh happens once per failed call, and only one thread fetches while the others wait;
- blocking unary calls are repeated after a refresh; a stream's failure reaches its caller.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, NamedTuple

import grpc
import grpc.aio

from raftkv.client.security import Credentials

TOKEN_KEY = "token"
AUTH_NOT_ENABLED = "etcdserver: authentication is not enabled"
REFRESH_ON = frozenset(
    {
        "etcdserver: invalid auth token",
        "etcdserver: revision of auth store is old",
        "etcdserver: user name is empty",
    }
)

Metadata = tuple[tuple[str, str], ...]


def _request(credentials: Credentials) -> Any:
    from raftkv.proto import rpc_pb2

    return rpc_pb2.AuthenticateRequest(name=credentials.user, password=credentials.password)


def _status(exc: BaseException) -> tuple[grpc.StatusCode | None, str]:
    """The status code and details of a failed call (sync or aio); (None, "") otherwise."""
    if not isinstance(exc, grpc.RpcError):
        return None, ""
    code = getattr(exc, "code", None)
    details = getattr(exc, "details", None)
    return (code() if callable(code) else None), str((details() if callable(details) else "") or "")


def _anonymous(exc: grpc.RpcError) -> bool:
    """Whether Authenticate's failure means the server does not check tokens at all."""
    code, details = _status(exc)
    return code == grpc.StatusCode.UNIMPLEMENTED or details == AUTH_NOT_ENABLED


def needs_refresh(exc: BaseException) -> bool:
    """Whether a call failed because its token is no longer good."""
    return _status(exc)[1] in REFRESH_ON


def _metadata(token: str) -> Metadata:
    return ((TOKEN_KEY, token),) if token else ()


class TokenSession:
    """One user's token over one channel (``channel`` is the plain one, without the token)."""

    def __init__(self, channel: grpc.Channel, credentials: Credentials, timeout: float) -> None:
        from raftkv.proto import rpc_pb2_grpc

        self._authenticate = rpc_pb2_grpc.AuthStub(channel).Authenticate
        self._credentials = credentials
        self._timeout = timeout
        self._lock = threading.Lock()
        self.token = ""

    def authenticate(self) -> None:
        """Fetch a token (see the module's contracts); raises grpc.RpcError."""
        try:
            resp = self._authenticate(_request(self._credentials), timeout=self._timeout)
        except grpc.RpcError as exc:
            if not _anonymous(exc):
                raise
            self.token = ""
            return
        self.token = str(resp.token)

    def refresh(self, stale: str) -> None:
        """Fetch a new token unless another thread already replaced ``stale``."""
        with self._lock:
            if self.token == stale:
                self.authenticate()


class _Details(NamedTuple):
    method: str
    timeout: float | None
    metadata: Any
    credentials: grpc.CallCredentials | None
    wait_for_ready: bool | None
    compression: Any


class _TokenInterceptor(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
    grpc.StreamUnaryClientInterceptor,
    grpc.StreamStreamClientInterceptor,
):
    def __init__(self, session: TokenSession) -> None:
        self.session = session

    def _details(self, details: Any, token: str) -> Any:
        kept = [(k, v) for k, v in (details.metadata or ()) if k != TOKEN_KEY]
        return _Details(
            details.method,
            details.timeout,
            [*kept, *_metadata(token)],
            details.credentials,
            details.wait_for_ready,
            getattr(details, "compression", None),
        )

    def intercept_unary_unary(
        self, continuation: Callable[[Any, Any], Any], client_call_details: Any, request: Any
    ) -> Any:
        token = self.session.token
        outcome = continuation(self._details(client_call_details, token), request)
        if isinstance(outcome, BaseException) and needs_refresh(outcome):
            try:
                self.session.refresh(token)
            except grpc.RpcError as exc:
                return exc
            outcome = continuation(self._details(client_call_details, self.session.token), request)
        return outcome

    def intercept_unary_stream(
        self, continuation: Callable[[Any, Any], Any], client_call_details: Any, request: Any
    ) -> Any:
        return continuation(self._details(client_call_details, self.session.token), request)

    def intercept_stream_unary(
        self,
        continuation: Callable[[Any, Iterator[Any]], Any],
        client_call_details: Any,
        request_iterator: Iterator[Any],
    ) -> Any:
        return continuation(
            self._details(client_call_details, self.session.token), request_iterator
        )

    def intercept_stream_stream(
        self,
        continuation: Callable[[Any, Iterator[Any]], Any],
        client_call_details: Any,
        request_iterator: Iterator[Any],
    ) -> Any:
        return continuation(
            self._details(client_call_details, self.session.token), request_iterator
        )


def with_token(channel: grpc.Channel, session: TokenSession) -> grpc.Channel:
    """``channel`` with ``session``'s token on every call (closing it closes ``channel``)."""
    return grpc.intercept_channel(channel, _TokenInterceptor(session))


class AioTokenSession:
    """:class:`TokenSession` for ``grpc.aio``: ``call`` runs one unary call with the token."""

    def __init__(self, channel: grpc.aio.Channel, credentials: Credentials, timeout: float) -> None:
        from raftkv.proto import rpc_pb2_grpc

        self._authenticate = rpc_pb2_grpc.AuthStub(channel).Authenticate
        self._credentials = credentials
        self._timeout = timeout
        self._lock = asyncio.Lock()
        self.token = ""
        self.metadata: Metadata = ()

    async def authenticate(self) -> None:
        """Fetch a token (see the module's contracts); raises grpc.aio.AioRpcError."""
        try:
            resp = await self._authenticate(_request(self._credentials), timeout=self._timeout)
        except grpc.aio.AioRpcError as exc:
            if not _anonymous(exc):
                raise
            self.token = ""
        else:
            self.token = str(resp.token)
        self.metadata = _metadata(self.token)

    async def call(
        self, method: Callable[..., Awaitable[Any]], request: Any, timeout: float
    ) -> Any:
        """``method(request)`` with the token; once more with a new one if it was stale."""
        token = self.token
        try:
            return await method(request, timeout=timeout, metadata=self.metadata)
        except grpc.aio.AioRpcError as exc:
            if not needs_refresh(exc):
                raise
        async with self._lock:
            if self.token == token:
                await self.authenticate()
        return await method(request, timeout=timeout, metadata=self.metadata)
