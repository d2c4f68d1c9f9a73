"""etcd's gRPC-gateway: the v3 API as JSON over HTTP/1.1 (``POST /v3/kv/range`` ...).

Owns: the route table (etcd 3.5's ``google.api.http`` paths from ``rpc.proto``), the JSON
mapping (etcd's: protobuf field names, int64 as strings, bytes as base64, zero values left
out; requests take either field-name style and ignore unknown fields), the error body
(``{"error","code","message"}`` with grpc-gateway's HTTP status for the code), and
streaming (``/v3/watch``, ``/v3/lease/keepalive``, ``/v3/maintenance/snapshot``: one
``{"result": ...}`` object per line).

Contracts:
- every call runs the member's own service objects (the ones its gRPC server registered,
  ``raftkv.app.services``) with a ``GatewayContext``, so fencing, auth, validation and errors
  are the gRPC path's; the ``Authorization`` header
  is the auth token (etcd's gateway and ``etcd3gw`` send it there) and, on ``https``, the
  client certificate's CN is the user under ``--client-cert-auth``;
- a stream's request body is a sequence of JSON objects; once it ends a watch keeps
  streaming until the client goes away (etcd keeps a watch open after the client's half
  close), while a keepalive stream ends after answering what it was sent;
- a body that is not a JSON object of the request's type gets 400 with gRPC code 3.
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn, cast

import grpc
from aiohttp import web
from google.protobuf import json_format
from google.protobuf.message import Message

from raftkv.api.common import Context
from raftkv.proto import rpc_pb2 as pb

log = logging.getLogger("raftkv.gateway")

UNARY, SERVER_STREAM, BIDI = "unary", "server-stream", "bidi"


CertificateRefusal = Callable[[dict[str, list[bytes]]], "str | None"]
"""Why a client certificate (as gRPC's auth context names it) is refused, or None."""


@dataclass(frozen=True)
class Route:
    service: str  # the attribute of the services object: kv, watch, lease, ...
    method: str  # the servicer's method (the gRPC method name)
    request: type[Message]
    shape: str = UNARY


def _routes() -> dict[str, Route]:
    r = Route
    table = {
        "/v3/kv/range": r("kv", "Range", pb.RangeRequest),
        "/v3/kv/put": r("kv", "Put", pb.PutRequest),
        "/v3/kv/deleterange": r("kv", "DeleteRange", pb.DeleteRangeRequest),
        "/v3/kv/txn": r("kv", "Txn", pb.TxnRequest),
        "/v3/kv/compaction": r("kv", "Compact", pb.CompactionRequest),
        "/v3/watch": r("watch", "Watch", pb.WatchRequest, BIDI),
        "/v3/lease/grant": r("lease", "LeaseGrant", pb.LeaseGrantRequest),
        "/v3/lease/revoke": r("lease", "LeaseRevoke", pb.LeaseRevokeRequest),
        "/v3/lease/keepalive": r("lease", "LeaseKeepAlive", pb.LeaseKeepAliveRequest, BIDI),
        "/v3/lease/timetolive": r("lease", "LeaseTimeToLive", pb.LeaseTimeToLiveRequest),
        "/v3/lease/leases": r("lease", "LeaseLeases", pb.LeaseLeasesRequest),
        "/v3/cluster/member/add": r("cluster", "MemberAdd", pb.MemberAddRequest),
        "/v3/cluster/member/remove": r("cluster", "MemberRemove", pb.MemberRemoveRequest),
        "/v3/cluster/member/update": r("cluster", "MemberUpdate", pb.MemberUpdateRequest),
        "/v3/cluster/member/list": r("cluster", "MemberList", pb.MemberListRequest),
        "/v3/cluster/member/promote": r("cluster", "MemberPromote", pb.MemberPromoteRequest),
        "/v3/maintenance/alarm": r("maintenance", "Alarm", pb.AlarmRequest),
        "/v3/maintenance/status": r("maintenance", "Status", pb.StatusRequest),
        "/v3/maintenance/defragment": r("maintenance", "Defragment", pb.DefragmentRequest),
        "/v3/maintenance/hash": r("maintenance", "Hash", pb.HashRequest),
        "/v3/maintenance/hashkv": r("maintenance", "HashKV", pb.HashKVRequest),
        "/v3/maintenance/snapshot": r("maintenance", "Snapshot", pb.SnapshotRequest, SERVER_STREAM),
        "/v3/maintenance/transfer-leadership": r("maintenance", "MoveLeader", pb.MoveLeaderRequest),
        "/v3/maintenance/downgrade": r("maintenance", "Downgrade", pb.DowngradeRequest),
        "/v3/auth/enable": r("auth", "AuthEnable", pb.AuthEnableRequest),
        "/v3/auth/disable": r("auth", "AuthDisable", pb.AuthDisableRequest),
        "/v3/auth/status": r("auth", "AuthStatus", pb.AuthStatusRequest),
        "/v3/auth/authenticate": r("auth", "Authenticate", pb.AuthenticateRequest),
        "/v3/auth/user/add": r("auth", "UserAdd", pb.AuthUserAddRequest),
        "/v3/auth/user/get": r("auth", "UserGet", pb.AuthUserGetRequest),
        "/v3/auth/user/list": r("auth", "UserList", pb.AuthUserListRequest),
        "/v3/auth/user/delete": r("auth", "UserDelete", pb.AuthUserDeleteRequest),
        "/v3/auth/user/changepw": r("auth", "UserChangePassword", pb.AuthUserChangePasswordRequest),
        "/v3/auth/user/grant": r("auth", "UserGrantRole", pb.AuthUserGrantRoleRequest),
        "/v3/auth/user/revoke": r("auth", "UserRevokeRole", pb.AuthUserRevokeRoleRequest),
        "/v3/auth/role/add": r("auth", "RoleAdd", pb.AuthRoleAddRequest),
        "/v3/auth/role/get": r("auth", "RoleGet", pb.AuthRoleGetRequest),
        "/v3/auth/role/list": r("auth", "RoleList", pb.AuthRoleListRequest),
        "/v3/auth/role/delete": r("auth", "RoleDelete", pb.AuthRoleDeleteRequest),
        "/v3/auth/role/grant": r("auth", "RoleGrantPermission", pb.AuthRoleGrantPermissionRequest),
        "/v3/auth/role/revoke": r(
            "auth", "RoleRevokePermission", pb.AuthRoleRevokePermissionRequest
        ),
    }
    # etcd 3.5 also answers three lease calls under /v3/kv/lease/ (rpc.proto's additional
    # bindings, kept for older clients).
    for name in ("revoke", "timetolive", "leases"):
        table[f"/v3/kv/lease/{name}"] = table[f"/v3/lease/{name}"]
    return table


ROUTES = _routes()

# grpc-gateway v1's HTTPStatusFromCode (FailedPrecondition is 400, deliberately not 412).
_HTTP_STATUS = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.CANCELLED: 408,
    grpc.StatusCode.UNKNOWN: 500,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DATA_LOSS: 500,
}


class GatewayAbort(Exception):
    """A service ended the call with a gRPC status (``context.abort``)."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class GatewayContext:
    """What the services use of a gRPC servicer context, for a call that came over HTTP:
    ``invocation_metadata`` (the ``Authorization`` header as ``authorization``),
    ``auth_context`` (the client certificate on ``https``), ``abort``, ``peer`` and
    ``send_initial_metadata`` (nothing to send ahead over HTTP/1.1)."""

    def __init__(
        self,
        metadata: Sequence[tuple[str, str]],
        auth: dict[str, list[bytes]],
        peer: str,
    ) -> None:
        self._metadata = tuple(metadata)
        self._auth = auth
        self._peer = peer

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return self._metadata

    def auth_context(self) -> dict[str, list[bytes]]:
        return self._auth

    def peer(self) -> str:
        return self._peer

    async def abort(
        self, code: grpc.StatusCode, details: str = "", trailing_metadata: Any = ()
    ) -> NoReturn:
        raise GatewayAbort(code, details)

    async def send_initial_metadata(self, initial_metadata: Any) -> None:
        return None


class BadRequest(Exception):
    """The body is not a request of the route's type."""


def to_json(message: Message) -> dict[str, Any]:
    """etcd's gateway marshalling: protobuf field names, zero values left out."""
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


def parse_request(route: Route, data: object) -> Message:
    if not isinstance(data, dict):
        raise BadRequest("json: cannot unmarshal into a request object")
    try:
        return json_format.ParseDict(data, route.request(), ignore_unknown_fields=True)
    except json_format.ParseError as exc:
        raise BadRequest(str(exc)) from None


def decode_body(raw: bytes) -> object:
    """One JSON value; an empty body is an empty request (grpc-gateway reads EOF as none)."""
    if not raw.strip():
        return {}
    try:
        return json.loads(raw)
    except json.JSONDecodeError as exc:
        raise BadRequest(_json_error(exc, raw)) from None
    except UnicodeDecodeError:
        raise BadRequest("invalid UTF-8 in request body") from None


def _json_error(exc: json.JSONDecodeError, raw: bytes) -> str:
    if exc.pos >= len(raw.rstrip()) or exc.msg.startswith("Unterminated string"):
        return "unexpected EOF"  # Go's encoding/json, as etcd answers a truncated body
    return f"invalid character {exc.doc[exc.pos]!r} at offset {exc.pos}: {exc.msg}"


def error_body(code: grpc.StatusCode, message: str) -> dict[str, Any]:
    return {"error": message, "code": code.value[0], "message": message}


def error_response(code: grpc.StatusCode, message: str) -> web.Response:
    return web.json_response(
        error_body(code, message), status=_HTTP_STATUS.get(code, 500), dumps=_dumps
    )


def _dumps(obj: object) -> str:
    return json.dumps(obj, separators=(",", ":"))


def stream_error_chunk(code: grpc.StatusCode, message: str) -> dict[str, Any]:
    """grpc-gateway v1's error object inside a stream."""
    status = _HTTP_STATUS.get(code, 500)
    return {
        "error": {
            "grpc_code": code.value[0],
            "http_code": status,
            "message": message,
            "http_status": _REASONS.get(status, ""),
        }
    }


_REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    408: "Request Timeout",
    409: "Conflict",
    429: "Too Many Requests",
    500: "Internal Server Error",
    501: "Not Implemented",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}


class Gateway:
    """The aiohttp handlers of every route, over one member's services (an object with the
    attributes ``kv``, ``watch``, ``lease``, ``cluster``, ``maintenance`` and ``auth``);
    ``refusal`` checks the client certificate of each call (``--client-crl-file``,
    ``--client-cert-allowed-hostname``)."""

    def __init__(self, services: object, refusal: CertificateRefusal | None = None) -> None:
        self.services = services
        self.refusal = refusal

    def add_routes(self, app: web.Application) -> None:
        for path in ROUTES:
            app.router.add_post(path, self.handle)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        route = ROUTES[request.path]
        try:
            context = self._context(request)
        except GatewayAbort as exc:
            return error_response(exc.code, exc.message)
        method: Callable[..., Any] = getattr(getattr(self.services, route.service), route.method)
        if route.shape == UNARY:
            return await self._unary(request, route, method, context)
        return await self._stream(request, route, method, context)

    def _context(self, request: web.Request) -> Context:
        metadata = []
        token = request.headers.get("Authorization")
        if token:
            metadata.append(("authorization", token))
        auth = _certificate(request)
        if self.refusal is not None:
            why = self.refusal(auth)
            if why is not None:
                log.warning("rejected gateway call from %s: %s", request.remote, why)
                raise GatewayAbort(grpc.StatusCode.UNAUTHENTICATED, why)
        # GatewayContext has every method the services call on a context (a test holds
        # api/ to that list); it is no grpc.aio.ServicerContext subclass.
        return cast(Context, GatewayContext(metadata, auth, f"ipv4:{request.remote}"))

    async def _unary(
        self, request: web.Request, route: Route, method: Callable[..., Any], context: Context
    ) -> web.StreamResponse:
        try:
            req = parse_request(route, decode_body(await request.read()))
        except BadRequest as exc:
            return error_response(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        try:
            resp = await method(req, context)
        except GatewayAbort as exc:
            return error_response(exc.code, exc.message)
        return web.json_response(to_json(resp), dumps=_dumps)

    async def _stream(
        self, request: web.Request, route: Route, method: Callable[..., Any], context: Context
    ) -> web.StreamResponse:
        if route.shape == SERVER_STREAM:
            try:
                req = parse_request(route, decode_body(await request.read()))
            except BadRequest as exc:
                return error_response(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
            responses = method(req, context)
        else:
            requests = _requests(request, route, keep_open=route.method == "Watch")
            responses = method(requests, context)
        out = web.StreamResponse(headers={"Content-Type": "application/json"})
        out.enable_chunked_encoding()
        started = False
        try:
            async for resp in responses:
                if not started:
                    await out.prepare(request)
                    started = True
                await out.write(_dumps({"result": to_json(resp)}).encode() + b"\n")
        except (GatewayAbort, BadRequest) as exc:
            code, message = (
                (exc.code, exc.message)
                if isinstance(exc, GatewayAbort)
                else (grpc.StatusCode.INVALID_ARGUMENT, str(exc))
            )
            if not started:
                out.set_status(_HTTP_STATUS.get(code, 500))
                await out.prepare(request)
                started = True
            await out.write(_dumps(stream_error_chunk(code, message)).encode() + b"\n")
        if not started:
            await out.prepare(request)
        await out.write_eof()
        return out


async def _requests(request: web.Request, route: Route, keep_open: bool) -> AsyncIterator[Any]:
    """The JSON objects of the body, one request each, as they arrive; then, for a watch,
    nothing more until the client goes away (the handler is cancelled)."""
    decoder = json.JSONDecoder()
    buffer = ""
    pending = b""
    async for chunk in request.content.iter_any():
        pending += chunk
        try:
            buffer += pending.decode()
            pending = b""
        except UnicodeDecodeError:
            continue  # a multi-byte character split across chunks
        while True:
            buffer = buffer.lstrip()
            if not buffer:
                break
            try:
                obj, end = decoder.raw_decode(buffer)
            except json.JSONDecodeError as exc:
                if exc.pos >= len(buffer) or exc.msg.startswith("Unterminated string"):
                    break  # the rest of this object is still on its way
                raise BadRequest(_json_error(exc, buffer.encode())) from None
            buffer = buffer[end:]
            yield parse_request(route, obj)
    if buffer.strip() or pending:
        raise BadRequest("unexpected EOF")
    if keep_open:
        await asyncio.get_running_loop().create_future()


def _certificate(request: web.Request) -> dict[str, list[bytes]]:
    """The client certificate of an ``https`` request, as gRPC's auth context names it."""
    transport = request.transport
    sslobj = transport.get_extra_info("ssl_object") if transport is not None else None
    if not isinstance(sslobj, ssl.SSLObject | ssl.SSLSocket):
        return {}
    der = sslobj.getpeercert(binary_form=True)
    if not der:
        return {}
    auth = {"x509_pem_cert": [ssl.DER_cert_to_PEM_cert(der).encode()]}
    subject = (sslobj.getpeercert() or {}).get("subject", ())
    for rdn in subject:
        for attribute in rdn:
            if isinstance(attribute, tuple) and attribute[0] == "commonName":
                auth["x509_common_name"] = [str(attribute[1]).encode()]
    return auth
