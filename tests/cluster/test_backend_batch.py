"""Batched backend commits on a real member: applied writes wait in the pending batch (not in
the LMDB file) until ``--backend-batch-interval``; a kill -9 meanwhile loses none of them,
because the WAL replays them on restart."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import lmdb

from tests.cluster.harness import Cluster


def keys_in_backend_file(data_dir: Path) -> int:
    """Revisions in the key bucket of the member's LMDB file, as another process reads them
    (committed transactions only)."""
    env = lmdb.open(str(data_dir / "member" / "db"), readonly=True, max_dbs=16)
    try:
        db = env.open_db(b"key", create=False)
        with env.begin() as txn:
            return int(txn.stat(db)["entries"])
    finally:
        env.close()


def test_kill_before_the_backend_commit_loses_no_acknowledged_write(
    make_cluster: Callable[..., Cluster],
) -> None:
    c = make_cluster(1, ["--backend-batch-interval", "1h", "--backend-batch-limit", "1000000"])
    c.etcdctl("put", "first", "x")
    stored = keys_in_backend_file(c.members[0].data_dir)
    expected = {f"k{i}": f"v{i}" for i in range(20)}
    for key, value in expected.items():
        c.etcdctl("put", key, value)
    # Acknowledged and readable, yet not in the file: only the WAL holds them durably.
    assert c.get_all(0, "k") == expected
    assert keys_in_backend_file(c.members[0].data_dir) == stored
    c.kill(0)
    c.start(0)
    c.wait_ready()
    assert c.get_all(0, "k") == expected
    assert c.get_all(0, "first") == {"first": "x"}


def test_an_idle_member_commits_its_pending_batch_after_the_interval(
    make_cluster: Callable[..., Cluster],
) -> None:
    c = make_cluster(1, ["--backend-batch-interval", "300ms"])
    before = keys_in_backend_file(c.members[0].data_dir)
    for i in range(5):
        c.etcdctl("put", f"k{i}", "v")
    deadline = time.monotonic() + 20
    while keys_in_backend_file(c.members[0].data_dir) < before + 5:
        assert time.monotonic() < deadline, "the pending batch was never committed"
        time.sleep(0.1)
    # Committed to the file: a kill now needs no replay for them, and they are all there.
    c.kill(0)
    c.start(0)
    c.wait_ready()
    assert c.get_all(0, "k") == {f"k{i}": "v" for i in range(5)}
