"""Retention on synthetic timestamps: keep-last, the exponential policy (hourly for a day,
daily for a week, weekly for a month), and the rule that the newest verified full backup and
the deltas depending on it are never deleted."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from raftkv.backup.manifest import KIND_DELTA, KIND_FULL, BackupEntry, Manifest, format_time
from raftkv.backup.retention import (
    DAY,
    HOUR,
    MONTH,
    WEEK,
    RetentionPolicy,
    exponential_keep,
    plan_retention,
)

NOW = 1_800_000_000.0


def full(i: int, ts: float, verified: bool = True) -> BackupEntry:
    return BackupEntry(
        id=f"full-{i}",
        kind=KIND_FULL,
        file=f"full-{i}.snap.zst",
        from_revision=0,
        to_revision=i * 10,
        sha256="",
        size_raw=1,
        size_compressed=1,
        started=format_time(ts),
        finished=format_time(ts),
        cut_time=format_time(ts),
        verified=verified,
    )


def delta(base: BackupEntry, prev: str, j: int, verified: bool = True) -> BackupEntry:
    ts = base.cut_ts + j
    return BackupEntry(
        id=f"{base.id}-d{j}",
        kind=KIND_DELTA,
        file=f"{base.id}-d{j}.delta.zst",
        base=base.id,
        prev=prev,
        from_revision=base.to_revision + j - 1,
        to_revision=base.to_revision + j,
        sha256="",
        size_raw=1,
        size_compressed=1,
        started=format_time(ts),
        finished=format_time(ts),
        cut_time=format_time(ts),
        verified=verified,
    )


def with_deltas(fulls: list[BackupEntry], n: int = 2) -> Manifest:
    m = Manifest()
    for f in fulls:
        m.put(f)
        prev = f.id
        for j in range(1, n + 1):
            d = delta(f, prev, j)
            m.put(d)
            prev = d.id
    return m


def test_keep_last_keeps_the_newest_and_their_deltas() -> None:
    fulls = [full(i, NOW - (10 - i) * HOUR) for i in range(10)]
    plan = plan_retention(with_deltas(fulls), NOW, RetentionPolicy(keep_last=3))
    kept = {e.id for e in plan.keep}
    assert {e.id for e in plan.keep if e.kind == KIND_FULL} == {"full-7", "full-8", "full-9"}
    assert {"full-9-d1", "full-9-d2", "full-7-d2"} <= kept
    assert "full-6-d1" not in kept and "full-0" not in kept
    assert len(plan.keep) + len(plan.delete) == 30


def test_exponential_hourly_daily_weekly() -> None:
    # one full every 30 minutes for 40 days
    fulls = [full(i, NOW - i * 1800.0) for i in range(40 * 48)]
    kept = exponential_keep(fulls, NOW)
    ages = sorted(NOW - f.cut_ts for f in fulls if f.id in kept)
    hourly = [a for a in ages if a < DAY]
    assert len(hourly) == 24  # the newest of each of the last 24 hours
    assert all(a < MONTH for a in ages)
    daily = [a for a in ages if DAY <= a < WEEK]
    weekly = [a for a in ages if a >= WEEK]
    assert len(daily) == 6  # the other days of the week (day 0 is kept by its hour)
    assert 3 <= len(weekly) <= 4
    # each kept full is the newest of its bucket
    for a in hourly:
        assert a % HOUR == 0


def test_nothing_is_deleted_without_a_policy() -> None:
    fulls = [full(i, NOW - i * DAY * 40) for i in range(5)]
    plan = plan_retention(with_deltas(fulls), NOW, RetentionPolicy())
    assert not plan.delete


def test_newest_verified_full_survives_any_policy() -> None:
    # the newest full is two months old: exponential alone would delete everything
    old = [full(i, NOW - 70 * DAY + i) for i in range(3)]
    plan = plan_retention(with_deltas(old, 3), NOW, RetentionPolicy(exponential=True))
    kept = {e.id for e in plan.keep}
    assert kept == {"full-2", "full-2-d1", "full-2-d2", "full-2-d3"}
    assert "newest verified" in plan.reasons["full-2"]


def test_unverified_full_does_not_count_and_newer_failed_entries_stay() -> None:
    fulls = [full(0, NOW - 3 * HOUR), full(1, NOW - 2 * HOUR), full(2, NOW - HOUR, verified=False)]
    m = with_deltas(fulls[:2], 1)
    m.put(fulls[2])
    plan = plan_retention(m, NOW, RetentionPolicy(keep_last=1))
    kept = {e.id for e in plan.keep}
    # keep-last counts verified fulls only: full-1 is the one, full-2 (failed) stays for audit
    assert kept == {"full-1", "full-1-d1", "full-2"}
    old_failed = full(9, NOW - 5 * HOUR, verified=False)
    m.put(old_failed)
    assert "full-9" in {e.id for e in plan_retention(m, NOW, RetentionPolicy(keep_last=1)).delete}


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(st.floats(0, 60 * DAY), st.booleans()), min_size=1, max_size=30),
    st.integers(0, 5),
    st.booleans(),
)
def test_protection_holds_for_any_history(
    points: list[tuple[float, bool]], keep_last: int, exponential: bool
) -> None:
    fulls = [full(i, NOW - age, verified=ok) for i, (age, ok) in enumerate(points)]
    m = with_deltas([f for f in fulls if f.verified], 2)
    for f in fulls:
        if not f.verified:
            m.put(f)
    plan = plan_retention(m, NOW, RetentionPolicy(keep_last, exponential))
    assert len(plan.keep) + len(plan.delete) == len(m.backups)
    newest = m.newest_verified_full()
    kept = {e.id for e in plan.keep}
    if newest is not None:
        assert newest.id in kept
        assert all(d.id in kept for d in m.dependents(newest.id))
    # a kept delta's full is kept
    for e in plan.keep:
        if e.kind == KIND_DELTA and e.verified:
            assert e.base in kept
