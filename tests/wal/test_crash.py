"""Crash tests with real processes: SIGKILL a writer at random points, reopen.

Every index the writer acknowledged (printed after ``save`` returned) must be
in the reopened WAL with its exact content, nothing partial may appear, torn
tails are repaired, and a flipped byte inside a closed segment is reported
with its file and offset.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from raftkv.raft.types import Entry
from raftkv.wal import WAL, WALCorruptionError, decode_metadata
from raftkv.wal.files import list_segments
from raftkv.wal.record import RecordType, scan_segment

from .crash_writer import payload

WRITER = Path(__file__).with_name("crash_writer.py")
SRC = Path(__file__).resolve().parents[2] / "src"
SEG = 16 * 1024
ITERATIONS = 6


def run_writer(
    d: Path, seed: int, tear_after: int, kill_after: int, rng: random.Random
) -> tuple[int, list[int]]:
    """Start the writer, SIGKILL it after ``kill_after`` acks (or let it tear
    itself); returns (index it started from, every acknowledged index)."""
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    proc = subprocess.Popen(
        [sys.executable, str(WRITER), str(d), str(seed), str(tear_after), str(SEG)],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stdout is not None
    try:
        ready = proc.stdout.readline().split()
        assert ready[0] == "ready", ready
        acks: list[int] = []
        if tear_after < 0:
            while len(acks) < kill_after:
                acks.append(int(proc.stdout.readline()))
            time.sleep(rng.random() * 0.005)
            proc.send_signal(signal.SIGKILL)
        # lines flushed before the process died were acknowledged too
        acks.extend(int(line) for line in proc.stdout.read().split())
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
    return int(ready[1]), acks


def check_wal(d: Path, must_have: int) -> int:
    with WAL.open(str(d), segment_size=SEG) as w:
        md, hs, entries = w.read_all()
    assert decode_metadata(md) == (7, 42)
    assert len(entries) >= must_have
    assert entries == [Entry(1, i, data=payload(i)) for i in range(1, len(entries) + 1)]
    assert hs.commit <= len(entries)
    return len(entries)


@pytest.mark.timeout(300)
def test_sigkill_never_loses_acknowledged_entries(tmp_path: Path) -> None:
    d = tmp_path / "wal"
    rng = random.Random(1234)
    acked_max = 0
    torn_runs = 0
    for it in range(ITERATIONS):
        tear = it % 3 == 2
        tear_after = rng.randint(0, 30) if tear else -1
        start, acks = run_writer(d, it, tear_after, rng.randint(1, 120), rng)
        assert start >= acked_max  # the writer itself replayed everything acknowledged
        if acks:
            assert acks == sorted(acks) and acks[0] > start
            acked_max = acks[-1]
        if tear:
            assert len(acks) == tear_after
        brokens_before = len(list(d.glob("*.broken")))
        acked_max = max(acked_max, check_wal(d, acked_max))
        if tear and len(list(d.glob("*.broken"))) > brokens_before:
            torn_runs += 1
    assert torn_runs >= 1  # at least one real torn write was repaired
    assert len(list_segments(str(d))) >= 3

    # A flipped byte inside a closed segment is corruption, reported precisely.
    victim = list_segments(str(d))[1]
    scan = scan_segment(Path(victim.path).read_bytes(), None)
    rec = [r for r in scan.records if r.type == RecordType.ENTRY][len(scan.records) // 3]
    raw = bytearray(Path(victim.path).read_bytes())
    raw[rec.offset + 30] ^= 0x10
    Path(victim.path).write_bytes(bytes(raw))
    with pytest.raises(WALCorruptionError) as info:
        WAL.open(str(d), segment_size=SEG)
    assert info.value.path == victim.path and info.value.offset == rec.offset
    assert f"{victim.path} at offset {rec.offset}" in str(info.value)
