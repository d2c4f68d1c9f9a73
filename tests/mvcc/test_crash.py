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
from tests.mvcc.crash_child import apply_range, open_store

COUNT = 600
ROOT = Path(__file__).resolve().parents[2]


def _dump(s: KVStore) -> tuple[object, ...]:
    r = s.range(RangeRequest(b"\x00", b"\x00"))
    return (s.current_revision, s.compact_revision, r.kvs, s.hash_kv()[0].hash)


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
