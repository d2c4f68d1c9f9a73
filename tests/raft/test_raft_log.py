"""Unit tests of the Raft log (storage + unstable tail)."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from raftkv.raft import CompactedError, Entry, MemoryStorage, Snapshot, SnapshotMetadata
from raftkv.raft.log import RaftLog, Unstable


def _log(
    stored: list[int], unstable: Sequence[int] = (), snap: tuple[int, int] = (0, 0)
) -> RaftLog:
    """A log whose stored entries have terms ``stored`` (after the snapshot)."""
    s = MemoryStorage()
    if snap[0]:
        s.apply_snapshot(Snapshot(SnapshotMetadata(index=snap[0], term=snap[1])))
    base = snap[0]
    s.append([Entry(t, base + 1 + k) for k, t in enumerate(stored)])
    log = RaftLog(s, 1 << 20)
    start = base + len(stored) + 1
    if unstable:
        log.append([Entry(t, start + k) for k, t in enumerate(unstable)])
    return log


def test_indices_span_storage_and_unstable() -> None:
    log = _log([1, 1], [2, 2], snap=(5, 1))
    assert (log.first_index(), log.last_index()) == (6, 9)
    assert [log.term(i) for i in range(5, 10)] == [1, 1, 1, 2, 2]
    assert log.term(10) == 0
    with pytest.raises(CompactedError):
        log.term(4)
    assert log.zero_term_on_compacted(4) == 0
    assert log.last_term() == 2


def test_slice_across_boundary_and_size_limit() -> None:
    s = MemoryStorage()
    s.append([Entry(1, i, data=b"x" * 10) for i in (1, 2, 3)])
    log = RaftLog(s, 1 << 20)
    log.append([Entry(2, i, data=b"y" * 10) for i in (4, 5)])
    assert [e.index for e in log.slice(2, 6, None)] == [2, 3, 4, 5]
    assert [e.index for e in log.slice(2, 6, 25)] == [2, 3]
    assert [e.index for e in log.slice(3, 6, 25)] == [3, 4]
    assert [e.index for e in log.slice(4, 6, 1)] == [4]
    assert log.slice(4, 4, None) == []
    assert log.entries(6, None) == []
    with pytest.raises(AssertionError):
        log.slice(2, 7, None)


def test_maybe_append_cases() -> None:
    log = _log([1, 2, 3])
    log.commit_to(1)
    # Mismatching previous entry: rejected.
    assert log.maybe_append(3, 2, 3, (Entry(4, 4),)) == -1
    # Matching, no new entries: commit limited to the last new index.
    assert log.maybe_append(2, 2, 5, ()) == 2
    assert log.committed == 2
    # Conflict at index 3 truncates and replaces.
    assert log.maybe_append(2, 2, 3, (Entry(4, 3), Entry(4, 4))) == 4
    assert [log.term(i) for i in (1, 2, 3, 4)] == [1, 2, 4, 4]
    assert log.committed == 3
    # Entries we already hold are not re-appended (no truncation of a longer log).
    assert log.maybe_append(1, 1, 3, (Entry(2, 2),)) == 2
    assert log.last_index() == 4


def test_maybe_append_conflicting_with_committed_crashes() -> None:
    log = _log([1, 1, 1])
    log.commit_to(3)
    with pytest.raises(AssertionError, match="conflict with committed"):
        log.maybe_append(1, 1, 3, (Entry(2, 2),))


def test_find_conflict() -> None:
    log = _log([1, 2, 3])
    assert log.find_conflict((Entry(1, 1), Entry(2, 2))) == 0
    assert log.find_conflict((Entry(2, 2), Entry(3, 3), Entry(4, 4))) == 4
    assert log.find_conflict((Entry(2, 2), Entry(4, 3))) == 3


@pytest.mark.parametrize(
    ("index", "term", "want"),
    [
        (6, 5, (6, 4)),  # our term at 6 is 4 <= 5
        (6, 3, (3, 3)),  # skip the term-4 entries 4..6
        (6, 2, (2, 2)),
        (6, 1, (1, 1)),
        (6, 0, (0, 0)),
        (2, 5, (2, 2)),
    ],
)
def test_find_conflict_by_term(index: int, term: int, want: tuple[int, int]) -> None:
    log = _log([1, 2, 3, 4, 4, 4])
    assert log.find_conflict_by_term(index, term) == want


def test_find_conflict_by_term_stops_at_compaction() -> None:
    log = _log([4, 4], snap=(3, 3))
    assert log.find_conflict_by_term(5, 3) == (3, 3)
    # Below the snapshot the term is unknown: stop there with term 0.
    assert log.find_conflict_by_term(5, 1) == (2, 0)


def test_commit_and_apply_invariants() -> None:
    log = _log([1, 1, 1])
    log.commit_to(2)
    log.commit_to(1)  # never moves backwards
    assert log.committed == 2
    with pytest.raises(AssertionError):
        log.commit_to(4)
    log.applied_to(2)
    with pytest.raises(AssertionError):
        log.applied_to(3)
    with pytest.raises(AssertionError):
        log.applied_to(1)


def test_maybe_commit_only_current_term() -> None:
    log = _log([1, 1, 2])
    assert not log.maybe_commit(2, 2)
    assert log.maybe_commit(3, 2)
    assert log.committed == 3
    assert not log.maybe_commit(3, 2)


def test_next_ents_respects_applied_and_size() -> None:
    s = MemoryStorage()
    s.append([Entry(1, i, data=b"x" * 10) for i in (1, 2, 3, 4)])
    log = RaftLog(s, 15)
    assert not log.has_next_ents()
    log.commit_to(4)
    assert log.has_next_ents()
    assert [e.index for e in log.next_ents()] == [1]
    log.applied_to(1)
    assert [e.index for e in log.next_ents()] == [2]
    log.max_next_ents_size = 1 << 20
    assert [e.index for e in log.next_ents()] == [2, 3, 4]


def test_is_up_to_date() -> None:
    log = _log([1, 2, 2])
    assert log.is_up_to_date(3, 2)
    assert log.is_up_to_date(1, 3)
    assert not log.is_up_to_date(2, 2)
    assert not log.is_up_to_date(9, 1)


def test_stable_to_and_persisted_index() -> None:
    log = _log([1], [1, 1])
    assert log.persisted_index() == 1
    log.stable_to(3, 1)
    assert log.unstable.entries == [] and log.persisted_index() == 3
    log.append([Entry(2, 4)])
    log.stable_to(4, 1)  # term mismatch: the entry was replaced, ignore
    assert len(log.unstable.entries) == 1
    log.stable_to(4, 2)
    assert log.persisted_index() == 4


def test_unstable_truncate_and_append() -> None:
    u = Unstable(5)
    u.truncate_and_append([Entry(1, 5), Entry(1, 6), Entry(1, 7)])
    u.truncate_and_append([Entry(2, 7)])  # replace the tail
    assert [(e.index, e.term) for e in u.entries] == [(5, 1), (6, 1), (7, 2)]
    u.truncate_and_append([Entry(3, 4)])  # replaces stable entries too
    assert u.offset == 4 and [(e.index, e.term) for e in u.entries] == [(4, 3)]
    u.truncate_and_append([Entry(3, 5)])
    assert u.maybe_last_index() == 5 and u.maybe_term(5) == 3
    assert u.maybe_term(3) is None and u.maybe_term(9) is None


def test_restore_from_snapshot() -> None:
    log = _log([1, 1, 1])
    snap = Snapshot(SnapshotMetadata(index=10, term=4))
    log.restore(snap)
    assert (log.first_index(), log.last_index(), log.committed) == (11, 10, 10)
    assert log.term(10) == 4
    assert log.snapshot() is snap
    assert log.persisted_index() == 0
    log.stable_snap_to(10)
    assert log.unstable.snapshot is None
