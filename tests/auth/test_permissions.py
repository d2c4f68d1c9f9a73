"""raftkv.auth.permissions: etcd's key-range rules, checked against etcd's own test tables
(server/auth/range_perm_cache_test.go) and against a brute-force model of interval coverage."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from raftkv.auth.permissions import (
    Grant,
    Interval,
    PermType,
    RangePermissions,
    interval_of,
    is_open_ended,
    is_permitted,
    is_valid_permission_range,
)

R, W, RW = PermType.READ, PermType.WRITE, PermType.READWRITE
OPEN = b"\x00"


def reads(*ranges: tuple[bytes, bytes]) -> list[Grant]:
    return [Grant(R, key, end) for key, end in ranges]


# etcd's TestRangePermission: (granted intervals, begin, end, want); an end of b"" in etcd's
# table is its affine +inf, which a request and a grant both spell b"\x00".
RANGE_CASES = [
    ([(b"a", b"c"), (b"x", b"z")], b"a", b"z", False),
    ([(b"a", b"f"), (b"c", b"d"), (b"f", b"z")], b"a", b"z", True),
    ([(b"a", b"d"), (b"a", b"b"), (b"c", b"f")], b"a", b"f", True),
    ([(b"a", b"d"), (b"a", b"b"), (b"c", b"f")], b"a", OPEN, False),
    ([(b"a", OPEN)], b"a", OPEN, True),
    ([(b"\x00", OPEN)], b"a", OPEN, True),
    ([(b"\x00", OPEN)], b"\x00", OPEN, True),
]


@pytest.mark.parametrize(("granted", "key", "end", "want"), RANGE_CASES)
def test_etcd_range_permission_table(
    granted: list[tuple[bytes, bytes]], key: bytes, end: bytes, want: bool
) -> None:
    assert is_permitted(reads(*granted), key, end, R) is want


# etcd's TestKeyPermission: (granted intervals, key, want).
KEY_CASES = [
    ([(b"a", b"c"), (b"x", b"z")], b"f", False),
    ([(b"a", b"f"), (b"c", b"d"), (b"f", b"z")], b"b", True),
    ([(b"a", b"d"), (b"a", b"b"), (b"c", b"f")], b"d", True),
    ([(b"a", b"d"), (b"a", b"b"), (b"c", b"f")], b"f", False),
    ([(b"a", b"d"), (b"a", b"b"), (b"c", OPEN)], b"f", True),
    ([(b"a", b"d"), (b"a", b"b"), (b"\x00", OPEN)], b"f", True),
]


@pytest.mark.parametrize(("granted", "key", "want"), KEY_CASES)
def test_etcd_key_permission_table(
    granted: list[tuple[bytes, bytes]], key: bytes, want: bool
) -> None:
    assert is_permitted(reads(*granted), key, b"", R) is want


# etcd's TestRangeCheck (isValidPermissionRange).
VALIDITY_CASES = [
    (b"a", b"", True),
    (b"a", b"b", True),
    (b"a", b"a", False),
    (b"b", b"a", False),
    (b"", b"a", False),
    (b"", b"", False),
    (b"", b"\x00", False),
    (b"\x00", b"", True),
    (b"a", b"\x00", True),
    (b"\x00", b"\x00", True),
]


@pytest.mark.parametrize(("key", "end", "want"), VALIDITY_CASES)
def test_etcd_valid_permission_range_table(key: bytes, end: bytes, want: bool) -> None:
    assert is_valid_permission_range(key, end) is want


def test_open_end_is_one_zero_byte() -> None:
    assert is_open_ended(b"\x00")
    assert not is_open_ended(b"")
    assert not is_open_ended(b"\x00\x00")


def test_single_key_grant_covers_that_key_only() -> None:
    grants = [Grant(R, b"foo", b"")]
    assert is_permitted(grants, b"foo", b"", R)
    assert not is_permitted(grants, b"foo0", b"", R)
    assert not is_permitted(grants, b"fo", b"", R)
    # the range holding only "foo" is covered; one more key is not
    assert is_permitted(grants, b"foo", b"foo\x00", R)
    assert not is_permitted(grants, b"foo", b"foo\x00\x00", R)


def test_prefix_grant() -> None:
    grants = [Grant(RW, b"app/", b"app0")]
    assert is_permitted(grants, b"app/x", b"", W)
    assert is_permitted(grants, b"app/", b"app0", R)
    assert is_permitted(grants, b"app/a", b"app/b", RW)
    assert not is_permitted(grants, b"app/", b"app1", R)
    assert not is_permitted(grants, b"app/", OPEN, R)


def test_adjacent_grants_join_and_types_stay_apart() -> None:
    grants = [Grant(R, b"a", b"b"), Grant(RW, b"b", b"c"), Grant(W, b"c", b"d")]
    assert is_permitted(grants, b"a", b"c", R)
    assert not is_permitted(grants, b"a", b"d", R)
    assert is_permitted(grants, b"b", b"d", W)
    assert not is_permitted(grants, b"a", b"c", W)
    assert is_permitted(grants, b"b", b"c", RW)
    assert not is_permitted(grants, b"a", b"c", RW)


def test_edge_cases_follow_etcd() -> None:
    everything = [Grant(RW, b"\x00", OPEN)]
    # an empty key is never permitted (etcd's affine order puts it after every key)
    assert not is_permitted(everything, b"", b"", R)
    assert not is_permitted(everything, b"", OPEN, R)
    # an empty or reversed request range is permitted when its first key is
    grants = [Grant(R, b"m", b"")]
    assert is_permitted(grants, b"m", b"a", R)
    assert is_permitted(grants, b"m", b"m", R)
    assert not is_permitted(grants, b"n", b"a", R)
    # a stored grant that is not a valid range covers nothing
    assert not is_permitted([Grant(R, b"b", b"a")], b"a", b"", R)
    assert not is_permitted([Grant(R, b"", b"z")], b"a", b"", R)
    assert interval_of(b"b", b"b") is None


# -- against a brute-force model ------------------------------------------------------------

keys = st.binary(max_size=3).map(lambda b: bytes(x % 3 for x in b))  # bytes 0..2: dense overlaps
nonempty_keys = keys.filter(bool)
range_ends = st.one_of(st.just(b""), st.just(OPEN), keys)
grants = st.lists(st.builds(Grant, st.sampled_from([R, W, RW]), keys, range_ends), max_size=8)


def _holds(intervals: list[Interval], point: bytes) -> bool:
    return any(b <= point and (e is None or point < e) for b, e in intervals)


def model(grants: list[Grant], key: bytes, range_end: bytes, want: PermType) -> bool:
    """Coverage checked at every point where it can change: the request's first key and every
    granted interval's end inside the request."""
    if want == RW:
        return model(grants, key, range_end, R) and model(grants, key, range_end, W)
    intervals = [
        iv
        for g in grants
        if g.perm_type in (want, RW)
        for iv in [interval_of(g.key, g.range_end)]
        if iv is not None
    ]
    if not key:
        return False
    end = None if range_end == OPEN else range_end
    if not range_end or (end is not None and end <= key):
        return _holds(intervals, key)
    points = {key} | {e for _b, e in intervals if e is not None and key <= e}
    if end is not None:
        points = {p for p in points if p < end}
    elif any(e is None for _b, e in intervals):
        pass  # an open grant: its end is +inf, every finite point is checked
    else:
        return False  # nothing reaches +inf
    return all(_holds(intervals, p) for p in points)


@settings(max_examples=800, deadline=None)
@given(grants, keys, range_ends, st.sampled_from([R, W, RW]))
def test_matches_brute_force_model(
    granted: list[Grant], key: bytes, range_end: bytes, want: PermType
) -> None:
    assert is_permitted(granted, key, range_end, want) is model(granted, key, range_end, want)


@settings(max_examples=300, deadline=None)
@given(grants, nonempty_keys, range_ends, st.sampled_from([R, W]))
def test_order_of_grants_does_not_matter(
    granted: list[Grant], key: bytes, range_end: bytes, want: PermType
) -> None:
    forward = RangePermissions(granted).is_permitted(key, range_end, want)
    assert RangePermissions(reversed(granted)).is_permitted(key, range_end, want) is forward


@settings(max_examples=300, deadline=None)
@given(grants, nonempty_keys, keys, st.sampled_from([R, W]))
def test_a_covered_range_covers_each_of_its_keys(
    granted: list[Grant], key: bytes, other: bytes, want: PermType
) -> None:
    lo, hi = sorted((key, other))
    if lo < hi and is_permitted(granted, lo, hi, want):
        assert is_permitted(granted, lo, b"", want)
        for probe in (lo + b"\x00", lo + b"\x02", hi[:-1]):
            if lo <= probe < hi and probe:
                assert is_permitted(granted, probe, b"", want)
