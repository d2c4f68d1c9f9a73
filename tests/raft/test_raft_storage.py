"""Unit tests of MemoryStorage (the LogStorage reference implementation)."""

from __future__ import annotations

import pytest

from raftkv.raft import (
    CompactedError,
    ConfState,
    Entry,
    HardState,
    MemoryStorage,
    SnapOutOfDateError,
    Snapshot,
    SnapshotMetadata,
    UnavailableError,
)
from raftkv.raft.storage import limit_size


def _storage(entries: list[tuple[int, int]]) -> MemoryStorage:
    """Storage whose dummy entry is the first (index, term) pair."""
    s = MemoryStorage()
    idx, term = entries[0]
    if idx:
        s.apply_snapshot(Snapshot(SnapshotMetadata(index=idx, term=term)))
    s.append([Entry(t, i, data=b"x" * 10) for i, t in entries[1:]])
    return s


def test_empty_storage_bounds() -> None:
    s = MemoryStorage()
    assert (s.first_index(), s.last_index()) == (1, 0)
    assert s.term(0) == 0
    with pytest.raises(UnavailableError):
        s.term(1)
    assert s.initial_state() == (HardState(), ConfState())


def test_term_and_bounds() -> None:
    s = _storage([(3, 3), (4, 4), (5, 5)])
    assert (s.first_index(), s.last_index()) == (4, 5)
    assert [s.term(i) for i in (3, 4, 5)] == [3, 4, 5]
    with pytest.raises(CompactedError):
        s.term(2)
    with pytest.raises(UnavailableError):
        s.term(6)


def test_entries_bounds_and_size_limit() -> None:
    s = _storage([(3, 3), (4, 4), (5, 5), (6, 6)])
    with pytest.raises(CompactedError):
        s.entries(3, 5)
    assert [e.index for e in s.entries(4, 7)] == [4, 5, 6]
    # Each entry has 10 data bytes: a limit of 25 allows two, 5 still allows one.
    assert [e.index for e in s.entries(4, 7, 25)] == [4, 5]
    assert [e.index for e in s.entries(4, 7, 5)] == [4]
    with pytest.raises(AssertionError):
        s.entries(4, 8)


def test_limit_size_keeps_at_least_one() -> None:
    ents = [Entry(1, i, data=b"abc") for i in range(1, 5)]
    assert limit_size(ents, None) is ents
    assert len(limit_size(ents, 0)) == 1
    assert len(limit_size(ents, 6)) == 2
    assert len(limit_size(ents, 100)) == 4


def test_compact() -> None:
    s = _storage([(3, 3), (4, 4), (5, 5)])
    with pytest.raises(CompactedError):
        s.compact(3)
    s.compact(4)
    assert (s.first_index(), s.last_index(), s.term(4)) == (5, 5, 4)
    with pytest.raises(AssertionError):
        s.compact(9)


def test_create_snapshot_and_apply() -> None:
    s = _storage([(3, 3), (4, 4), (5, 5)])
    cs = ConfState(voters=(1, 2, 3))
    snap = s.create_snapshot(4, cs, b"data")
    assert snap.metadata == SnapshotMetadata(index=4, term=4, conf_state=cs)
    assert s.snapshot() is snap
    with pytest.raises(SnapOutOfDateError):
        s.create_snapshot(3, cs, b"")
    # Without a conf state the previous snapshot's is kept.
    assert s.create_snapshot(5, None, b"").metadata.conf_state == cs
    other = MemoryStorage()
    other.apply_snapshot(snap)
    assert (other.first_index(), other.last_index(), other.term(4)) == (5, 4, 4)
    assert other.initial_state()[1] == cs
    with pytest.raises(SnapOutOfDateError):
        other.apply_snapshot(snap)


@pytest.mark.parametrize(
    ("new", "expect"),
    [
        # Already-compacted prefix is ignored, the rest replaces the suffix.
        ([(3, 3), (4, 4), (5, 5)], [(4, 4), (5, 5)]),
        ([(3, 3), (4, 6), (5, 6)], [(4, 6), (5, 6)]),
        ([(3, 3), (4, 4), (5, 5), (6, 5)], [(4, 4), (5, 5), (6, 5)]),
        # Truncate the conflicting suffix.
        ([(4, 5)], [(4, 5)]),
        ([(5, 5), (6, 5)], [(4, 4), (5, 5), (6, 5)]),
        # Plain append.
        ([(6, 5)], [(4, 4), (5, 5), (6, 5)]),
        # Entirely compacted away: no change.
        ([(2, 3), (3, 3)], [(4, 4), (5, 5)]),
    ],
)
def test_append(new: list[tuple[int, int]], expect: list[tuple[int, int]]) -> None:
    s = _storage([(3, 3), (4, 4), (5, 5)])
    s.append([Entry(t, i) for i, t in new])
    got = s.entries(s.first_index(), s.last_index() + 1)
    assert [(e.index, e.term) for e in got] == expect


def test_append_with_gap_crashes() -> None:
    s = _storage([(3, 3), (4, 4), (5, 5)])
    with pytest.raises(AssertionError, match="missing log entry"):
        s.append([Entry(5, 7)])


def test_hard_state() -> None:
    s = MemoryStorage()
    s.set_hard_state(HardState(term=2, vote=1, commit=0))
    assert s.initial_state()[0] == HardState(term=2, vote=1, commit=0)
