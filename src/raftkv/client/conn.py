"""Connection plumbing shared by the etcdctl-compatible client commands, the inspector and the
backup agent.

Owns: the global options (``--endpoints``, ``--dial-timeout``, ``--command-timeout``, ``-w``,
``--hex``, defined in ``raftkv.ctl.client_flags``) and their environment equivalents, dialing the
v3 gRPC API, turning gRPC failures into etcdctl's ``Error: ...`` lines, and etcdctl's exit codes.
Commands raise :class:`CtlError`; the dispatcher in ``raftkv.ctl.cmd_client`` prints it and
returns its exit status.
"""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import grpc

from raftkv.client import DEFAULT_ENDPOINT, ENDPOINT_ENV_VARS

# etcdctl's exit codes (etcdctl/ctlv3/command/error.go).
EXIT_SUCCESS = 0
EXIT_ERROR = 1
EXIT_BAD_CONNECTION = 2
EXIT_INVALID_INPUT = 3
EXIT_BAD_FEATURE = 4
EXIT_INTERRUPTED = 5
EXIT_IO = 6
EXIT_BAD_ARGS = 128

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


class CtlError(Exception):
    """A command failure: printed as ``Error: <message>`` on stderr, process exits with ``code``."""

    def __init__(self, message: str, code: int = EXIT_ERROR) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


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


def split_endpoints(value: str) -> list[str]:
    """``http://a:1,b:2`` → ``["http://a:1", "b:2"]`` (order kept, blanks dropped)."""
    return [e.strip() for e in value.split(",") if e.strip()]


def grpc_target(endpoint: str) -> str:
    """The host:port gRPC dials for an etcd endpoint (``http://`` and ``https://`` stripped)."""
    for prefix in ("http://", "https://", "unix://", "unixs://"):
        if endpoint.startswith(prefix):
            endpoint = endpoint[len(prefix) :]
            break
    return endpoint.rstrip("/")


def default_endpoints() -> str:
    for name in ENDPOINT_ENV_VARS:
        value = os.environ.get(name)
        if value:
            return value
    return DEFAULT_ENDPOINT


@dataclass
class GlobalOptions:
    endpoints: list[str]
    dial_timeout: float
    command_timeout: float
    write_out: str
    hex: bool

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> GlobalOptions:
        raw = args.endpoints if args.endpoints is not None else default_endpoints()
        return cls(
            endpoints=split_endpoints(raw),
            dial_timeout=float(args.dial_timeout),
            command_timeout=float(args.command_timeout),
            write_out=str(args.write_out),
            hex=bool(args.hex),
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


def dial(endpoint: str, timeout: float) -> Stubs | None:
    """Open a channel to one endpoint; None when it does not become ready within ``timeout``."""
    channel = grpc.insecure_channel(
        grpc_target(endpoint),
        options=[
            ("grpc.max_receive_message_length", 2**31 - 1),
            ("grpc.enable_http_proxy", 0),
        ],
    )
    try:
        grpc.channel_ready_future(channel).result(timeout=timeout)
    except grpc.FutureTimeoutError:
        channel.close()
        return None
    return Stubs(channel, endpoint)


def connect(opts: GlobalOptions, endpoints: Sequence[str] | None = None) -> Stubs:
    """Dial the first reachable endpoint; raise etcdctl's deadline error when none answers."""
    for endpoint in endpoints if endpoints is not None else opts.endpoints:
        stubs = dial(endpoint, opts.dial_timeout)
        if stubs is not None:
            return stubs
    raise CtlError("context deadline exceeded", EXIT_ERROR)


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
