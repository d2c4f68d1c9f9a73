"""Crash test: SIGKILL a real process applying entries; the reopened store must hold
exactly the prefix up to its consistent index, and re-applying converges."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from raftkv.mvcc import KVStore, RangeRequest
from raftkv.mvcc.backend import BUCKET_META, META_CONSISTENT_INDEX
from tests.mvcc.crash_child import apply_range, open_store, run

COUNT = 600
ROOT = Path(__file__).resolve().parents[2]


def _dump(s: KVStore) -> tuple[object, ...]:
    r = s.range(RangeRequest(b"\x00", b"\x00"))
    return (s.current_revision, s.compact_revision, r.kvs, s.hash_kv()[0].hash)


def _committed_index(s: KVStore) -> int:
    """The consistent index in the file's last commit."""
    stored = s.backend.get_durable(BUCKET_META, META_CONSISTENT_INDEX)
    return int.from_bytes(stored or b"", "big")


@pytest.mark.parametrize(("seed", "batch_limit"), [(4, 40), (8, 90)])
def test_child_acknowledges_only_committed_entries(
    tmp_path: Path, seed: int, batch_limit: int
) -> None:
    """The crash test trusts the child's ACKs: each must name an index the file holds at that
    moment. (Seed 8 once acknowledged 329 with 325 on file: a commit inside a compaction
    step was credited to the next, still pending, batch.)"""
    s = open_store(str(tmp_path / "db"), batch_limit)
    acks: list[tuple[int, int]] = []
    run(s, seed, COUNT, lambda last: acks.append((last, _committed_index(s))))
    s.backend.close()
    assert len(acks) > 5
    assert [a for a in acks if a[1] < a[0]] == []


@pytest.mark.parametrize(
    ("seed", "batch_limit"),
    [(1, 0), (2, 0), (3, 0), (4, 40), (8, 90)],
    ids=["commit-each-1", "commit-each-2", "commit-each-3", "batched-40", "batched-90"],
)
def test_sigkill_then_replay(tmp_path: Path, seed: int, batch_limit: int) -> None:
    """With batched commits (``batch_limit``) a kill also loses the pending batch: the file
    still holds exactly a prefix, and replaying from before it converges."""
    db = tmp_path / "db"
    env = dict(os.environ, PYTHONPATH=f"{ROOT / 'src'}{os.pathsep}{ROOT}")
    argv = [str(db), str(seed), str(COUNT)] + ([str(batch_limit)] if batch_limit else [])
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.mvcc.crash_child", *argv],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
        cwd=ROOT,
    )
    assert proc.stdout is not None
    kill_after = random.Random(seed).randrange(3, 25)
    acked = 0
    for line in proc.stdout:
        acked = int(line.split()[1])
        kill_after -= 1
        if kill_after == 0:
            time.sleep(random.Random(seed).random() * 0.01)
            break
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    proc.stdout.close()
    assert acked > 0

    s = open_store(str(db))
    ci = s.consistent_index
    assert ci >= acked  # everything acknowledged survived
    ref = open_store(str(tmp_path / "ref"))
    apply_range(ref, seed, 1, ci)
    assert _dump(s) == _dump(ref)  # exactly the prefix up to the consistent index

    # replay from before the consistent index: duplicates are no-ops
    apply_range(s, seed, max(1, ci - 17), COUNT)
    apply_range(ref, seed, ci + 1, COUNT)
    assert s.consistent_index == ref.consistent_index == COUNT
    assert _dump(s) == _dump(ref)
    s.backend.close()
    ref.backend.close()
