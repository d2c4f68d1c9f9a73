"""The Raft side of a member reopened from its data dir (``open_raft_side``): a member that
joined a running cluster and crashed before its first snapshot arrived (or before the hard
state committing it was durable) restarts with an empty log, as it first started, rather than
refusing its own data dir; one whose snapshot was committed restarts from it."""

from __future__ import annotations

from pathlib import Path

import pytest

from raftkv.raft.types import ConfState, Entry, HardState, Snapshot, SnapshotMetadata
from raftkv.server.bootstrap import ExistingCluster, RaftRecovery, open_raft_side
from raftkv.server.config import ServerConfig
from raftkv.wal.replay import WalSnapshot


def _joiner(root: Path) -> ServerConfig:
    return ServerConfig(
        name="m4",
        data_dir=str(root / "m4"),
        initial_cluster_state="existing",
        initial_cluster="m4=http://127.0.0.1:1",
    )


def test_a_joined_member_restarts_before_its_first_snapshot(tmp_path: Path) -> None:
    cfg = _joiner(tmp_path)
    joined = open_raft_side(cfg, ExistingCluster(cluster_id=7, member_id=0x44))
    assert joined.snapshot.metadata.index == 0
    # What it persisted before the crash: a vote in term 3, no entries (the leader's first
    # message to a new member is a snapshot, which never came).
    joined.wal.save(HardState(term=3, vote=2, commit=0), [])
    joined.wal.sync()
    joined.wal.close()

    again = open_raft_side(cfg)
    assert (again.member_id, again.cluster_id) == (0x44, 7)
    assert again.snapshot.metadata.index == 0
    assert again.hard_state == HardState(term=3, vote=2, commit=0)
    assert (again.storage.first_index(), again.storage.last_index()) == (1, 0)
    again.wal.close()


def test_a_joined_member_keeps_the_entries_it_was_sent(tmp_path: Path) -> None:
    cfg = _joiner(tmp_path)
    joined = open_raft_side(cfg, ExistingCluster(cluster_id=7, member_id=0x44))
    joined.wal.save(HardState(term=2, vote=0, commit=1), [Entry(term=2, index=1, data=b"")])
    joined.wal.sync()
    joined.wal.close()

    again = open_raft_side(cfg)
    assert again.storage.last_index() == 1
    assert again.storage.term(1) == 2
    again.wal.close()


def _receive_snapshot(joined: RaftRecovery, *, commit_durable: bool) -> None:
    """Persist a snapshot at index 9 as the Ready loop does: the snapshot file, its WAL
    marker (synced), then the hard state committing it (synced or lost in a crash)."""
    meta = SnapshotMetadata(index=9, term=2, conf_state=ConfState(voters=(1, 2, 3)))
    joined.snapshotter.save(Snapshot(meta, b"members"))
    joined.wal.save_snapshot(WalSnapshot(9, 2, meta.conf_state))
    if commit_durable:
        joined.wal.save(HardState(term=2, vote=0, commit=9), [])
    joined.wal.close()


@pytest.mark.parametrize(
    ("commit_durable", "restarted_at", "voters", "log"),
    [
        (False, 0, (), (1, 0)),  # as etcd: not used, the leader sends it again
        (True, 9, (1, 2, 3), (10, 9)),
    ],
    ids=["commit-lost", "committed"],
)
def test_a_received_snapshot_is_used_once_its_commit_is_durable(
    tmp_path: Path,
    commit_durable: bool,
    restarted_at: int,
    voters: tuple[int, ...],
    log: tuple[int, int],
) -> None:
    cfg = _joiner(tmp_path)
    _receive_snapshot(
        open_raft_side(cfg, ExistingCluster(cluster_id=7, member_id=0x44)),
        commit_durable=commit_durable,
    )
    again = open_raft_side(cfg)
    assert again.snapshot.metadata.index == restarted_at
    assert again.conf_state.voters == voters
    assert (again.storage.first_index(), again.storage.last_index()) == log
    again.wal.close()
