"""``raftkv backup run | list | verify | restore``: the scheduled, verified backup agent.

Owns the flags and the rendering of these commands; the work is ``raftkv.backup`` (agent,
pitr, manifest), imported only when a command runs.  Exit status: 0 success, 1 a failure
(``verify``: any backup that does not verify; ``run --once``: the backup did not verify),
128 a bad command line.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from typing import Any

from raftkv.client import quiet_grpc_logs
from raftkv.ctl.client_flags import add_security_flags, parse_duration

_RUN_HELP = (
    "Run the backup agent: a full etcd-format snapshot (zstd-compressed, *.snap.zst) every "
    "--full-interval or on the cron --schedule, taken from a healthy member (never one under "
    "a CORRUPT alarm; followers first; retried with backoff on the next member), and between "
    "fulls a delta every --delta-interval with every change from the watch stream and the "
    "lease table. Every backup is written as <name>.part, fsynced and renamed, then restored "
    "with the real restore code and compared with a live member's HashKV; only verified "
    "backups count, failed ones are moved to failed/. DIR/manifest.json records them all; "
    "--keep-last and --retention exponential prune old ones (never the newest verified full "
    "and its deltas). --once takes one full backup and exits (for cron). Members are reached "
    "with etcdctl's TLS and authentication flags and variables (--cacert, --cert, --key, "
    "--insecure-skip-tls-verify, --user, --password; ETCDCTL_CACERT, ...)."
)
_LIST_HELP = "List the backups a manifest records (id, kind, revisions, verified, size, file)"
_VERIFY_HELP = (
    "Re-verify every verified backup of DIR offline: SHA-256 of each file, the zstd frame, "
    "every delta record's CRC32C, a restore of each full and of each full+deltas replay, and "
    "the restored state compared with the one recorded when the backup was taken. Exit 1 "
    "naming each file that fails."
)
_RESTORE_HELP = (
    "Point-in-time restore: the newest verified full backup at or before the point, its "
    "deltas replayed to exactly --to-revision R (or the last revision received by --to-time "
    "T), then restored into a new member's data directory as 'raftkv snapshot restore' does "
    "(same flags; run once per member)."
)


def _dest_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--s3-endpoint-url",
        default=os.environ.get("RAFTKV_BACKUP_S3_ENDPOINT_URL", ""),
        help="endpoint of an S3-compatible service for s3:// destinations (credentials from "
        "the usual AWS_* variables)",
    )


def register(subparsers: Any) -> None:
    backup = subparsers.add_parser(
        "backup",
        help="scheduled, verified full and incremental backups; point-in-time restore",
        description="Scheduled, verified backups (run), their manifest (list), offline "
        "re-verification (verify) and point-in-time restore (restore). DIR is a directory or "
        "s3://bucket/prefix.",
    )
    backup.set_defaults(func=lambda _args, _p=backup: _p.print_help() or 2)
    sub = backup.add_subparsers(dest="backup_command", metavar="COMMAND")

    p = sub.add_parser("run", help="run the backup agent", description=_RUN_HELP)
    p.add_argument("--endpoints", default=None, help="gRPC endpoints, comma separated")
    p.add_argument("--dir", default="", help="backup directory")
    p.add_argument("--dest", default="", help="destination: a directory or s3://bucket/prefix")
    p.add_argument("--once", action="store_true", help="one full backup, then exit")
    p.add_argument("--full-interval", type=parse_duration, default=1800.0, help="default 30m")
    p.add_argument("--schedule", default="", help="cron expression for full backups")
    p.add_argument(
        "--delta-interval", type=parse_duration, default=10.0, help="default 10s; 0: no deltas"
    )
    p.add_argument("--keep-last", type=int, default=0, help="keep the N newest full backups")
    p.add_argument(
        "--retention",
        choices=("none", "exponential"),
        default="none",
        help="exponential: hourly for a day, daily for a week, weekly for a month",
    )
    p.add_argument(
        "--listen-metrics-urls", default="", help="serve /metrics, e.g. http://127.0.0.1:9090"
    )
    p.add_argument("--work-dir", default="", help="scratch space for verification")
    p.add_argument("--dial-timeout", type=parse_duration, default=2.0)
    p.add_argument("--command-timeout", type=parse_duration, default=30.0)
    p.add_argument("--log-format", choices=("text", "json"), default="text")
    add_security_flags(p.add_argument_group("TLS and authentication (etcdctl's flags)"))
    _dest_flags(p)
    p.set_defaults(func=_run)

    p = sub.add_parser("list", help=_LIST_HELP, description=_LIST_HELP)
    p.add_argument("dir", metavar="DIR")
    p.add_argument("-w", "--write-out", choices=("simple", "json", "table"), default="simple")
    _dest_flags(p)
    p.set_defaults(func=_list)

    p = sub.add_parser("verify", help="re-verify every backup", description=_VERIFY_HELP)
    p.add_argument("dir", metavar="DIR")
    _dest_flags(p)
    p.set_defaults(func=_verify)

    from raftkv.ctl.client_flags import add_restore_flags

    p = sub.add_parser("restore", help="point-in-time restore", description=_RESTORE_HELP)
    p.add_argument("dir", metavar="DIR")
    point = p.add_mutually_exclusive_group(required=True)
    point.add_argument("--to-revision", type=int, default=None, help="restore exactly revision R")
    point.add_argument(
        "--to-time", default=None, help="RFC 3339 time (or Unix seconds) to restore to"
    )
    add_restore_flags(p)
    _dest_flags(p)
    p.set_defaults(func=_restore)


def _err_line(text: str) -> None:
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


def _err(text: str) -> None:
    sys.stderr.write(f"Error: {text}\n")
    sys.stderr.flush()


def _run(args: argparse.Namespace) -> int:
    quiet_grpc_logs()
    from raftkv.backup.agent import Agent, AgentOptions, Logger
    from raftkv.backup.destination import DestinationError
    from raftkv.backup.manifest import ManifestError
    from raftkv.client.conn import CtlError, default_endpoints, split_endpoints
    from raftkv.client.security import security_from_args
    from raftkv.client.tls import load_material

    dest = args.dest or args.dir
    if not dest or (args.dest and args.dir):
        _err("backup run needs one of --dir DIR or --dest DIR|s3://bucket/prefix")
        return 128
    if args.schedule:
        croniter: Any = __import__("croniter")
        if not croniter.croniter.is_valid(args.schedule):
            _err(f"invalid cron --schedule {args.schedule!r}")
            return 128
    try:
        security = security_from_args(args)
        load_material(security.tls)
    except CtlError as exc:
        _err(exc.message)
        return exc.code
    opts = AgentOptions(
        endpoints=split_endpoints(args.endpoints or default_endpoints()),
        dest=dest,
        s3_endpoint_url=args.s3_endpoint_url,
        full_interval=float(args.full_interval),
        schedule=args.schedule,
        delta_interval=float(args.delta_interval),
        keep_last=int(args.keep_last),
        exponential=args.retention == "exponential",
        once=bool(args.once),
        dial_timeout=float(args.dial_timeout),
        command_timeout=float(args.command_timeout),
        metrics_url=args.listen_metrics_urls,
        work_dir=args.work_dir,
        log_format=args.log_format,
        security=security,
    )
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda _s, _f: stop.set())
    try:
        agent = Agent(opts, Logger(opts.log_format), stop)
        return agent.run()
    except (DestinationError, ManifestError, OSError) as exc:
        _err(str(exc))
        return 1


def _open(args: argparse.Namespace) -> Any:
    from raftkv.backup.destination import open_destination

    return open_destination(args.dir, s3_endpoint_url=args.s3_endpoint_url, create=False)


def _list(args: argparse.Namespace) -> int:
    from raftkv.backup.destination import DestinationError
    from raftkv.backup.manifest import ManifestError
    from raftkv.client.output import humanize_bytes, render_table

    try:
        manifest = _open(args).read_manifest()
    except (DestinationError, ManifestError, OSError) as exc:
        _err(str(exc))
        return 1
    if args.write_out == "json":
        print(json.dumps([e.to_dict() for e in manifest.backups], indent=1))
        return 0
    rows = []
    for e in manifest.backups:
        span = f"{e.to_revision}" if e.kind == "full" else f"{e.from_revision + 1}-{e.to_revision}"
        rows.append(
            [
                e.id,
                e.kind,
                span,
                "yes" if e.verified else "FAILED",
                humanize_bytes(e.size_compressed),
                e.cut_time,
                e.file,
            ]
        )
    if args.write_out == "table":
        header = ["id", "kind", "revisions", "verified", "size", "cut time", "file"]
        for line in render_table(header, rows):
            print(line)
    else:
        for row in rows:
            print(", ".join(row))
    return 0


def _verify(args: argparse.Namespace) -> int:
    from raftkv.backup.destination import DestinationError
    from raftkv.backup.manifest import ManifestError
    from raftkv.backup.pitr import verify_destination

    try:
        dest = _open(args)
        manifest = dest.read_manifest()
        failed = 0
        for checked in verify_destination(dest, manifest):
            e = checked.entry
            status = "OK" if checked.ok else "FAILED"
            print(f"{status} {e.kind} {e.file} revision {e.to_revision}: {checked.detail}")
            failed += 0 if checked.ok else 1
    except (DestinationError, ManifestError, OSError) as exc:
        _err(str(exc))
        return 1
    skipped = [e for e in manifest.backups if not e.verified]
    for e in skipped:
        print(f"SKIPPED {e.kind} {e.file}: failed verification when taken ({e.verify_error})")
    if not manifest.fulls():
        _err(f"{dest.describe()}: no verified backup to verify")
        return 1
    if failed:
        _err(f"{failed} backup(s) failed verification")
        return 1
    return 0


def _restore(args: argparse.Namespace) -> int:
    from raftkv.backup.destination import DestinationError
    from raftkv.backup.manifest import ManifestError, parse_time
    from raftkv.backup.pitr import PitrError, restore_point
    from raftkv.backup.restore import RestoreOptions
    from raftkv.backup.verify import RESTORE_ERRORS, BackupFileError

    to_time = None
    if args.to_time is not None:
        try:
            to_time = parse_time(args.to_time)
        except ValueError:
            _err(f"--to-time {args.to_time!r}: not an RFC 3339 time or Unix seconds")
            return 128
    options = RestoreOptions(
        snapshot="",
        name=args.name,
        data_dir=args.data_dir,
        initial_cluster=args.initial_cluster,
        initial_cluster_token=args.initial_cluster_token,
        initial_advertise_peer_urls=tuple(
            u.strip() for u in args.initial_advertise_peer_urls.split(",") if u.strip()
        ),
        skip_hash_check=str(args.skip_hash_check).lower() in ("true", "1"),
    )
    try:
        dest = _open(args)
        result, point, plan = restore_point(
            dest,
            dest.read_manifest(),
            options,
            to_revision=args.to_revision,
            to_time=to_time,
            log=_err_line,
        )
    except (PitrError, DestinationError, ManifestError, BackupFileError, *RESTORE_ERRORS) as exc:
        _err(str(exc))
        return 1
    print(
        f"Restored member {result.member_id:x} of cluster {result.cluster_id:x} into "
        f"{result.data_dir}: revision {point.revision} from full backup {plan.full.id} and "
        f"{point.deltas} delta(s), {result.imported.revisions} key revisions, "
        f"{result.imported.leases} leases"
    )
    return 0
