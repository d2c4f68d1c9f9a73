"""WAL append benchmark: entries/s with one fdatasync per save, at several batch sizes.

Usage: PYTHONPATH=src python bench/wal_bench.py [--seconds 2] [--entry-size 256]
                                                 [--batches 1,16,256] [--dir DIR]

For each batch size it appends batches of ``--entry-size`` byte entries for
``--seconds`` seconds, once with ``sync=True`` (one write + one fdatasync per
save: the group commit of a Raft Ready) and once with ``sync=False`` (the CPU
cost of framing, CRC and the write call alone), and prints a table.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass

from raftkv.raft.types import Entry, HardState
from raftkv.wal import WAL, encode_metadata


@dataclass
class Result:
    batch: int
    sync: bool
    saves: int
    entries: int
    seconds: float
    segments: int

    @property
    def entries_per_s(self) -> float:
        return self.entries / self.seconds

    @property
    def saves_per_s(self) -> float:
        return self.saves / self.seconds

    @property
    def mib_per_s(self) -> float:
        return self.entries_per_s * ENTRY_SIZE / (1 << 20)


ENTRY_SIZE = 256


def run(root: str, batch: int, sync: bool, seconds: float, segment_size: int) -> Result:
    d = os.path.join(root, f"wal-{batch}-{int(sync)}")
    payload = os.urandom(ENTRY_SIZE)
    with WAL.create(d, encode_metadata(1, 1), segment_size=segment_size) as w:
        index = 0
        saves = 0
        start = time.perf_counter()
        deadline = start + seconds
        while True:
            entries = [Entry(1, index + k, data=payload) for k in range(1, batch + 1)]
            index += batch
            w.save(HardState(1, 1, index), entries, sync=sync)
            saves += 1
            now = time.perf_counter()
            if now >= deadline:
                break
        elapsed = now - start
        segments = len(w.segments)
    shutil.rmtree(d)
    return Result(batch, sync, saves, index, elapsed, segments)


def main(argv: Sequence[str] | None = None) -> int:
    global ENTRY_SIZE
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--entry-size", type=int, default=256)
    parser.add_argument("--batches", default="1,16,256")
    parser.add_argument("--segment-size", type=int, default=64 * 1024 * 1024)
    parser.add_argument("--dir", default=None, help="where to write (default: a temp dir)")
    args = parser.parse_args(argv)
    ENTRY_SIZE = args.entry_size
    root = tempfile.mkdtemp(prefix="wal-bench-", dir=args.dir)
    try:
        print(
            f"WAL append benchmark: {ENTRY_SIZE} B entries, {args.seconds:.1f} s per row,"
            f" segment size {args.segment_size >> 20} MiB, dir {root}"
        )
        header = f"{'batch':>6} {'sync':>5} {'saves/s':>10} {'entries/s':>11} {'MiB/s':>8} {'ms/save':>8} {'segs':>5}"
        print(header)
        print("-" * len(header))
        for batch in (int(b) for b in args.batches.split(",")):
            for sync in (True, False):
                r = run(root, batch, sync, args.seconds, args.segment_size)
                print(
                    f"{r.batch:>6} {'yes' if sync else 'no':>5} {r.saves_per_s:>10.0f}"
                    f" {r.entries_per_s:>11.0f} {r.mib_per_s:>8.1f}"
                    f" {1000 / r.saves_per_s:>8.3f} {r.segments:>5}"
                )
                sys.stdout.flush()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
