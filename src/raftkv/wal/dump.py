"""``python -m raftkv.wal dump``: print every record of a WAL, like etcd-dump-logs.

Owns: the read-only inspection command.  It never locks, repairs or modifies
the WAL; it prints one line per record (segment offset, type, size, and the
decoded index/term/...), then the outcome: a clean end, a torn tail that
opening the WAL would repair, or the corruption (file and offset).

Exit status: 0 when the WAL is readable (possibly with a torn tail), 1 on
corruption, 2 on usage errors or when no WAL is found.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import TextIO

from raftkv.raft.codec import (
    CodecError,
    decode_entry,
    decode_hard_state,
    decode_snapshot_metadata,
)
from raftkv.wal.errors import WALCorruptionError
from raftkv.wal.files import list_segments
from raftkv.wal.metadata import decode_metadata
from raftkv.wal.record import Record, RecordType, decode_u32
from raftkv.wal.replay import read_segments


def find_wal_dir(data_dir: str) -> str | None:
    """The WAL directory of a data dir: ``member/wal``, ``wal``, or the dir itself."""
    for candidate in (os.path.join(data_dir, "member", "wal"), os.path.join(data_dir, "wal")):
        if list_segments(candidate):
            return candidate
    return data_dir if list_segments(data_dir) else None


def describe(rec: Record) -> tuple[str, str, str]:
    """(index, term, details) columns for one record."""
    data = rec.data
    try:
        if rec.type == RecordType.ENTRY:
            e = decode_entry(data)
            return str(e.index), str(e.term), f"{e.type.name} data={len(e.data)}B"
        if rec.type == RecordType.HARD_STATE:
            hs = decode_hard_state(data)
            return "", str(hs.term), f"vote={hs.vote} commit={hs.commit}"
        if rec.type == RecordType.SNAPSHOT:
            m = decode_snapshot_metadata(data)
            cs = m.conf_state
            return (
                str(m.index),
                str(m.term),
                f"voters={list(cs.voters)} learners={list(cs.learners)}",
            )
    except CodecError as exc:
        return "", "", f"UNDECODABLE: {exc}"
    if rec.type == RecordType.METADATA:
        ids = decode_metadata(bytes(data))
        if ids is not None:
            return "", "", f"member_id={ids[0]:x} cluster_id={ids[1]:x}"
        return "", "", f"metadata={bytes(data).hex()}"
    crc = decode_u32(data)
    return "", "", f"prev_crc={crc:#010x}" if crc is not None else "bad crc record"


def dump(wal_dir: str, out: TextIO) -> int:
    entries = 0
    fmt = "{:>10}  {:<10}  {:>8}  {:>12}  {:>8}  {}"
    try:
        segments = list_segments(wal_dir)
        for read in read_segments(segments):
            seg = read.segment
            print(
                f"segment {os.path.basename(seg.path)} (seq={seg.seq} index={seg.index})", file=out
            )
            print(fmt.format("offset", "type", "size", "index", "term", "details"), file=out)
            for rec in read.scan.records:
                index, term, details = describe(rec)
                entries += rec.type == RecordType.ENTRY
                print(
                    fmt.format(rec.offset, rec.type.name, len(rec.data), index, term, details),
                    file=out,
                )
            if read.torn is not None:
                print(
                    f"torn tail at offset {read.torn.offset} ({read.torn.reason});"
                    " opening the WAL would truncate it",
                    file=out,
                )
    except WALCorruptionError as exc:
        print(f"CORRUPTION: {exc}", file=out)
        return 1
    print(f"{len(segments)} segment(s), {entries} entry record(s)", file=out)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m raftkv.wal", description="Inspect a raftkv write-ahead log."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p_dump = sub.add_parser("dump", help="print every record of the WAL")
    group = p_dump.add_mutually_exclusive_group(required=True)
    group.add_argument("--data-dir", help="member data directory (or the WAL directory)")
    group.add_argument("--wal-dir", help="the WAL directory itself")
    args = parser.parse_args(argv)
    try:
        wal_dir = args.wal_dir if args.wal_dir else find_wal_dir(args.data_dir)
        found = wal_dir is not None and bool(list_segments(wal_dir))
    except WALCorruptionError as exc:
        print(f"CORRUPTION: {exc}", file=sys.stderr)
        return 1
    if wal_dir is None or not found:
        print(f"no WAL found under {args.data_dir or args.wal_dir}", file=sys.stderr)
        return 2
    return dump(wal_dir, sys.stdout)
