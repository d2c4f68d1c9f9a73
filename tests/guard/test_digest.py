"""The apply digest: effect encoding, chain, history, persistence, divergence search, quorum."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from raftkv.guard.digest import (
    DEFAULT_HISTORY,
    DIGEST_SIZE,
    GENESIS,
    META_APPLY_DIGEST,
    ApplyDigest,
    DigestRecordError,
    EffectRecorder,
    NoOverlapError,
    awaits_voters,
    bisect_divergence,
    comparison_indexes,
    decode_head,
    encode_head,
    first_divergence,
    judge,
    majority_index,
)
from raftkv.mvcc.backend import BUCKET_APPLY_DIGEST, BUCKET_META, Backend

Effect = tuple[Any, ...]

int64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)
uint64 = st.integers(min_value=0, max_value=2**64 - 1)
uint32 = st.integers(min_value=0, max_value=2**32 - 1)
blob = st.binary(max_size=12)

effects = st.one_of(
    st.tuples(st.just("put"), blob, blob, int64, int64, int64, int64),
    st.tuples(st.just("delete"), blob, int64),
    st.tuples(st.just("compact"), int64),
    st.tuples(st.just("lease_grant"), int64, int64),
    st.tuples(st.just("lease_revoke"), int64),
    st.tuples(st.just("lease_checkpoint"), int64, int64),
    st.tuples(st.just("member_set"), uint64, blob),
    st.tuples(st.just("member_remove"), uint64),
    st.tuples(st.just("alarm"), uint64, uint32, st.booleans()),
    st.tuples(st.just("auth"), blob, st.none() | blob),
)


def record(rec: EffectRecorder, effs: Sequence[Effect]) -> None:
    for name, *args in effs:
        getattr(rec, name)(*args)


def chain_of(entries: Sequence[Sequence[Effect]], capacity: int = DEFAULT_HISTORY) -> ApplyDigest:
    """A chain that applied ``entries`` at indexes 1.. and committed each."""
    d = ApplyDigest(capacity=capacity)
    for i, effs in enumerate(entries, start=1):
        record(d.recorder, effs)
        d.recorder.finish(i)
        d.commit()
    return d


def one(effs: Sequence[Effect], index: int = 1) -> bytes:
    d = ApplyDigest(index - 1, GENESIS)
    record(d.recorder, effs)
    return d.recorder.finish(index)


# -- the encoding --------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(st.lists(effects, max_size=8))
def test_same_effects_same_digest(effs: list[Effect]) -> None:
    assert one(effs) == one(list(effs))
    assert len(one(effs)) == DIGEST_SIZE


@settings(max_examples=200, deadline=None)
@given(st.lists(effects, min_size=1, max_size=8), st.data())
def test_any_single_change_changes_the_digest(effs: list[Effect], data: st.DataObject) -> None:
    before = one(effs)
    i = data.draw(st.integers(0, len(effs) - 1))
    changed = data.draw(effects)
    assume(changed != effs[i])
    assert one([*effs[:i], changed, *effs[i + 1 :]]) != before  # changed
    assert one([*effs[:i], *effs[i + 1 :]]) != before  # missing
    assert one([*effs[: i + 1], changed, *effs[i + 1 :]]) != before  # one more
    if i + 1 < len(effs) and effs[i] != effs[i + 1]:
        swapped = [*effs[:i], effs[i + 1], effs[i], *effs[i + 2 :]]
        assert one(swapped) != before  # reordered


@settings(max_examples=100, deadline=None)
@given(st.lists(effects, max_size=6))
def test_the_index_and_the_predecessor_are_covered(effs: list[Effect]) -> None:
    assert one(effs, index=1) != one(effs, index=2)
    a = ApplyDigest(0, GENESIS)
    b = ApplyDigest(0, b"\x01" * DIGEST_SIZE)
    record(a.recorder, effs)
    record(b.recorder, effs)
    assert a.recorder.finish(1) != b.recorder.finish(1)


def test_effects_do_not_leak_across_entries() -> None:
    """The effects of entry 1 belong to entry 1, not to entry 2."""
    put = ("put", b"k", b"v", 0, 2, 2, 1)
    assert chain_of([[put], []]).latest() != chain_of([[], [put]]).latest()


def test_field_boundaries_are_unambiguous() -> None:
    assert one([("put", b"ab", b"c", 0, 1, 1, 1)]) != one([("put", b"a", b"bc", 0, 1, 1, 1)])
    assert one([("auth", b"k", None)]) != one([("auth", b"k", b"")])
    assert one([("alarm", 1, 1, True)]) != one([("alarm", 1, 1, False)])


# -- the chain and its history --------------------------------------------------------------


def test_pending_entries_are_invisible_until_commit() -> None:
    d = ApplyDigest()
    assert d.latest() == (0, GENESIS)
    got = d.recorder.finish(1)
    assert d.digest_at(1) is None and d.latest() == (0, GENESIS)
    assert decode_head(d.encode_head()) == (1, got)  # the record covers the open batch
    d.commit()
    assert d.latest() == (1, got) and d.digest_at(1) == got


def test_rollback_returns_to_the_last_commit() -> None:
    d = chain_of([[("compact", 3)]])
    head = d.latest()
    d.recorder.put(b"k", b"v", 0, 4, 4, 1)
    d.recorder.finish(2)
    d.recorder.delete(b"k", 5)  # recorded but never finished
    d.rollback()
    assert d.latest() == head and d.digest_at(2) is None
    d.recorder.finish(2)  # the half-recorded delete was dropped
    d.commit()
    assert d.latest() == chain_of([[("compact", 3)], []]).latest()


def test_indexes_must_be_consecutive() -> None:
    d = ApplyDigest(5, GENESIS)
    with pytest.raises(ValueError, match="entry 7 finished after entry 5"):
        d.recorder.finish(7)
    with pytest.raises(ValueError):
        d.recorder.finish(5)
    d.recorder.finish(6)


def test_history_is_bounded() -> None:
    d = chain_of([[("compact", i)] for i in range(1, 21)], capacity=5)
    assert d.oldest_index() == 16 and d.latest()[0] == 20
    assert d.digest_at(15) is None and d.digest_at(16) is not None
    assert len(d._history) == len(d._order) == 5


def test_reset_continues_from_a_received_head() -> None:
    full = chain_of([[("compact", i)] for i in range(1, 11)])
    at5 = full.digest_at(5)
    assert at5 is not None
    d = chain_of([[("lease_revoke", 9)]])
    d.reset(5, at5)
    assert d.oldest_index() == 5
    for i in range(6, 11):
        d.recorder.compact(i)
        d.recorder.finish(i)
    d.commit()
    assert d.latest() == full.latest()


# -- persistence ---------------------------------------------------------------------------


def test_restart_continues_the_chain() -> None:
    entries = [[("put", b"k%d" % i, b"v", 0, i + 1, 2, i)] for i in range(1, 31)]
    whole = chain_of(entries)
    first = chain_of(entries[:12])
    restored = ApplyDigest.from_record(first.encode_head())
    assert restored.latest() == first.latest()
    for i, effs in enumerate(entries[12:], start=13):
        record(restored.recorder, effs)
        restored.recorder.finish(i)
    restored.commit()
    assert restored.latest() == whole.latest()


def _history(d: ApplyDigest) -> list[tuple[int, bytes]]:
    return [(i, d._history[i]) for i in d._order]


def _persisted(backend: Backend) -> list[tuple[int, bytes]]:
    """The persisted chunks, flattened to (index, digest) pairs."""
    return [
        (int.from_bytes(k, "big") + i, v[i * DIGEST_SIZE : (i + 1) * DIGEST_SIZE])
        for k, v in backend.items(BUCKET_APPLY_DIGEST)
        for i in range(len(v) // DIGEST_SIZE)
    ]


def _reload(backend: Backend, capacity: int) -> ApplyDigest:
    return ApplyDigest.load(
        backend.get(BUCKET_META, META_APPLY_DIGEST),
        backend.items(BUCKET_APPLY_DIGEST),
        capacity=capacity,
    )


class _Abort(Exception):
    pass


@settings(max_examples=60, deadline=None)
@given(
    capacity=st.integers(min_value=1, max_value=12),
    batches=st.lists(
        st.tuples(st.integers(min_value=1, max_value=15), st.booleans()), min_size=1, max_size=12
    ),
)
def test_the_persisted_history_is_the_committed_one(
    tmp_path_factory: pytest.TempPathFactory, capacity: int, batches: list[tuple[int, bool]]
) -> None:
    """Batches of entries persisted through a real backend, some aborted: after every batch the
    bucket holds the committed history as adjacent chunks ending at the head (one chunk more at
    most), and a reload (a restart) has the same head, history and oldest index, and continues
    the same chain."""
    backend = Backend(tmp_path_factory.mktemp("db"))
    d = ApplyDigest(capacity=capacity)
    index = 0
    for size, abort in batches:
        try:
            with backend.write() as tx:
                for i in range(index + 1, index + size + 1):
                    d.recorder.compact(i)
                    d.recorder.finish(i)
                d.persist(tx)
                if abort:
                    raise _Abort
        except _Abort:
            d.rollback()
        else:
            d.commit()
            index += size
        if index == 0:  # nothing committed yet: nothing written
            assert _persisted(backend) == []
            continue
        persisted, history = _persisted(backend), _history(d)
        assert persisted[-len(history) :] == history
        assert [i for i, _ in persisted] == list(range(persisted[0][0], index + 1))
        assert len(persisted) - len(history) < 15  # at most one chunk (batch) more
        restored = _reload(backend, capacity)
        assert _history(restored) == _history(d)
        assert restored.oldest_index() == d.oldest_index()
        assert restored.latest() == d.latest()
    restored = _reload(backend, capacity)
    for chain in (d, restored):
        chain.recorder.compact(index + 1)
        chain.recorder.finish(index + 1)
        chain.commit()
    assert restored.latest() == d.latest()
    backend.close()


def test_stale_history_is_dropped_on_load_and_deleted_by_the_next_persist(tmp_path: Path) -> None:
    """Only the run of consecutive indexes ending at the head is history: items cut off by a
    gap (or a run that does not end at the head: a version that kept no history ran since)
    are stale, never reported, and deleted by the next batch."""
    backend = Backend(tmp_path)
    full = chain_of([[("compact", i)] for i in range(1, 21)])
    with backend.write() as tx:
        for first, last in ((2, 5), (12, 15), (16, 20)):  # a gap at 6..11
            chunk = b"".join(full._history[i] for i in range(first, last + 1))
            tx.put(BUCKET_APPLY_DIGEST, first.to_bytes(8, "big"), chunk)
        tx.put(BUCKET_META, META_APPLY_DIGEST, full.encode_head())
    d = _reload(backend, DEFAULT_HISTORY)
    assert d.oldest_index() == 12 and d.latest() == full.latest()
    assert d.digest_at(5) is None
    with backend.write() as tx:
        d.recorder.compact(21)
        d.recorder.finish(21)
        d.persist(tx)
    d.commit()
    assert [i for i, _ in _persisted(backend)] == list(range(12, 22))

    moved_on = ApplyDigest(30, bytes(range(16)))  # the head moved on without the history
    with backend.write() as tx:
        tx.put(BUCKET_META, META_APPLY_DIGEST, moved_on.encode_head())
    d = _reload(backend, DEFAULT_HISTORY)
    assert d.oldest_index() == 30 and d.latest() == moved_on.latest()
    with backend.write() as tx:
        d.recorder.compact(31)
        d.recorder.finish(31)
        d.persist(tx)
    d.commit()
    assert [i for i, _ in _persisted(backend)] == [30, 31]  # the restored head, then 31
    backend.close()


def test_a_history_chunk_of_the_wrong_size_is_the_record_error() -> None:
    for value in (b"", b"short", bytes(DIGEST_SIZE + 1)):
        with pytest.raises(DigestRecordError):
            ApplyDigest.load(None, [((1).to_bytes(8, "big"), value)])


def test_missing_record_starts_at_the_fallback_index() -> None:
    assert ApplyDigest.from_record(None, fallback_index=7).latest() == (7, GENESIS)


def test_record_round_trip_and_every_corruption_is_the_one_error() -> None:
    digest = bytes(range(16))
    rec = encode_head(2**63 + 5, digest)
    assert len(rec) == 33
    assert decode_head(rec) == (2**63 + 5, digest)
    for pos in range(len(rec)):
        for bit in range(8):
            bad = bytearray(rec)
            bad[pos] ^= 1 << bit
            with pytest.raises(DigestRecordError):
                decode_head(bytes(bad))
    for cut in range(len(rec)):
        with pytest.raises(DigestRecordError):
            decode_head(rec[:cut])
    with pytest.raises(DigestRecordError):
        decode_head(rec + b"\x00")


# -- first divergence ----------------------------------------------------------------------


def diverging_pair(
    n: int, at: int | None, capacity: int = 10_000
) -> tuple[ApplyDigest, ApplyDigest]:
    """Two chains of ``n`` entries, equal before ``at`` and with a different value at ``at``."""
    a, b = ApplyDigest(capacity=capacity), ApplyDigest(capacity=capacity)
    for i in range(1, n + 1):
        a.recorder.put(b"k", b"v%d" % i, 0, i + 1, 2, i)
        b.recorder.put(b"k", b"x" if i == at else b"v%d" % i, 0, i + 1, 2, i)
        a.recorder.finish(i)
        b.recorder.finish(i)
        a.commit()
        b.commit()
    return a, b


@settings(max_examples=150, deadline=None)
@given(st.integers(1, 400), st.data())
def test_first_divergence_finds_the_exact_index(n: int, data: st.DataObject) -> None:
    at = data.draw(st.none() | st.integers(1, n))
    a, b = diverging_pair(n, at)
    lookups: list[int] = []

    def remote(i: int) -> bytes | None:
        lookups.append(i)
        return b.digest_at(i)

    assert first_divergence(a, remote) == at
    assert first_divergence(b, a.digest_at) == at
    assert len(lookups) <= math.ceil(math.log2(n + 1)) + 2


@settings(max_examples=100, deadline=None)
@given(st.integers(2, 200), st.data())
def test_first_divergence_within_a_partial_overlap(n: int, data: st.DataObject) -> None:
    at = data.draw(st.integers(1, n))
    capacity = data.draw(st.integers(1, n))
    a, b = diverging_pair(n, at, capacity=capacity)
    r_lo = data.draw(st.integers(0, n))
    r_hi = data.draw(st.integers(r_lo, n))
    lo, hi = max(a.oldest_index(), r_lo), min(n, r_hi)
    if lo > hi:
        with pytest.raises(NoOverlapError):
            first_divergence(a, b.digest_at, (r_lo, r_hi))
        return
    b_full = diverging_pair(n, at)[1]  # the remote keeps all of its history
    got = first_divergence(a, b_full.digest_at, (r_lo, r_hi))
    if hi < at:
        assert got is None
    else:
        assert got == max(at, lo)  # the overlap's first index when it starts past ``at``


def test_a_lookup_missing_inside_the_declared_range_is_an_error() -> None:
    a, b = diverging_pair(50, 20)
    b_short = diverging_pair(50, 20, capacity=10)[1]
    with pytest.raises(NoOverlapError, match="missing"):
        first_divergence(a, b_short.digest_at)
    assert first_divergence(a, b.digest_at) == 20


# -- the quorum rule -----------------------------------------------------------------------

X, Y, Z = b"x" * 16, b"y" * 16, b"z" * 16


@pytest.mark.parametrize(
    ("reports", "voters", "truth", "outliers"),
    [
        ({1: X, 2: X, 3: X}, None, X, []),
        ({1: X, 2: Y, 3: X}, None, X, [2]),
        ({1: X, 2: Y, 3: Z}, None, None, [1, 2, 3]),
        ({1: X, 2: X}, [1, 2, 3], X, []),  # 2 of 3 voters is a majority
        ({1: X, 2: Y}, [1, 2, 3], None, [1, 2]),
        ({1: X, 2: X, 3: X, 4: X, 5: X}, None, X, []),
        ({1: X, 2: X, 3: Y, 4: X, 5: X}, None, X, [3]),
        ({1: Y, 2: X, 3: X, 4: Z, 5: X}, None, X, [1, 4]),
        ({1: Y, 2: X, 3: X, 4: Y, 5: X}, None, X, [1, 4]),
        ({1: Y, 2: X, 3: X, 4: Y, 5: Z}, None, None, [1, 2, 3, 4, 5]),
        ({1: X, 2: X, 3: Y}, [1, 2, 3, 4, 5], None, [1, 2, 3]),  # 2 of 5 is no majority
        ({1: X, 2: X, 3: X, 9: Y}, [1, 2, 3, 4, 5], X, [9]),  # learner 9 named, not counted
        ({1: X, 9: X, 8: X}, [1, 2, 3], None, [1, 8, 9]),  # learners do not make a majority
    ],
)
def test_judge(
    reports: dict[int, bytes],
    voters: list[int] | None,
    truth: bytes | None,
    outliers: list[int],
) -> None:
    assert judge(reports, voters) == (truth, outliers)


def test_judge_works_on_any_hashable_value() -> None:
    assert judge({1: 7, 2: 7, 3: 8}) == (7, [3])


# -- the rules of a comparison round ---------------------------------------------------------


@pytest.mark.parametrize(
    ("applied", "voters", "index"),
    [
        ({1: 10, 2: 8, 3: 3}, [1, 2, 3], 8),  # one laggard does not hold the comparison back
        ({1: 10, 2: 8}, [1, 2, 3], 8),  # a majority reported: the lower of the two
        ({1: 10}, [1, 2, 3], 0),  # no majority reported
        ({1: 10, 2: 9, 3: 7, 4: 2, 5: 1}, [1, 2, 3, 4, 5], 7),
        ({1: 10, 2: 9, 9: 12}, [1, 2, 3, 4, 5], 0),  # learner 9 does not count
        ({1: 10, 2: 9, 3: 7, 9: 12}, [1, 2, 3, 4, 5], 7),
    ],
)
def test_majority_index(applied: dict[int, int], voters: list[int], index: int) -> None:
    assert majority_index(applied, voters) == index


def test_comparison_indexes_try_the_laggards_after_the_majority_index() -> None:
    ranges = {1: (1, 20), 2: (5, 20), 3: (1, 12), 9: (1, 4)}
    assert comparison_indexes(ranges, [1, 2, 3]) == [20, 12, 4]
    assert comparison_indexes({1: (1, 20)}, [1, 2, 3]) == []


@pytest.mark.parametrize(
    ("reports", "voters", "waits"),
    [
        ({1: X, 2: Y}, [1, 2, 3], True),  # voter 3 settles it whichever side it joins
        ({1: X, 2: Y, 3: Z}, [1, 2, 3], False),  # everyone reported: no majority can form
        ({1: X, 2: Y, 3: X}, [1, 2, 3], False),  # a majority exists (judge decides)
        ({1: X, 2: X, 3: Y}, [1, 2, 3, 4, 5], True),  # 4 or 5 may make X a majority
        ({1: X, 2: Y, 3: Z}, [1, 2, 3, 4, 5], True),  # X with 4 and 5 is 3 of 5
        ({1: X, 2: Y, 3: Z, 4: Y}, [1, 2, 3, 4, 5], True),
        ({1: X, 2: Y, 3: Z, 4: X}, [1, 2, 3, 4, 5], True),
        ({1: X, 2: Y, 3: Z, 4: Z, 5: Y}, [1, 2, 3, 4, 5], False),
        ({1: X, 9: Y}, [1, 2, 3], True),  # learner 9 reports, voters 2 and 3 do not
    ],
)
def test_awaits_voters(reports: dict[int, bytes], voters: list[int], waits: bool) -> None:
    assert awaits_voters(reports, voters) == waits


@given(st.integers(1, 300), st.data())
def test_bisect_divergence_finds_the_first_differing_index(n: int, data: st.DataObject) -> None:
    first = data.draw(st.integers(1, n))
    lo = data.draw(st.integers(0, n - 1))
    probes: list[int] = []

    def same(i: int) -> bool:
        probes.append(i)
        return i < first

    assert bisect_divergence(lo, n, same) == max(first, lo)
    assert len(probes) <= math.ceil(math.log2(n + 1)) + 1
