"""The ``lease`` commands: grant, revoke, timetolive, list, keep-alive.

Owns: etcdctl 3.4's argument checks and messages for leases, the keep-alive loop (one request
every TTL/3 seconds until the lease is gone, as clientv3 does), and the renderings of the lease
responses, whose JSON forms are clientv3's wrapper structs (header fields flattened into the
object, Go field names such as ``"ID"``/``"TTL"`` or the ``"granted-ttl"`` tag).
"""

from __future__ import annotations

import argparse
import queue
import time
from collections.abc import Iterator
from typing import Any

import grpc

from raftkv.client import output as fmt
from raftkv.client.conn import (
    EXIT_BAD_ARGS,
    EXIT_BAD_CONNECTION,
    EXIT_BAD_FEATURE,
    EXIT_ERROR,
    CtlError,
    GlobalOptions,
    call,
    connect,
    grpc_error_text,
    parse_go_int,
    parse_lease_id,
)

LEASE_NOT_FOUND = "etcdserver: requested lease not found"


def _no_table(opts: GlobalOptions) -> None:
    if opts.write_out == "table":
        raise CtlError("table not supported as output format", EXIT_BAD_FEATURE)


def _emit_header_only(
    resp: Any,
    opts: GlobalOptions,
    out: fmt.Out,
    json_obj: dict[str, Any],
    fields: list[str],
    simple: str,
) -> None:
    """Shared shape of grant / keep-alive / timetolive / list output."""
    _no_table(opts)
    if opts.write_out == "json":
        out.line(fmt.go_json_dumps(json_obj))
    elif opts.write_out == "protobuf":
        out.write(resp.header.SerializeToString())
    elif opts.write_out == "fields":
        out.line("\n".join(fields))
    else:
        out.line(simple)


def render_grant(resp: Any, opts: GlobalOptions, out: fmt.Out) -> None:
    obj = {**fmt.header_obj(resp), "ID": resp.ID, "TTL": resp.TTL, "Error": resp.error}
    fields = [*fmt.fields_header(resp.header), f'"ID" : {resp.ID}', f'"TTL" : {resp.TTL}']
    simple = f"lease {resp.ID:016x} granted with TTL({resp.TTL}s)"
    _emit_header_only(resp, opts, out, obj, fields, simple)


def render_keepalive(resp: Any, opts: GlobalOptions, out: fmt.Out) -> None:
    obj = {**fmt.header_obj(resp), "ID": resp.ID, "TTL": resp.TTL}
    fields = [*fmt.fields_header(resp.header), f'"ID" : {resp.ID}', f'"TTL" : {resp.TTL}']
    simple = f"lease {resp.ID:016x} keepalived with TTL({resp.TTL})"
    _emit_header_only(resp, opts, out, obj, fields, simple)


def render_timetolive(resp: Any, keys: bool, opts: GlobalOptions, out: fmt.Out) -> None:
    obj = {
        **fmt.header_obj(resp),
        "id": resp.ID,
        "ttl": resp.TTL,
        "granted-ttl": resp.grantedTTL,
        "keys": [fmt.b64(k) for k in resp.keys] if len(resp.keys) else None,
    }
    fields = [
        *fmt.fields_header(resp.header),
        f'"ID" : {resp.ID}',
        f'"TTL" : {resp.TTL}',
        f'"GrantedTTL" : {resp.grantedTTL}',
        *(f'"Key" : {fmt.go_quote(bytes(k))}' for k in resp.keys),
    ]
    if resp.grantedTTL == 0 and resp.TTL == -1:
        simple = f"lease {resp.ID:016x} already expired"
    else:
        simple = (
            f"lease {resp.ID:016x} granted with TTL({resp.grantedTTL}s), remaining({resp.TTL}s)"
        )
        if keys:
            names = [bytes(k).decode("utf-8", errors="surrogateescape") for k in resp.keys]
            simple += f", attached keys({fmt.go_string_list(names)})"
    _emit_header_only(resp, opts, out, obj, fields, simple)


def render_leases(resp: Any, opts: GlobalOptions, out: fmt.Out) -> None:
    obj = {**fmt.header_obj(resp), "leases": [{"id": item.ID} for item in resp.leases]}
    fields = [*fmt.fields_header(resp.header), *(f'"ID" : {item.ID}' for item in resp.leases)]
    lines = [f"found {len(resp.leases)} leases", *(f"{item.ID:016x}" for item in resp.leases)]
    _emit_header_only(resp, opts, out, obj, fields, "\n".join(lines))


def render_revoke(lease_id: int, resp: Any, opts: GlobalOptions, out: fmt.Out) -> None:
    _no_table(opts)
    if opts.write_out == "json":
        out.line(fmt.go_json_dumps(fmt.go_json_obj(resp)))
    elif opts.write_out == "protobuf":
        # etcdctl 3.4's protobuf printer cannot marshal clientv3.LeaseRevokeResponse.
        text = fmt.proto_text_compact(resp.header)
        raise CtlError(
            f"marshal unsupported for type clientv3.LeaseRevokeResponse ({{{text}}})",
            EXIT_BAD_FEATURE,
        )
    elif opts.write_out == "fields":
        out.line("\n".join(fmt.fields_header(resp.header)))
    else:
        out.line(f"lease {lease_id:016x} revoked")


def _one_arg(args: argparse.Namespace, message: str) -> str:
    if len(args.args) != 1:
        raise CtlError(message, EXIT_BAD_ARGS)
    return str(args.args[0])


def cmd_grant(args: argparse.Namespace, opts: GlobalOptions, out: fmt.Out) -> int:
    from raftkv.proto import rpc_pb2

    text = _one_arg(args, "lease grant command needs TTL argument")
    try:
        ttl = parse_go_int(text)
    except ValueError as exc:
        raise CtlError(f"bad TTL ({exc})", EXIT_BAD_ARGS) from None
    stubs = connect(opts)
    try:
        try:
            resp = stubs.lease.LeaseGrant(
                rpc_pb2.LeaseGrantRequest(TTL=ttl), timeout=opts.command_timeout
            )
        except grpc.RpcError as exc:
            raise CtlError(f"failed to grant lease ({grpc_error_text(exc)})") from None
    finally:
        stubs.close()
    render_grant(resp, opts, out)
    return 0


def cmd_revoke(args: argparse.Namespace, opts: GlobalOptions, out: fmt.Out) -> int:
    from raftkv.proto import rpc_pb2

    lease_id = parse_lease_id(
        _one_arg(args, "lease revoke command needs 1 argument"), "bad lease ID arg"
    )
    stubs = connect(opts)
    try:
        try:
            resp = stubs.lease.LeaseRevoke(
                rpc_pb2.LeaseRevokeRequest(ID=lease_id), timeout=opts.command_timeout
            )
        except grpc.RpcError as exc:
            raise CtlError(f"failed to revoke lease ({grpc_error_text(exc)})") from None
    finally:
        stubs.close()
    render_revoke(lease_id, resp, opts, out)
    return 0


def cmd_timetolive(args: argparse.Namespace, opts: GlobalOptions, out: fmt.Out) -> int:
    from raftkv.proto import rpc_pb2

    text = _one_arg(args, "lease timetolive command needs lease ID as argument")
    lease_id = parse_lease_id(text, "bad lease ID arg")
    stubs = connect(opts)
    try:
        req = rpc_pb2.LeaseTimeToLiveRequest(ID=lease_id, keys=args.keys)
        resp = call(stubs.lease.LeaseTimeToLive, req, opts)
    finally:
        stubs.close()
    render_timetolive(resp, args.keys, opts, out)
    return 0


def cmd_list(args: argparse.Namespace, opts: GlobalOptions, out: fmt.Out) -> int:
    from raftkv.proto import rpc_pb2

    stubs = connect(opts)
    try:
        try:
            resp = stubs.lease.LeaseLeases(
                rpc_pb2.LeaseLeasesRequest(), timeout=opts.command_timeout
            )
        except grpc.RpcError as exc:
            raise CtlError(f"failed to list leases ({grpc_error_text(exc)})") from None
    finally:
        stubs.close()
    render_leases(resp, opts, out)
    return 0


def cmd_keepalive(args: argparse.Namespace, opts: GlobalOptions, out: fmt.Out) -> int:
    from raftkv.proto import rpc_pb2

    text = _one_arg(args, "lease keep-alive command needs lease ID as argument")
    lease_id = parse_lease_id(text, "bad lease ID arg")
    req = rpc_pb2.LeaseKeepAliveRequest(ID=lease_id)
    requests: queue.Queue[Any] = queue.Queue()

    def request_iter() -> Iterator[Any]:
        while (item := requests.get()) is not None:
            yield item

    stubs = connect(opts)
    stream: Any = None
    try:
        requests.put(req)
        timeout = opts.command_timeout if args.once else None
        stream = stubs.lease.LeaseKeepAlive(request_iter(), timeout=timeout)
        for resp in stream:
            if resp.TTL <= 0:
                if args.once:
                    raise CtlError(LEASE_NOT_FOUND, EXIT_BAD_CONNECTION)
                break
            render_keepalive(resp, opts, out)
            out.flush()
            if args.once:
                return 0
            time.sleep(max(resp.TTL / 3.0, 0.5))
            requests.put(req)
        else:
            if args.once:
                raise CtlError(LEASE_NOT_FOUND, EXIT_BAD_CONNECTION)
    except grpc.RpcError as exc:
        raise CtlError(
            grpc_error_text(exc), EXIT_BAD_CONNECTION if args.once else EXIT_ERROR
        ) from None
    finally:
        requests.put(None)
        if stream is not None:
            stream.cancel()
        stubs.close()
    if opts.write_out == "simple":
        out.line(f"lease {lease_id:016x} expired or revoked.")
    return 0
