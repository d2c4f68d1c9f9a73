"""``raftkv snapshot save | status | restore``: etcdctl's and etcdutl's snapshot commands.

Owns: streaming ``Maintenance.Snapshot`` into ``<file>.part`` (mode 0600, a progress bar on a
terminal, the SHA-256 trailer verified, fsynced, then renamed and the directory fsynced: an
interrupted or failed save never leaves a file under the final name), the renderings of a
snapshot's status (etcd's ``simple``, ``table``, ``json`` and ``fields``, plus raftkv's own
fields), and the checks of ``restore``'s flags (etcdutl's names and defaults, defined in
``raftkv.ctl.client_flags``).  The work itself is ``raftkv.backup``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

import grpc

from raftkv.client import output as fmt
from raftkv.client.conn import (
    EXIT_BAD_ARGS,
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    CtlError,
    GlobalOptions,
    connect,
    grpc_error_text,
    parse_go_int,
)
from raftkv.client.security import parse_go_bool


def cmd_snapshot_save(args: argparse.Namespace, opts: GlobalOptions, out: fmt.Out) -> int:
    from raftkv.backup.snapshot_file import SnapshotFileError, StreamCheck
    from raftkv.proto import rpc_pb2
    from raftkv.wal.files import fsync_dir

    if len(args.args) != 1:
        raise CtlError("snapshot save expects one argument", EXIT_BAD_ARGS)
    if len(opts.endpoints) != 1:
        raise CtlError(
            "snapshot must be requested to one selected node, not multiple "
            + fmt.go_string_list(opts.endpoints),
            EXIT_INTERRUPTED,  # the code etcdctl 3.4 exits with here
        )
    path = str(args.args[0])
    part = path + ".part"
    progress = _Progress(sys.stderr) if sys.stderr.isatty() else None
    stubs = connect(opts)
    try:
        fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            check = StreamCheck()
            try:
                for chunk in stubs.maintenance.Snapshot(rpc_pb2.SnapshotRequest()):
                    f.write(chunk.blob)
                    check.feed(chunk.blob)
                    if progress is not None:
                        progress.show(check.size, chunk.remaining_bytes)
                check.finish()
            except grpc.RpcError as exc:
                raise CtlError(grpc_error_text(exc)) from None
            except SnapshotFileError as exc:
                raise CtlError(str(exc)) from None
            f.flush()
            os.fsync(f.fileno())
        os.replace(part, path)
        fsync_dir(os.path.dirname(os.path.abspath(path)))
    finally:
        if progress is not None:
            progress.done()
        stubs.close()
        if os.path.exists(part):
            os.unlink(part)
    out.line(f"Snapshot saved at {path}")
    return 0


class _Progress:
    """One self-rewriting line on a terminal: bytes received of the stream's total."""

    def __init__(self, stream: Any) -> None:
        self.stream = stream
        self.shown = False

    def show(self, received: int, remaining: int) -> None:
        total = received + remaining
        pct = 100 * received // total if total else 100
        bar = "#" * (pct // 4)
        self.stream.write(
            f"\r[{bar:<25}] {pct:3d}% {fmt.humanize_bytes(received)} / {fmt.humanize_bytes(total)}"
        )
        self.stream.flush()
        self.shown = True

    def done(self) -> None:
        if self.shown:
            self.stream.write("\n")
            self.stream.flush()


def cmd_snapshot_status(args: argparse.Namespace, opts: GlobalOptions, out: fmt.Out) -> int:
    from raftkv.backup.bbolt import BoltFormatError
    from raftkv.backup.etcd_schema import SnapshotContentError
    from raftkv.backup.snapshot_file import SnapshotFileError, open_snapshot, snapshot_status

    if len(args.args) != 1:
        raise CtlError("snapshot status requires exactly one argument", EXIT_BAD_ARGS)
    path = str(args.args[0])
    if not os.path.exists(path):
        raise CtlError(f"stat {path}: no such file or directory")
    try:
        with open_snapshot(path, skip_hash_check=True) as reader:
            st = snapshot_status(reader)
    except (BoltFormatError, SnapshotFileError, SnapshotContentError) as exc:
        raise CtlError(str(exc)) from None
    rows = [
        f"{st.hash:x}",
        str(st.revision),
        str(st.total_key),
        fmt.humanize_bytes(st.total_size),
    ]
    extra = {
        "format": st.format,
        "raftkvVersion": st.raftkv_version,
        "consistentIndex": st.consistent_index,
        "stateHash": st.state_hash,
        "applyDigest": st.apply_digest,
    }
    if opts.write_out == "json":
        out.line(json.dumps({**st.etcd_fields(), **extra}, separators=(",", ":")))
    elif opts.write_out == "table":
        header = ["hash", "revision", "total keys", "total size", "format", "state hash"]
        for line in fmt.render_table(header, [[*rows, st.format, st.state_hash or "-"]]):
            out.line(line)
    elif opts.write_out == "fields":
        out.line(f'"Hash" : {st.hash}')
        out.line(f'"Revision" : {st.revision}')
        out.line(f'"Keys" : {st.total_key}')
        out.line(f'"Size" : {st.total_size}')
        for name, value in extra.items():
            out.line(f'"{name[0].upper()}{name[1:]}" : {json.dumps(value)}')
    else:
        out.line(", ".join(rows))  # exactly etcdctl's line; -w json/table/fields say more
    return 0


def cmd_snapshot_restore(args: argparse.Namespace, opts: GlobalOptions, out: fmt.Out) -> int:
    from raftkv.backup.bbolt import BoltFormatError
    from raftkv.backup.etcd_schema import SnapshotContentError
    from raftkv.backup.restore import RestoreError, RestoreOptions, restore_snapshot
    from raftkv.backup.snapshot_file import SnapshotFileError
    from raftkv.server.config import ConfigError

    if len(args.args) != 1:
        raise CtlError("snapshot restore requires exactly one argument", EXIT_BAD_ARGS)
    skip = parse_go_bool(str(args.skip_hash_check), '"--skip-hash-check" flag')
    mark = parse_go_bool(str(args.mark_compacted), '"--mark-compacted" flag')
    try:
        bump = parse_go_int(str(args.bump_revision), signed=False)
    except ValueError as exc:
        raise CtlError(
            f'invalid argument "{args.bump_revision}" for "--bump-revision" flag: {exc}',
            EXIT_BAD_ARGS,
        ) from None
    if (bump == 0 and mark) or (bump > 0 and not mark):
        raise CtlError("--mark-compacted required if --revision-bump > 0", EXIT_BAD_ARGS)
    path = str(args.args[0])
    if not os.path.exists(path):
        raise CtlError(f"open {path}: no such file or directory")
    options = RestoreOptions(
        snapshot=path,
        name=args.name,
        data_dir=args.data_dir,
        wal_dir=args.wal_dir,
        initial_cluster=args.initial_cluster,
        initial_cluster_token=args.initial_cluster_token,
        initial_advertise_peer_urls=tuple(
            u.strip() for u in args.initial_advertise_peer_urls.split(",") if u.strip()
        ),
        skip_hash_check=skip,
        bump_revision=bump,
    )
    try:
        result = restore_snapshot(options, log=out.err_line)
    except (
        RestoreError,
        SnapshotFileError,
        SnapshotContentError,
        BoltFormatError,
        ConfigError,
        OSError,
    ) as exc:
        raise CtlError(str(exc), EXIT_ERROR) from None
    s = result.imported
    verified = (
        "matches the state hash the snapshot recorded"
        if result.verified
        else "no state hash recorded (an etcd snapshot)"
    )
    out.line(
        f"Restored member {result.member_id:x} of cluster {result.cluster_id:x} into "
        f"{result.data_dir}: revision {result.state.revision}, "
        f"{s.revisions} key revisions, {s.leases} leases; imported state {verified}"
    )
    return 0
