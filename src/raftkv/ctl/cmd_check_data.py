"""``raftkv check data --data-dir D``: offline verification of one stopped member's files.

Owns: the flags of ``check data`` and the two renderings of its report: ``simple`` (one line
per check, then one line per finding, then the verdict; plain and greppable like
``etcdutl snapshot status``) and ``json`` (one document with every check and finding).  The
verification itself is ``raftkv.check.data``, imported only when the command runs.

Exit status: 0 consistent, 1 corruption or divergence found, 2 could not tell (member running,
no rebuild base, unreadable directory, bad command line).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from raftkv.guard.check_report import DataReport

_DESCRIPTION = (
    "Verify the data directory of a STOPPED member without modifying it: every WAL segment "
    "decodes and its CRC chain and metadata hold (a torn tail is a warning: the member repairs "
    "it on start); every snapshot file's magic, version and CRC; every value of every backend "
    "bucket passes its CRC32C and the meta records decode; then the state is rebuilt from a "
    "base plus the WAL's committed entries after it, up to the backend's consistent index, by "
    "the member's own applier in a temporary directory: the base is the bootstrap snapshot, or "
    "a member/snap/*.snap.db backend copy (the one a restore keeps at index 1, or the backend a "
    "member received with a Raft snapshot, kept once installed); the result is "
    "compared with the backend: state hash parts (revision, keys, leases, members, alarms), "
    "apply digest chain head and term, naming the first Raft index whose effects differ when "
    "the key history tells it. Each finding names the file and the byte offset (WAL, snapshot) "
    "or the bucket and key (LMDB). Exit status 0 when everything is consistent, 1 when "
    "corruption or divergence is found, 2 when it could not tell (the member is running, no "
    "base to rebuild from, unreadable directory)."
)


def add_data_parser(check_sub: Any) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = check_sub.add_parser(
        "data",
        help="verify a stopped member's WAL, snapshots and backend, and rebuild its state",
        description=_DESCRIPTION,
    )
    p.add_argument("--data-dir", required=True, help="the member's --data-dir")
    p.add_argument("--wal-dir", default="", help="the member's --wal-dir, if it ran with one")
    p.add_argument("-w", "--write-out", choices=("simple", "json"), default="simple")
    p.add_argument(
        "--heartbeat-interval",
        type=int,
        default=100,
        metavar="MS",
        help="the member's --heartbeat-interval (sets the minimum lease TTL), default 100",
    )
    p.add_argument(
        "--election-timeout",
        type=int,
        default=1000,
        metavar="MS",
        help="the member's --election-timeout (sets the minimum lease TTL), default 1000",
    )
    p.add_argument(
        "--skip-rebuild",
        action="store_true",
        help="only verify the records of the files, do not rebuild and compare the state",
    )
    p.add_argument(
        "--work-dir",
        default=None,
        help="where the temporary rebuild directory goes (default: the system temp dir)",
    )
    p.set_defaults(func=run_data)
    return p


def render_simple(report: DataReport) -> str:
    lines = [f"data-dir  {report.data_dir}"]
    for c in report.checks:
        lines.append(f"{c.name:<9} {c.status:<9} {c.summary}".rstrip())
    for name, f in report.findings:
        lines.append(f"{f.severity:<9} {name:<9} {f.where()}: {f.message}")
    lines.append(f"verdict   {report.verdict} (exit {report.exit_code})")
    return "\n".join(lines)


def render(report: DataReport, fmt: str) -> str:
    if fmt == "json":
        return json.dumps(report.to_dict(), indent=2, sort_keys=False)
    return render_simple(report)


def run_data(args: argparse.Namespace) -> int:
    from raftkv import failpoints
    from raftkv.check.data import check_data, lease_floor
    from raftkv.guard.check_report import EXIT_UNKNOWN

    if args.heartbeat_interval <= 0 or args.election_timeout <= 0:
        sys.stderr.write("Error: --heartbeat-interval and --election-timeout must be positive\n")
        return EXIT_UNKNOWN
    failpoints.configure(None)  # a member's RAFTKV_FAILPOINTS must not steer the rebuild
    report = check_data(
        args.data_dir,
        lease_min_ttl=lease_floor(args.heartbeat_interval, args.election_timeout),
        work_dir=args.work_dir,
        rebuild=not args.skip_rebuild,
        wal_dir=args.wal_dir,
    )
    sys.stdout.write(render(report, args.write_out) + "\n")
    sys.stdout.flush()
    return report.exit_code
