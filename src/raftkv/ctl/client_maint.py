"""Cluster and maintenance commands: member list, endpoint status/health/hashkv, alarm, defrag,
move-leader, version; and the pieces the membership and downgrade commands
(``raftkv.ctl.client_member``) share with them.

Owns: per-endpoint fan-out (``--cluster`` expands the endpoints to every member's client URLs),
etcdctl 3.4's renderings of these responses (``simple`` lines, ``table`` boxes, ``json`` arrays of
``{"Endpoint":..., "Status":...}`` and friends, ``fields``), etcdctl's ``printerRPC`` (a response
printed as itself in ``json`` and ``protobuf``; ``X not supported as output format`` where a
printer has no form for it), Go's ``strconv.ParseUint(s, 16, 64)`` for member IDs, and the
client-side alarm disarm loop.

``endpoint status`` prints etcd 3.4's columns exactly, then raftkv's versions (read from the
Status call's metadata by ``raftkv.client.status``): ``raftkv version``, ``cluster version``
and ``storage version`` (etcd 3.6's column, at the end so that etcd 3.4's stay in place) in
``table`` and ``simple``; ``"RaftkvVersion"``, ``"ClusterVersion"``, ``"StorageVersion"`` beside
``"Endpoint"`` and ``"Status"`` in ``json`` and after ``"Endpoint"`` in ``fields``.  A plain etcd
sends none of them: they are empty.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any, TypeVar

import grpc

from raftkv import __version__
from raftkv.client import output as fmt
from raftkv.client.conn import (
    EXIT_BAD_ARGS,
    EXIT_BAD_FEATURE,
    EXIT_ERROR,
    CtlError,
    GlobalOptions,
    Stubs,
    call,
    connect,
    dial,
    grpc_error_text,
    parse_go_int,
)
from raftkv.client.status import MemberVersions, status_with_versions
from raftkv.version import ETCD_API_VERSION, Version

T = TypeVar("T")

API_VERSION = Version.parse(ETCD_API_VERSION).short()
"""What ``version`` prints as etcdctl prints its API version: the etcd API raftkv speaks."""


def unsupported_format(opts: GlobalOptions, *formats: str) -> None:
    """etcdctl's printerUnsupported: exit 4 when ``-w`` is one of ``formats``."""
    if opts.write_out in formats:
        raise CtlError(f"{opts.write_out} not supported as output format", EXIT_BAD_FEATURE)


MEMBER_VERSIONS_KEY = "raftkv-member-versions"


def print_rpc(resp: Any, opts: GlobalOptions, out: fmt.Out) -> bool:
    """etcdctl's printerRPC for ``json`` and ``protobuf``: the response itself (Go's JSON of
    the gogoproto struct, or its wire bytes).  True when it printed, False for other formats."""
    if opts.write_out == "json":
        out.line(fmt.go_json_dumps(fmt.go_json_obj(resp)))
        return True
    if opts.write_out == "protobuf":
        out.write(resp.SerializeToString())
        return True
    return False


def parse_hex_uint(text: str) -> int:
    """Go's ``strconv.ParseUint(text, 16, 64)``; ValueError carrying Go's message."""
    quoted = fmt.go_quote(text)
    if not text:
        raise ValueError(f"strconv.ParseUint: parsing {quoted}: invalid syntax")
    value = 0
    for ch in text:
        digit = int(ch, 16) if ch in "0123456789abcdefABCDEF" else -1
        if digit < 0:
            raise ValueError(f"strconv.ParseUint: parsing {quoted}: invalid syntax")
        value = value * 16 + digit
        if value >= 2**64:
            raise ValueError(f"strconv.ParseUint: parsing {quoted}: value out of range")
    return value


def _member_rows(resp: Any) -> list[list[str]]:
    rows = []
    for m in resp.members:
        rows.append(
            [
                f"{m.ID:x}",
                "started" if m.name else "unstarted",
                m.name,
                ",".join(m.peerURLs),
                ",".join(m.clientURLs),
                fmt.go_bool(m.isLearner),
            ]
        )
    return rows


MEMBER_HEADER = ["ID", "Status", "Name", "Peer Addrs", "Client Addrs", "Is Learner"]


def render_member_list(resp: Any, opts: GlobalOptions, out: fmt.Out) -> None:
    if print_rpc(resp, opts, out):
        return
    if opts.write_out == "table":
        out.line("\n".join(fmt.render_table(MEMBER_HEADER, _member_rows(resp))))
    elif opts.write_out == "fields":
        lines = fmt.fields_header(resp.header)
        for m in resp.members:
            lines += [f'"ID" : {m.ID}', f'"Name" : {fmt.go_quote(m.name)}']
            lines += [f'"PeerURL" : {fmt.go_quote(u)}' for u in m.peerURLs]
            lines += [f'"ClientURL" : {fmt.go_quote(u)}' for u in m.clientURLs]
            lines += [f'"IsLearner" : {fmt.go_bool(m.isLearner)}', ""]
        out.line("\n".join(lines))
    else:
        for row in _member_rows(resp):
            out.line(", ".join(row))


def member_list(stubs: Stubs, opts: GlobalOptions) -> Any:
    from raftkv.proto import rpc_pb2

    return call(stubs.cluster.MemberList, rpc_pb2.MemberListRequest(), opts)


def _member_versions(metadata: Any) -> dict[int, str]:
    """raftkv's ``raftkv-member-versions`` MemberList metadata: member ID -> version."""
    for key, value in metadata or ():
        if key == MEMBER_VERSIONS_KEY:
            text = value.decode() if isinstance(value, bytes) else str(value)
            pairs = (item.partition("=") for item in text.split(",") if item)
            return {int(mid, 16): version for mid, _eq, version in pairs if version}
    return {}


def cmd_member_list(args: argparse.Namespace, opts: GlobalOptions, out: fmt.Out) -> int:
    from raftkv.proto import rpc_pb2

    stubs = connect(opts)
    try:
        resp, rpc = call(stubs.cluster.MemberList.with_call, rpc_pb2.MemberListRequest(), opts)
    finally:
        stubs.close()
    versions = _member_versions(rpc.initial_metadata())
    if opts.write_out == "json" and versions:
        # etcd's JSON, plus each member's raftkv version beside its fields (a raftkv server
        # sends them as metadata; a plain etcd sends none and its JSON is unchanged).
        obj = fmt.go_json_obj(resp)
        for m in obj.get("members") or []:
            if int(m["ID"]) in versions:
                m["raftkvVersion"] = versions[int(m["ID"])]
        out.line(fmt.go_json_dumps(obj))
        return 0
    render_member_list(resp, opts, out)
    return 0


def endpoints_for(args: argparse.Namespace, opts: GlobalOptions) -> list[str]:
    """The endpoints a per-endpoint command visits: the flags, or every member with --cluster."""
    if not getattr(args, "cluster", False):
        return list(opts.endpoints)
    stubs = connect(opts)
    try:
        resp = member_list(stubs, opts)
    finally:
        stubs.close()
    return [url for m in resp.members for url in m.clientURLs]


def _on_endpoint(ep: str, opts: GlobalOptions, method: str, service: str, req: Any) -> Any:
    """One RPC against exactly one endpoint; raises grpc.RpcError or CtlError."""
    return _with_endpoint(
        ep,
        opts,
        lambda stubs: getattr(getattr(stubs, service), method)(req, timeout=opts.command_timeout),
    )


def _with_endpoint(ep: str, opts: GlobalOptions, work: Callable[[Stubs], T]) -> T:
    """``work`` on stubs dialed to exactly one endpoint; raises grpc.RpcError or CtlError."""
    stubs = dial(ep, opts.dial_timeout, opts.security)
    if stubs is None:
        raise CtlError("context deadline exceeded")
    try:
        return work(stubs)
    finally:
        stubs.close()


def _err_text(exc: Exception) -> str:
    return grpc_error_text(exc) if isinstance(exc, grpc.RpcError) else str(exc)


STATUS_HEADER = [
    "Endpoint",
    "ID",
    "Version",
    "DB Size",
    "Is Leader",
    "Is Learner",
    "Raft Term",
    "Raft Index",
    "Raft Applied Index",
    "Errors",
]
"""etcdctl 3.4's columns of ``endpoint status``, unchanged."""
VERSION_HEADER = ["raftkv version", "cluster version", "storage version"]
"""raftkv's columns after etcd's (``storage version`` is etcd 3.6's column, moved to the end)."""


def _version_cells(v: MemberVersions) -> list[str]:
    return [v.server, v.cluster, v.storage]


def _version_fields(v: MemberVersions) -> dict[str, str]:
    """raftkv's versions as ``json`` and ``fields`` name them."""
    return {"RaftkvVersion": v.server, "ClusterVersion": v.cluster, "StorageVersion": v.storage}


def cmd_endpoint_status(args: argparse.Namespace, opts: GlobalOptions, out: fmt.Out) -> int:
    results: list[tuple[str, Any, MemberVersions]] = []
    failed = False
    for ep in endpoints_for(args, opts):
        try:
            resp, versions = _with_endpoint(
                ep, opts, lambda s: status_with_versions(s.maintenance, opts.command_timeout)
            )
            results.append((ep, resp, versions))
        except (grpc.RpcError, CtlError) as exc:
            failed = True
            out.err_line(f"Failed to get the status of endpoint {ep} ({_err_text(exc)})")
    unsupported_format(opts, "protobuf")
    rows = [
        [
            ep,
            f"{s.header.member_id:x}",
            s.version,
            fmt.humanize_bytes(s.dbSize),
            fmt.go_bool(s.leader == s.header.member_id),
            fmt.go_bool(s.isLearner),
            str(s.raftTerm),
            str(s.raftIndex),
            str(s.raftAppliedIndex),
            ", ".join(s.errors),
            *_version_cells(v),
        ]
        for ep, s, v in results
    ]
    if opts.write_out == "json":
        out.line(
            fmt.go_json_dumps(
                [
                    {"Endpoint": ep, "Status": fmt.go_json_obj(s), **_version_fields(v)}
                    for ep, s, v in results
                ]
            )
        )
    elif opts.write_out == "table":
        out.line("\n".join(fmt.render_table(STATUS_HEADER + VERSION_HEADER, rows)))
    elif opts.write_out == "fields":
        lines: list[str] = []
        for ep, s, v in results:
            lines += fmt.fields_header(s.header)
            lines += [
                f'"Version" : {fmt.go_quote(s.version)}',
                f'"DBSize" : {s.dbSize}',
                f'"Leader" : {s.leader}',
                f'"IsLearner" : {fmt.go_bool(s.isLearner)}',
                f'"RaftIndex" : {s.raftIndex}',
                f'"RaftTerm" : {s.raftTerm}',
                f'"RaftAppliedIndex" : {s.raftAppliedIndex}',
                f'"Errors" : {fmt.go_string_list(s.errors)}',
                f'"Endpoint" : {fmt.go_quote(ep)}',
            ]
            lines += [
                f'"{name}" : {fmt.go_quote(text)}' for name, text in _version_fields(v).items()
            ]
            lines.append("")
        if lines:
            out.line("\n".join(lines))
    else:
        for row in rows:
            out.line(", ".join(row))
    return EXIT_ERROR if failed else 0


def _probe_health(stubs: Stubs, opts: GlobalOptions) -> tuple[float, str]:
    """etcdctl's probe over one connection: a Range of ``health`` (permission denied counts as
    healthy), timed alone as etcdctl times it, then the alarms; (seconds, error or "")."""
    from raftkv.proto import rpc_pb2

    start = time.monotonic()
    try:
        stubs.kv.Range(rpc_pb2.RangeRequest(key=b"health"), timeout=opts.command_timeout)
    except grpc.RpcError as exc:
        text = grpc_error_text(exc)
        if text != "etcdserver: permission denied":
            return time.monotonic() - start, text
    took = time.monotonic() - start
    try:
        alarms = stubs.maintenance.Alarm(rpc_pb2.AlarmRequest(), timeout=opts.command_timeout)
    except grpc.RpcError:
        return took, ""
    if len(alarms.alarms):
        names = [rpc_pb2.AlarmType.Name(a.alarm) for a in alarms.alarms]
        return took, "Active Alarm(s): " + ", ".join(names)
    return took, ""


def _check_health(ep: str, opts: GlobalOptions) -> dict[str, Any]:
    start = time.monotonic()
    try:
        took, error = _with_endpoint(ep, opts, lambda stubs: _probe_health(stubs, opts))
    except CtlError as exc:
        took, error = time.monotonic() - start, exc.message
    health: dict[str, Any] = {"endpoint": ep, "health": not error, "took": fmt.go_duration(took)}
    if error:
        health["error"] = error
    return health


def cmd_endpoint_health(args: argparse.Namespace, opts: GlobalOptions, out: fmt.Out) -> int:
    results = [_check_health(ep, opts) for ep in endpoints_for(args, opts)]
    unsupported_format(opts, "protobuf")
    if opts.write_out == "json":
        out.line(fmt.go_json_dumps(results))
    elif opts.write_out == "table":
        rows = [
            [h["endpoint"], fmt.go_bool(h["health"]), h["took"], h.get("error", "")]
            for h in results
        ]
        out.line("\n".join(fmt.render_table(["endpoint", "health", "took", "error"], rows)))
    elif opts.write_out == "fields":
        for h in results:
            out.line(f'"Endpoint" : {fmt.go_quote(h["endpoint"])}')
            out.line(f'"Health" : {fmt.go_bool(h["health"])}')
            out.line(f'"Took" : {h["took"]}')
            out.line(f'"Error" : {h.get("error", "")}')
            out.line()
    else:
        for h in results:
            if h["health"]:
                out.err_line(
                    f"{h['endpoint']} is healthy: successfully committed proposal: "
                    f"took = {h['took']}"
                )
            else:
                out.stderr.write(
                    f"{h['endpoint']} is unhealthy: failed to commit proposal: "
                    f"{h.get('error', '')}".encode()
                )
    if not all(h["health"] for h in results):
        raise CtlError("unhealthy cluster")
    return 0


def cmd_endpoint_hashkv(args: argparse.Namespace, opts: GlobalOptions, out: fmt.Out) -> int:
    from raftkv.proto import rpc_pb2

    results: list[tuple[str, Any]] = []
    failed = False
    for ep in endpoints_for(args, opts):
        try:
            req = rpc_pb2.HashKVRequest(revision=args.rev)
            results.append((ep, _on_endpoint(ep, opts, "HashKV", "maintenance", req)))
        except (grpc.RpcError, CtlError) as exc:
            failed = True
            out.err_line(f"Failed to get the hash of endpoint {ep} ({_err_text(exc)})")
    unsupported_format(opts, "protobuf")
    if opts.write_out == "json":
        out.line(
            fmt.go_json_dumps([{"Endpoint": ep, "HashKV": fmt.go_json_obj(h)} for ep, h in results])
        )
    elif opts.write_out == "table":
        rows = [[ep, str(h.hash)] for ep, h in results]
        out.line("\n".join(fmt.render_table(["endpoint", "hash"], rows)))
    elif opts.write_out == "fields":
        for ep, h in results:
            out.line("\n".join(fmt.fields_header(h.header)))
            out.line(f'"Endpoint" : {fmt.go_quote(ep)}')
            out.line(f'"Hash" : {h.hash}')
            out.line()
    else:
        for ep, h in results:
            out.line(f"{ep}, {h.hash}")
    return EXIT_ERROR if failed else 0


def render_alarms(resp: Any, opts: GlobalOptions, out: fmt.Out) -> None:
    unsupported_format(opts, "table")
    if print_rpc(resp, opts, out):
        return
    if opts.write_out == "fields":
        lines = fmt.fields_header(resp.header)
        for a in resp.alarms:
            lines += [f'"MemberID" : {a.memberID}', f'"AlarmType" : {a.alarm}', ""]
        out.line("\n".join(lines))
    else:
        for a in resp.alarms:
            out.line(fmt.proto_text_compact(a))


def cmd_alarm_list(args: argparse.Namespace, opts: GlobalOptions, out: fmt.Out) -> int:
    from raftkv.proto import rpc_pb2

    stubs = connect(opts)
    try:
        resp = call(stubs.maintenance.Alarm, rpc_pb2.AlarmRequest(), opts)
    finally:
        stubs.close()
    render_alarms(resp, opts, out)
    return 0


def cmd_alarm_disarm(args: argparse.Namespace, opts: GlobalOptions, out: fmt.Out) -> int:
    """clientv3's AlarmDisarm for "all": list the alarms, then deactivate each one."""
    from raftkv.proto import rpc_pb2

    stubs = connect(opts)
    combined = rpc_pb2.AlarmResponse()
    try:
        listed = call(stubs.maintenance.Alarm, rpc_pb2.AlarmRequest(), opts)
        for alarm in listed.alarms:
            req = rpc_pb2.AlarmRequest(
                action=rpc_pb2.AlarmRequest.DEACTIVATE, memberID=alarm.memberID, alarm=alarm.alarm
            )
            combined.alarms.extend(call(stubs.maintenance.Alarm, req, opts).alarms)
    finally:
        stubs.close()
    render_alarms(combined, opts, out)
    return 0


def cmd_defrag(args: argparse.Namespace, opts: GlobalOptions, out: fmt.Out) -> int:
    from raftkv.proto import rpc_pb2

    failures = 0
    for ep in endpoints_for(args, opts):
        try:
            _on_endpoint(ep, opts, "Defragment", "maintenance", rpc_pb2.DefragmentRequest())
            out.line(f"Finished defragmenting etcd member[{ep}]")
        except (grpc.RpcError, CtlError) as exc:
            failures += 1
            out.err_line(f"Failed to defragment etcd member[{ep}] ({_err_text(exc)})")
    return EXIT_ERROR if failures else 0


def cmd_move_leader(args: argparse.Namespace, opts: GlobalOptions, out: fmt.Out) -> int:
    from raftkv.proto import rpc_pb2

    if len(args.args) != 1:
        raise CtlError("move-leader command needs 1 argument", EXIT_BAD_ARGS)
    try:
        target = parse_hex_uint(str(args.args[0]))
    except ValueError as exc:
        raise CtlError(str(exc), EXIT_BAD_ARGS) from None
    for ep in opts.endpoints:
        try:
            status = _on_endpoint(ep, opts, "Status", "maintenance", rpc_pb2.StatusRequest())
        except grpc.RpcError as exc:
            raise CtlError(grpc_error_text(exc)) from None
        if status.header.member_id == status.leader:
            try:
                _on_endpoint(
                    ep,
                    opts,
                    "MoveLeader",
                    "maintenance",
                    rpc_pb2.MoveLeaderRequest(targetID=target),
                )
            except grpc.RpcError as exc:
                raise CtlError(grpc_error_text(exc)) from None
            out.line(f"Leadership transferred from {status.leader:x} to {target:x}")
            return 0
    raise CtlError(
        f"no leader endpoint given at {fmt.go_string_list(opts.endpoints)}", EXIT_BAD_ARGS
    )


def cmd_version(args: argparse.Namespace, opts: GlobalOptions, out: fmt.Out) -> int:
    out.line(f"raftkv version: {__version__}")
    out.line(f"API version: {API_VERSION}")
    return 0


def parse_revision_flag(text: str) -> int:
    try:
        return parse_go_int(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
