"""The key-value commands: ``put``, ``get``, ``del``, ``compaction``, and their renderings.

Owns: turning etcdctl's put/get/del flags into Put/Range/DeleteRange requests (shared with the
``txn`` parser), etcdctl 3.4's validation messages and exit codes for them, and the simple / json /
fields / protobuf renderings of Put, Range, DeleteRange and Txn responses.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Iterable
from typing import Any

from raftkv.client import output as fmt
from raftkv.client.conn import (
    EXIT_BAD_ARGS,
    EXIT_BAD_FEATURE,
    CtlError,
    GlobalOptions,
    call,
    connect,
    parse_go_int,
    parse_lease_id,
)

SORT_TARGETS = {"CREATE": 2, "KEY": 0, "MODIFY": 3, "VALUE": 4, "VERSION": 1}
SORT_ORDERS = {"ASCEND": 1, "DESCEND": 2, "": 0}


def arg_bytes(text: str) -> bytes:
    """A command-line argument as the bytes the user typed."""
    return os.fsencode(text)


def prefix_range_end(key: bytes) -> bytes:
    """The smallest key greater than every key starting with ``key`` (``\\0`` when none is)."""
    end = bytearray(key)
    for i in range(len(end) - 1, -1, -1):
        if end[i] < 0xFF:
            end[i] += 1
            return bytes(end[: i + 1])
    return b"\x00"


def _positional(args: argparse.Namespace, *names: str) -> list[str]:
    vals = [getattr(args, n) for n in names] + list(getattr(args, "extra", []) or [])
    return [v for v in vals if v is not None]


# ---------------------------------------------------------------------- request builders


def build_put(args: argparse.Namespace, stdin_ok: bool) -> Any:
    from raftkv.proto import rpc_pb2

    pos = _positional(args, "key", "value")
    needs = "put command needs 1 argument and input from stdin or 2 arguments"
    if not pos:
        raise CtlError(needs, EXIT_BAD_ARGS)
    if args.ignore_value and len(pos) > 1:
        raise CtlError(
            "put command needs only 1 argument when 'ignore-value' is set", EXIT_BAD_ARGS
        )
    value = b""
    if not args.ignore_value:
        if len(pos) > 1:
            value = arg_bytes(pos[1])
        else:
            value = sys.stdin.buffer.read() if stdin_ok else b""
            if not value:
                raise CtlError(needs, EXIT_BAD_ARGS)
    lease = parse_lease_id(args.lease)
    return rpc_pb2.PutRequest(
        key=arg_bytes(pos[0]),
        value=value,
        lease=lease,
        prev_kv=args.prev_kv,
        ignore_value=args.ignore_value,
        ignore_lease=args.ignore_lease,
    )


def build_range(args: argparse.Namespace) -> Any:
    from raftkv.proto import rpc_pb2

    pos = _positional(args, "key", "range_end")
    if not pos:
        raise CtlError(
            "get command needs one argument as key and an optional argument as range_end",
            EXIT_BAD_ARGS,
        )
    if args.prefix and args.from_key:
        raise CtlError(
            "`--prefix` and `--from-key` cannot be set at the same time, choose one",
            EXIT_BAD_ARGS,
        )
    if args.consistency not in ("l", "s"):
        raise CtlError(f'unknown consistency flag "{args.consistency}"', EXIT_BAD_FEATURE)
    key = arg_bytes(pos[0])
    req: Any = rpc_pb2.RangeRequest(
        limit=args.limit,
        revision=max(args.rev, 0),
        serializable=args.consistency == "s",
        keys_only=args.keys_only,
        count_only=args.count_only,
    )
    if len(pos) > 1:
        if args.prefix or args.from_key:
            raise CtlError(
                "too many arguments, only accept one argument when `--prefix` or "
                "`--from-key` is set",
                EXIT_BAD_ARGS,
            )
        req.range_end = arg_bytes(pos[1])
    order = args.order.upper()
    if order not in SORT_ORDERS:
        raise CtlError(f"bad sort order {args.order}", EXIT_BAD_FEATURE)
    target = args.sort_by.upper()
    if target not in SORT_TARGETS and target != "":
        raise CtlError(f"bad sort target {args.sort_by}", EXIT_BAD_FEATURE)
    req.sort_order = SORT_ORDERS[order]
    req.sort_target = SORT_TARGETS.get(target, 0)
    if req.sort_target == 0 and req.sort_order == 1:
        req.sort_order = 0  # clientv3: ascending by key is the natural order
    _apply_prefix_flags(req, key, args.prefix, args.from_key)
    return req


def _apply_prefix_flags(req: Any, key: bytes, prefix: bool, from_key: bool) -> None:
    if prefix:
        if not key:
            req.key, req.range_end = b"\x00", b"\x00"
        else:
            req.key, req.range_end = key, prefix_range_end(key)
    elif from_key:
        req.key, req.range_end = key or b"\x00", b"\x00"
    else:
        req.key = key


def build_delete(args: argparse.Namespace) -> Any:
    from raftkv.proto import rpc_pb2

    pos = _positional(args, "key", "range_end")
    if not pos or len(pos) > 2:
        raise CtlError(
            "del command needs one argument as key and an optional argument as range_end",
            EXIT_BAD_ARGS,
        )
    if args.prefix and args.from_key:
        raise CtlError(
            "`--prefix` and `--from-key` cannot be set at the same time, choose one",
            EXIT_BAD_ARGS,
        )
    req: Any = rpc_pb2.DeleteRangeRequest(prev_kv=args.prev_kv)
    if len(pos) > 1:
        if args.prefix or args.from_key:
            raise CtlError(
                "too many arguments, only accept one argument when `--prefix` or "
                "`--from-key` is set",
                EXIT_BAD_ARGS,
            )
        req.range_end = arg_bytes(pos[1])
    _apply_prefix_flags(req, arg_bytes(pos[0]), args.prefix, args.from_key)
    return req


# ------------------------------------------------------------------------------- renderers


def _no_table(opts: GlobalOptions) -> None:
    if opts.write_out == "table":
        raise CtlError("table not supported as output format", EXIT_BAD_FEATURE)


def _render(
    resp: Any,
    opts: GlobalOptions,
    out: fmt.Out,
    fields: Callable[[Any], list[str]],
    simple: Callable[[], Iterable[bytes]],
) -> None:
    """etcdctl's output formats of a KV response (no table for these commands)."""
    _no_table(opts)
    if opts.write_out == "json":
        out.line(fmt.go_json_dumps(fmt.go_json_obj(resp)))
    elif opts.write_out == "protobuf":
        out.write(resp.SerializeToString())
    elif opts.write_out == "fields":
        out.line("\n".join(fields(resp)))
    else:
        for line in simple():
            out.line(line)


def render_put(resp: Any, opts: GlobalOptions, out: fmt.Out) -> None:
    _render(resp, opts, out, fields_put, lambda: simple_put(resp, opts))


def render_get(resp: Any, opts: GlobalOptions, out: fmt.Out, value_only: bool = False) -> None:
    _render(resp, opts, out, fields_get, lambda: simple_get(resp, opts, value_only))


def render_del(resp: Any, opts: GlobalOptions, out: fmt.Out) -> None:
    _render(resp, opts, out, fields_del, lambda: simple_del(resp, opts))


def render_txn(resp: Any, opts: GlobalOptions, out: fmt.Out) -> None:
    _no_table(opts)
    if opts.write_out == "json":
        out.line(fmt.go_json_dumps(fmt.go_json_obj(resp)))
    elif opts.write_out == "protobuf":
        out.write(resp.SerializeToString())
    elif opts.write_out == "fields":
        lines = [*fmt.fields_header(resp.header), f'"Succeeded" : {fmt.go_bool(resp.succeeded)}']
        for op in resp.responses:
            kind = op.WhichOneof("response")
            if kind == "response_range":
                lines += fields_get(op.response_range)
            elif kind == "response_put":
                lines += fields_put(op.response_put)
            elif kind == "response_delete_range":
                lines += fields_del(op.response_delete_range)
        out.line("\n".join(lines))
    else:
        out.line(b"SUCCESS" if resp.succeeded else b"FAILURE")
        for op in resp.responses:
            out.line()
            kind = op.WhichOneof("response")
            if kind == "response_range":
                blines = simple_get(op.response_range, opts, False)
            elif kind == "response_put":
                blines = simple_put(op.response_put, opts)
            elif kind == "response_delete_range":
                blines = simple_del(op.response_delete_range, opts)
            else:
                blines = [f"unexpected response {kind}".encode()]
            for line in blines:
                out.line(line)


def simple_put(resp: Any, opts: GlobalOptions) -> list[bytes]:
    lines = [b"OK"]
    if resp.HasField("prev_kv"):
        lines += fmt.kv_lines(resp.prev_kv, opts.hex, False)
    return lines


def simple_get(resp: Any, opts: GlobalOptions, value_only: bool) -> list[bytes]:
    lines: list[bytes] = []
    for kv in resp.kvs:
        lines += fmt.kv_lines(kv, opts.hex, value_only)
    return lines


def simple_del(resp: Any, opts: GlobalOptions) -> list[bytes]:
    lines = [str(resp.deleted).encode()]
    for kv in resp.prev_kvs:
        lines += fmt.kv_lines(kv, opts.hex, False)
    return lines


def fields_put(resp: Any) -> list[str]:
    lines = fmt.fields_header(resp.header)
    if resp.HasField("prev_kv"):
        lines += fmt.fields_kv("Prev", resp.prev_kv)
    return lines


def fields_get(resp: Any) -> list[str]:
    lines = fmt.fields_header(resp.header)
    for kv in resp.kvs:
        lines += fmt.fields_kv("", kv)
    lines += [f'"More" : {fmt.go_bool(resp.more)}', f'"Count" : {resp.count}']
    return lines


def fields_del(resp: Any) -> list[str]:
    lines = [*fmt.fields_header(resp.header), f'"Deleted" : {resp.deleted}']
    for kv in resp.prev_kvs:
        lines += fmt.fields_kv("Prev", kv)
    return lines


# -------------------------------------------------------------------------------- commands


def cmd_put(args: argparse.Namespace, opts: GlobalOptions, out: fmt.Out) -> int:
    req = build_put(args, stdin_ok=True)
    stubs = connect(opts)
    try:
        render_put(call(stubs.kv.Put, req, opts), opts, out)
    finally:
        stubs.close()
    return 0


def cmd_get(args: argparse.Namespace, opts: GlobalOptions, out: fmt.Out) -> int:
    req = build_range(args)
    if args.print_value_only and opts.write_out != "simple":
        raise CtlError("print-value-only is only for `--write-out=simple`", EXIT_BAD_ARGS)
    if args.count_only and opts.write_out != "fields":
        raise CtlError("--count-only is only for `--write-out=fields`", EXIT_BAD_ARGS)
    if args.count_only and args.keys_only:
        raise CtlError("`--keys-only` and `--count-only` cannot be set at the same time", 128)
    stubs = connect(opts)
    try:
        render_get(call(stubs.kv.Range, req, opts), opts, out, args.print_value_only)
    finally:
        stubs.close()
    return 0


def cmd_del(args: argparse.Namespace, opts: GlobalOptions, out: fmt.Out) -> int:
    req = build_delete(args)
    stubs = connect(opts)
    try:
        render_del(call(stubs.kv.DeleteRange, req, opts), opts, out)
    finally:
        stubs.close()
    return 0


def cmd_compaction(args: argparse.Namespace, opts: GlobalOptions, out: fmt.Out) -> int:
    from raftkv.proto import rpc_pb2

    if len(args.revision) != 1:
        raise CtlError("compaction command needs 1 argument", EXIT_BAD_ARGS)
    try:
        rev = parse_go_int(args.revision[0])
    except ValueError as exc:
        raise CtlError(str(exc)) from None
    stubs = connect(opts)
    try:
        call(
            stubs.kv.Compact, rpc_pb2.CompactionRequest(revision=rev, physical=args.physical), opts
        )
    finally:
        stubs.close()
    out.line(f"compacted revision {rev}")
    return 0
