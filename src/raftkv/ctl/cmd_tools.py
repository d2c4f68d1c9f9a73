"""Operator tools that read a member's files directly: ``raftkv wal dump``."""

from __future__ import annotations

import argparse
from typing import Any


def register(sub: Any) -> None:
    wal = sub.add_parser("wal", help="inspect a member's write-ahead log (offline)")
    wal_sub = wal.add_subparsers(dest="wal_command", metavar="SUBCOMMAND", required=True)
    dump = wal_sub.add_parser(
        "dump",
        help="print every WAL record (index, term, type, size), like etcd-dump-logs",
        description=(
            "Print every record of a member's WAL without modifying it. Exit status 0 when "
            "the WAL reads (possibly with a torn tail that opening would repair), 1 on "
            "corruption (file and offset are printed), 2 when no WAL is found."
        ),
    )
    group = dump.add_mutually_exclusive_group(required=True)
    group.add_argument("--data-dir", help="the member's data directory")
    group.add_argument("--wal-dir", help="the WAL directory itself")
    dump.set_defaults(func=_wal_dump)


def _wal_dump(args: argparse.Namespace) -> int:
    from raftkv.wal.dump import main as dump_main

    if args.wal_dir:
        return dump_main(["dump", "--wal-dir", args.wal_dir])
    return dump_main(["dump", "--data-dir", args.data_dir])
