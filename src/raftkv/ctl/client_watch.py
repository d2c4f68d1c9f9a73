"""The ``watch`` command: stream events for a key, a range or a prefix until cancelled.

Owns: building WatchCreateRequests from etcdctl's flags, running the bidirectional stream (the
request side stays open until the watch ends; ``hasleader`` metadata as clientv3's
WithRequireLeader sends), hiding the "created" acknowledgement as clientv3 does, the renderings of
watch responses (clientv3.WatchResponse's JSON: ``Header``/``Events``/``CompactRevision``/
``Canceled``/``Created``), and the interactive ``-i`` mode that reads ``watch ...`` lines.
"""

from __future__ import annotations

import argparse
import sys
import threading
from collections.abc import Iterator
from typing import Any

import grpc

from raftkv.client import output as fmt
from raftkv.client.conn import (
    EXIT_BAD_ARGS,
    EXIT_INTERRUPTED,
    EXIT_INVALID_INPUT,
    CtlError,
    GlobalOptions,
    Stubs,
    connect,
    grpc_error_text,
)
from raftkv.ctl.client_flags import add_watch_flags
from raftkv.ctl.client_kv import arg_bytes, prefix_range_end

COMPACTED = "etcdserver: mvcc: required revision has been compacted"
EVENT_TYPES = {0: "PUT", 1: "DELETE"}


def build_watch(args: argparse.Namespace) -> Any:
    from raftkv.proto import rpc_pb2

    if len(args.args) < 1 or len(args.args) > 2:
        raise CtlError("bad number of arguments", EXIT_BAD_ARGS)
    key = arg_bytes(args.args[0])
    create = rpc_pb2.WatchCreateRequest(key=key, start_revision=args.rev, prev_kv=args.prev_kv)
    if len(args.args) == 2:
        if args.prefix:
            raise CtlError("`range_end` and `--prefix` are mutually exclusive", EXIT_BAD_ARGS)
        create.range_end = arg_bytes(args.args[1])
    if args.prefix:
        if key:
            create.range_end = prefix_range_end(key)
        else:
            create.key, create.range_end = b"\x00", b"\x00"
    return rpc_pb2.WatchRequest(create_request=create)


def watch_error_text(resp: Any) -> str:
    """clientv3's WatchResponse.Err() text for a cancelled watch."""
    if resp.compact_revision:
        return COMPACTED
    if resp.cancel_reason:
        return str(resp.cancel_reason)
    return "<nil>"


def render_watch(resp: Any, opts: GlobalOptions, out: fmt.Out) -> None:
    from raftkv.proto import rpc_pb2

    w = opts.write_out
    if w == "table":
        raise CtlError("table not supported as output format", 4)
    if w == "json":
        obj = {
            "Header": fmt.go_json_obj(resp.header),
            "Events": [fmt.go_json_obj(e) for e in resp.events],
            "CompactRevision": resp.compact_revision,
            "Canceled": resp.canceled,
            "Created": resp.created,
        }
        out.line(fmt.go_json_dumps(obj))
    elif w == "protobuf":
        msg = rpc_pb2.WatchResponse(
            header=resp.header,
            events=resp.events,
            compact_revision=resp.compact_revision,
            canceled=resp.canceled,
            created=resp.created,
        )
        out.write(msg.SerializeToString())
    elif w == "fields":
        lines = fmt.fields_header(resp.header)
        for e in resp.events:
            lines.append(f'"Type" : {EVENT_TYPES.get(e.type, str(e.type))}')
            if e.HasField("prev_kv"):
                lines += fmt.fields_kv("Prev", e.prev_kv)
            lines += fmt.fields_kv("", e.kv)
        out.line("\n".join(lines))
    else:
        for e in resp.events:
            out.line(EVENT_TYPES.get(e.type, str(e.type)))
            if e.HasField("prev_kv"):
                for line in fmt.kv_lines(e.prev_kv, opts.hex, False):
                    out.line(line)
            for line in fmt.kv_lines(e.kv, opts.hex, False):
                out.line(line)
    out.flush()


class _Watch:
    """One watch stream; ``run`` prints responses until the server cancels the watch."""

    def __init__(self, stubs: Stubs, request: Any) -> None:
        self.stubs = stubs
        self.request = request
        self.done = threading.Event()
        self.stream: Any = None

    def _requests(self) -> Iterator[Any]:
        yield self.request
        self.done.wait()

    def run(self, opts: GlobalOptions, out: fmt.Out) -> None:
        self.stream = self.stubs.watch.Watch(self._requests(), metadata=(("hasleader", "true"),))
        try:
            for resp in self.stream:
                if resp.created and not resp.events and not resp.canceled:
                    continue
                if resp.canceled:
                    out.err_line(f"watch was canceled ({watch_error_text(resp)})")
                render_watch(resp, opts, out)
                if resp.canceled:
                    return
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.CANCELLED:
                out.err_line(f"watch was canceled ({grpc_error_text(exc)})")
        finally:
            self.done.set()

    def close(self) -> None:
        self.done.set()
        if self.stream is not None:
            self.stream.cancel()


def cmd_watch(args: argparse.Namespace, opts: GlobalOptions, out: fmt.Out) -> int:
    if args.interactive:
        return _interactive(opts, out)
    request = build_watch(args)
    stubs = connect(opts)
    watch = _Watch(stubs, request)
    try:
        watch.run(opts, out)
    finally:
        watch.close()
        stubs.close()
    raise CtlError("watch is canceled by the server", EXIT_INTERRUPTED)


def _interactive(opts: GlobalOptions, out: fmt.Out) -> int:
    from raftkv.ctl.client_txn import argify

    parser = argparse.ArgumentParser(prog="watch", add_help=False, exit_on_error=False)
    add_watch_flags(parser)
    stubs = connect(opts)
    watches: list[_Watch] = []
    try:
        while True:
            raw = sys.stdin.buffer.readline()
            if not raw.endswith(b"\n"):
                raise CtlError("Error reading watch request line: EOF", EXIT_INVALID_INPUT)
            line = raw.decode("utf-8", errors="surrogateescape").strip()
            words = argify(line)
            if not words:
                continue
            if words[0] != "watch":
                out.err_line(f"Invalid command {line} (only support watch)")
                out.flush()
                continue
            try:
                ns, rest = parser.parse_known_args(words[1:])
                if rest:
                    raise argparse.ArgumentError(None, " ".join(rest))
                request = build_watch(ns)
            except (argparse.ArgumentError, CtlError) as exc:
                out.err_line(f"Invalid command {line} ({exc})")
                out.flush()
                continue
            watch = _Watch(stubs, request)
            watches.append(watch)
            threading.Thread(target=watch.run, args=(opts, out), daemon=True).start()
    finally:
        for w in watches:
            w.close()
        stubs.close()
