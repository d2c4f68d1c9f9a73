"""Installing a backend received with a Raft snapshot, on real LMDB backends in temporary dirs:
the received ``<index>-<term>.snap.db`` is kept (``raftkv check data``'s rebuild base), the
files of older snapshots are deleted, and a start-up neither installs a kept file again nor
trips over the copy a crash left half-way."""

from __future__ import annotations

from pathlib import Path

import pytest

from raftkv.guard.vouch import CopyVouch
from raftkv.mvcc.backend import BackendConfig, verify_file
from raftkv.raft.types import ConfState, Snapshot, SnapshotMetadata
from raftkv.server.applier import INSTALL_COPY_NAME, Applier
from raftkv.server.bootstrap import MemberInfo
from raftkv.server.data_dir import DataDir
from tests.server.entries import put_entries

MEMBERS = [MemberInfo(1, "m1", ("http://127.0.0.1:2380",))]


def make_applier(root: Path, *, bootstrap: bool = True) -> Applier:
    applier = Applier.detached(str(root), BackendConfig(map_size=64 << 20), min_lease_ttl=1)
    if bootstrap:
        applier.write_initial_members(MEMBERS)
    return applier


def snapshot(index: int, term: int) -> Snapshot:
    return Snapshot(SnapshotMetadata(index, term, ConfState(voters=(1,))), b"")


def received(tmp_path: Path, dd: DataDir, index: int, term: int) -> Path:
    """The backend file a leader at ``index`` sends, as the receiver stores it."""
    leader = make_applier(tmp_path / f"leader-{index}")
    try:
        leader.apply_entries(put_entries(2, index, term))
        path = Path(dd.received_backend_path(index, term))
        path.parent.mkdir(parents=True, exist_ok=True)
        assert leader.copy_backend(str(path)) == index
    finally:
        leader.close()
    return path


def snap_dbs(dd: DataDir) -> list[str]:
    return sorted(p.name for p in Path(dd.snap).glob("*.snap.db"))


def test_install_keeps_the_file_and_deletes_older_ones(tmp_path: Path) -> None:
    dd = DataDir(str(tmp_path / "member"))
    applier = make_applier(tmp_path / "member")
    applier.apply_entries(put_entries(2, 4))
    kept = received(tmp_path, dd, 9, 2)
    snap = Path(dd.snap)
    restored = snap / "0000000000000001-0000000000000001.snap.db"  # a restore's base
    older = snap / "0000000000000005-0000000000000001.snap.db"  # an earlier install's
    newer = snap / "000000000000000c-0000000000000002.snap.db"  # received, not installed yet
    for p in (restored, older, newer):
        p.write_bytes(b"backend")
    try:
        applier.install_snapshot(snapshot(9, 2), str(kept))
        assert applier.applied_index() == 9
        assert applier.store.current_revision == 9  # the leader's 8 puts, 2..9
    finally:
        applier.close()
    assert snap_dbs(dd) == [kept.name, newer.name]
    assert not (Path(dd.db) / INSTALL_COPY_NAME).exists()
    # the kept file is the state installed: it can be installed again, into another member
    other = make_applier(tmp_path / "other")
    try:
        other.install_snapshot(snapshot(9, 2), str(kept))
        assert (other.applied_index(), other.store.current_revision) == (9, 9)
    finally:
        other.close()
    assert kept.exists()


def test_restart_does_not_install_a_kept_file_again(tmp_path: Path) -> None:
    dd = DataDir(str(tmp_path / "member"))
    applier = make_applier(tmp_path / "member")
    kept = received(tmp_path, dd, 9, 2)
    applier.install_snapshot(snapshot(9, 2), str(kept))
    applier.apply_entries(put_entries(10, 12, term=2))
    applier.close()

    again = make_applier(tmp_path / "member", bootstrap=False)
    try:
        assert again.applied_index() == 12
        assert not again.install_if_behind(snapshot(9, 2))
        assert (again.applied_index(), again.store.current_revision) == (12, 12)
    finally:
        again.close()
    assert snap_dbs(dd) == [kept.name]


def test_a_crash_between_copy_and_rename_installs_the_kept_file_at_start(tmp_path: Path) -> None:
    dd = DataDir(str(tmp_path / "member"))
    applier = make_applier(tmp_path / "member")
    applier.apply_entries(put_entries(2, 4))
    applier.close()
    kept = received(tmp_path, dd, 9, 2)
    # what the crash left: the snapshot received and persisted, a partial copy in member/db/,
    # data.mdb still the backend at index 4
    partial = Path(dd.db) / INSTALL_COPY_NAME
    partial.write_bytes(kept.read_bytes()[:4096])

    again = make_applier(tmp_path / "member", bootstrap=False)
    try:
        assert not partial.exists()
        assert again.applied_index() == 4
        assert again.install_if_behind(snapshot(9, 2))
        assert (again.applied_index(), again.store.current_revision) == (9, 9)
    finally:
        again.close()
    assert snap_dbs(dd) == [kept.name]
    assert not partial.exists()


def test_a_backend_behind_the_snapshot_without_its_file_refuses_to_start(tmp_path: Path) -> None:
    applier = make_applier(tmp_path / "member")
    try:
        with pytest.raises(RuntimeError, match="behind snapshot 9 and no received backend"):
            applier.install_if_behind(snapshot(9, 2))
    finally:
        applier.close()


def test_an_unconfirmed_copy_carries_its_vouch_until_confirmed(tmp_path: Path) -> None:
    """The sender stamps an unconfirmed copy; the receiver installs the stamp with the state,
    keeps it over a restart, passes it on in its own copies, and deletes it durably once
    confirmed; a confirmed copy (stamped None) carries none."""
    dd = DataDir(str(tmp_path / "member"))
    kept = received(tmp_path, dd, 9, 2)
    vouch = CopyVouch(0xA1, 9)
    sender = make_applier(tmp_path / "sender")
    sender.stamp_copy(str(kept), vouch)
    sender.close()
    verify_file(str(kept))  # the stamp is sealed as every stored value

    applier = make_applier(tmp_path / "member")
    assert applier.copy_vouch is None
    applier.install_snapshot(snapshot(9, 2), str(kept))
    assert applier.copy_vouch == vouch
    onward = tmp_path / "onward.db"
    applier.copy_backend(str(onward))  # a snapshot it sends on carries the same origin
    assert not applier.confirm_copy(CopyVouch(0xB2, 9))  # not the vouch it holds
    applier.close()

    again = make_applier(tmp_path / "member", bootstrap=False)
    try:
        assert again.copy_vouch == vouch
        assert again.confirm_copy(vouch)
        assert again.copy_vouch is None
        again.apply_entries(put_entries(10, 11, 2))
        again.force_commit()
    finally:
        again.close()
    confirmed = make_applier(tmp_path / "member", bootstrap=False)
    try:
        assert confirmed.copy_vouch is None
        assert confirmed.applied_index() == 11
    finally:
        confirmed.close()

    receiver = make_applier(tmp_path / "receiver")
    try:
        receiver.install_snapshot(snapshot(9, 2), str(onward))
        assert receiver.copy_vouch == vouch
        receiver.stamp_copy(str(onward), None)
        receiver.install_snapshot(snapshot(9, 2), str(onward))
        assert receiver.copy_vouch is None
    finally:
        receiver.close()
