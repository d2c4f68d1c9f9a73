"""Connection plumbing shared by the etcdctl-compatible client commands, the inspector and the
backup agent.

Owns: the global options (``--endpoints``, ``--dial-timeout``, ``--command-timeout``, ``-w``,
``--hex`` and the TLS and auth flags, defined in ``raftkv.ctl.client_flags``) and their
environment equivalents, opening a ready channel to the v3 gRPC API with the TLS and the token
of ``raftkv.client.security`` (``open_channel``, ``dial``, ``connect``), turning gRPC failures
into etcdctl's ``Error: ...`` lines, and etcdctl's exit codes.  Commands raise
:class:`CtlError`; the dispatcher in ``raftkv.ctl.cmd_client`` prints it and returns its exit
status.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc

from raftkv.client.auth import TokenSession, with_token
from raftkv.client.endpoints import default_endpoints as default_endpoints
from raftkv.client.endpoints import grpc_target as grpc_target
from raftkv.client.endpoints import split_endpoints as split_endpoints
from raftkv.client.errors import EXIT_BAD_ARGS as EXIT_BAD_ARGS
from raftkv.client.errors import EXIT_BAD_CONNECTION as EXIT_BAD_CONNECTION
from raftkv.client.errors import EXIT_BAD_FEATURE as EXIT_BAD_FEATURE
from raftkv.client.errors import EXIT_ERROR as EXIT_ERROR
from raftkv.client.errors import EXIT_INTERRUPTED as EXIT_INTERRUPTED
from raftkv.client.errors import EXIT_INVALID_INPUT as EXIT_INVALID_INPUT
from raftkv.client.errors import EXIT_IO as EXIT_IO
from raftkv.client.errors import EXIT_SUCCESS as EXIT_SUCCESS
from raftkv.client.errors import CtlError as CtlError
from raftkv.client.security import ClientSecurity, security_from_args
from raftkv.client.tls import channel_transport, explain_failure

CHANNEL_OPTIONS = (
    ("grpc.max_receive_message_length", 2**31 - 1),
    ("grpc.enable_http_proxy", 0),
)

# gRPC status code → the Go constant name etcdctl prints in "rpc error: code = X desc = Y".
_GO_CODE_NAMES = {
    grpc.StatusCode.CANCELLED: "Canceled",
    grpc.StatusCode.UNKNOWN: "Unknown",
    grpc.StatusCode.INVALID_ARGUMENT: "InvalidArgument",
    grpc.StatusCode.DEADLINE_EXCEEDED: "DeadlineExceeded",
    grpc.StatusCode.NOT_FOUND: "NotFound",
    grpc.StatusCode.ALREADY_EXISTS: "AlreadyExists",
    grpc.StatusCode.PERMISSION_DENIED: "PermissionDenied",
    grpc.StatusCode.RESOURCE_EXHAUSTED: "ResourceExhausted",
    grpc.StatusCode.FAILED_PRECONDITION: "FailedPrecondition",
    grpc.StatusCode.ABORTED: "Aborted",
    grpc.StatusCode.OUT_OF_RANGE: "OutOfRange",
    grpc.StatusCode.UNIMPLEMENTED: "Unimplemented",
    grpc.StatusCode.INTERNAL: "Internal",
    grpc.StatusCode.UNAVAILABLE: "Unavailable",
    grpc.StatusCode.DATA_LOSS: "DataLoss",
    grpc.StatusCode.UNAUTHENTICATED: "Unauthenticated",
}


def grpc_error_text(exc: grpc.RpcError) -> str:
    """The text etcdctl shows for a failed RPC: the server's etcd message when it sent one."""
    code = exc.code() if hasattr(exc, "code") else None
    details = (exc.details() if hasattr(exc, "details") else None) or ""
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return "context deadline exceeded"
    if code == grpc.StatusCode.CANCELLED and not details.startswith("etcdserver:"):
        return "context canceled"
    if details.startswith("etcdserver:"):
        return str(details)
    name = _GO_CODE_NAMES.get(code, str(code)) if code is not None else "Unknown"
    return f"rpc error: code = {name} desc = {details}"


class DialError(CtlError):
    """An endpoint answered but cannot be used: the TLS handshake failed (the message says
    how)."""


class AuthenticationError(DialError):
    """The server refused the user's name or password (etcd's message; exit 2, as etcdctl
    exits when ``clientv3.New`` fails)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, EXIT_BAD_CONNECTION)


@dataclass
class GlobalOptions:
    endpoints: list[str]
    dial_timeout: float
    command_timeout: float
    write_out: str
    hex: bool
    security: ClientSecurity = field(default_factory=ClientSecurity)

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> GlobalOptions:
        """The options the parsed flags and the environment give; may ask for the password
        (``raftkv.client.security``) and raises CtlError for bad TLS or auth flags."""
        raw = args.endpoints if args.endpoints is not None else default_endpoints()
        return cls(
            endpoints=split_endpoints(raw),
            dial_timeout=float(args.dial_timeout),
            command_timeout=float(args.command_timeout),
            write_out=str(args.write_out),
            hex=bool(args.hex),
            security=security_from_args(args),
        )


class Stubs:
    """The v3 API stubs over one channel to one endpoint."""

    def __init__(self, channel: Any, endpoint: str) -> None:
        from raftkv.proto import rpc_pb2_grpc

        self.channel = channel
        self.endpoint = endpoint
        self.kv: Any = rpc_pb2_grpc.KVStub(channel)
        self.watch: Any = rpc_pb2_grpc.WatchStub(channel)
        self.lease: Any = rpc_pb2_grpc.LeaseStub(channel)
        self.cluster: Any = rpc_pb2_grpc.ClusterStub(channel)
        self.maintenance: Any = rpc_pb2_grpc.MaintenanceStub(channel)

    def close(self) -> None:
        self.channel.close()


def open_channel(endpoint: str, timeout: float, security: ClientSecurity) -> grpc.Channel | None:
    """A ready channel to one endpoint, with the TLS and the user's token ``security`` asks
    for (``ClientSecurity()``: plaintext and anonymous).

    None when the endpoint does not become ready within ``timeout``; :class:`DialError` when
    TLS says why not, :class:`AuthenticationError` when the server refuses the user; CtlError
    (exit 128) for unusable TLS files.
    """
    transport = channel_transport(endpoint, security.tls, timeout)
    if transport is None:
        return None
    channel = transport.channel(CHANNEL_OPTIONS)
    try:
        grpc.channel_ready_future(channel).result(timeout=timeout)
    except grpc.FutureTimeoutError:
        channel.close()
        why = explain_failure(endpoint, security.tls, timeout)
        if why is not None:
            raise DialError(why) from None
        return None
    if security.credentials is None:
        return channel
    session = TokenSession(channel, security.credentials, timeout)
    try:
        session.authenticate()
    except grpc.RpcError as exc:
        channel.close()
        raise AuthenticationError(grpc_error_text(exc)) from None
    return with_token(channel, session)


def dial(endpoint: str, timeout: float, security: ClientSecurity) -> Stubs | None:
    """:func:`open_channel` wrapped in the v3 API stubs."""
    channel = open_channel(endpoint, timeout, security)
    return None if channel is None else Stubs(channel, endpoint)


def connect(opts: GlobalOptions, endpoints: Sequence[str] | None = None) -> Stubs:
    """Dial the first endpoint that can be used.  A refused user name or password ends the
    search (the cluster said no); when no endpoint can be used, raise the first TLS failure,
    else etcdctl's deadline error."""
    failure: DialError | None = None
    for endpoint in endpoints if endpoints is not None else opts.endpoints:
        try:
            stubs = dial(endpoint, opts.dial_timeout, opts.security)
        except AuthenticationError:
            raise
        except DialError as exc:
            failure = failure or exc
            continue
        if stubs is not None:
            return stubs
    raise failure or CtlError("context deadline exceeded", EXIT_ERROR)


def call(method: Any, request: Any, opts: GlobalOptions, code: int = EXIT_ERROR) -> Any:
    """Run one unary RPC with the command timeout; failures become :class:`CtlError`."""
    try:
        return method(request, timeout=opts.command_timeout)
    except grpc.RpcError as exc:
        raise CtlError(grpc_error_text(exc), code) from None


def parse_lease_id(text: str, what: str = "bad lease ID") -> int:
    """A lease ID as etcdctl takes it: ``strconv.ParseInt(text, 16, 64)``."""
    if not re.fullmatch(r"[+-]?[0-9a-fA-F]+", text):
        reason = "invalid syntax"
    elif not -(2**63) <= int(text, 16) < 2**63:
        reason = "value out of range"
    else:
        return int(text, 16)
    raise CtlError(
        f'{what} (strconv.ParseInt: parsing "{text}": {reason}), expecting ID in Hex',
        EXIT_BAD_ARGS,
    )


def parse_go_int(text: str, bits: int = 64, signed: bool = True) -> int:
    """``strconv.ParseInt(text, 10, 64)``; raises ValueError carrying Go's message."""
    func = "ParseInt" if signed else "ParseUint"
    if not re.fullmatch(r"[+-]?\d+" if signed else r"\d+", text):
        raise ValueError(f'strconv.{func}: parsing "{text}": invalid syntax')
    value = int(text)
    low, high = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
    if not low <= value <= high:
        raise ValueError(f'strconv.{func}: parsing "{text}": value out of range')
    return value
