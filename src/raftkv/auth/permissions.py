"""etcd's key-range permissions: which ranges a role may grant, and whether a request's keys are
covered by the ranges a user holds (etcd's ``server/auth/range_perm_cache.go``).

Owns the interval semantics, as pure functions over bytes.  Keys are ordered bytewise, and a
granted permission ``(key, range_end)`` stands for the half-open interval:

- ``range_end == b""``: the single key ``key``, i.e. ``[key, key + b"\\x00")``;
- ``range_end == b"\\x00"``: every key from ``key`` on, ``[key, +inf)`` (so ``(b"\\x00",
  b"\\x00")`` is every key);
- otherwise ``[key, range_end)``, which must not be empty (``key < range_end``).

``is_valid_permission_range`` is etcd's ``isValidPermissionRange`` (a grant it refuses is
etcd's ``ErrInvalidAuthMgmt``).  A stored permission that is not valid (written by an older
etcd) covers nothing.

A request asks for one key (``range_end == b""``: a put, a single-key get or delete), a range
``[key, range_end)`` or everything from ``key`` on (``range_end == b"\\x00"``).  It is permitted
when the union of the user's granted intervals of its type covers every key it names; a
READWRITE grant counts as both READ and WRITE.  As in etcd's interval tree, adjacent grants
join (``[a, b)`` and ``[b, c)`` cover ``[a, c)``).  Two edge cases follow etcd's behaviour:
an empty key is never permitted (etcd's affine order puts it after every key), and a request
range that is empty or reversed (``range_end <= key``) is permitted when its first key is.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable
from enum import IntEnum
from typing import NamedTuple

OPEN_END = b"\x00"
"""The ``range_end`` that means "to the end of the key space"."""


class PermType(IntEnum):
    """``authpb.Permission.Type``: the values stored in ``Permission.permType``."""

    READ = 0
    WRITE = 1
    READWRITE = 2


class Grant(NamedTuple):
    """One granted permission, as ``authpb.Permission`` holds it."""

    perm_type: int
    key: bytes
    range_end: bytes


Interval = tuple[bytes, bytes | None]
"""``[begin, end)``; an ``end`` of None is +inf."""


def is_open_ended(range_end: bytes) -> bool:
    """Whether ``range_end`` is etcd's "every key from ``key`` on" (rule b3)."""
    return range_end == OPEN_END


def is_valid_permission_range(key: bytes, range_end: bytes) -> bool:
    """etcd's ``isValidPermissionRange``: a non-empty key and a single key, a non-empty range
    or an open end."""
    if not key:
        return False
    return not range_end or key < range_end or is_open_ended(range_end)


def interval_of(key: bytes, range_end: bytes) -> Interval | None:
    """The interval a granted ``(key, range_end)`` covers; None when it covers nothing."""
    if not key:
        return None
    if not range_end:
        return key, key + b"\x00"
    if is_open_ended(range_end):
        return key, None
    if key < range_end:
        return key, range_end
    return None


def _counts_as(granted: int, wanted: PermType) -> bool:
    return granted == wanted or granted == PermType.READWRITE


class _Merged:
    """Disjoint, non-adjacent intervals sorted by begin: the union of some grants."""

    __slots__ = ("_begins", "_ends")

    def __init__(self, intervals: Iterable[Interval]) -> None:
        begins: list[bytes] = []
        ends: list[bytes | None] = []
        for begin, end in sorted(intervals, key=lambda iv: iv[0]):
            if ends:
                last = ends[-1]
                if last is None:
                    break  # the last merged interval already reaches +inf
                if begin <= last:  # overlapping or adjacent: extend
                    if end is None or end > last:
                        ends[-1] = end
                    continue
            begins.append(begin)
            ends.append(end)
        self._begins = begins
        self._ends = ends

    def _end_of_interval_holding(self, key: bytes) -> tuple[bool, bytes | None]:
        """(whether some interval holds ``key``, that interval's end)."""
        i = bisect_right(self._begins, key) - 1
        if i < 0:
            return False, None
        end = self._ends[i]
        return end is None or key < end, end

    def covers_key(self, key: bytes) -> bool:
        return self._end_of_interval_holding(key)[0]

    def covers(self, begin: bytes, end: bytes | None) -> bool:
        """Whether ``[begin, end)`` (``end`` None: +inf; ``begin < end``) is covered."""
        held, upto = self._end_of_interval_holding(begin)
        if not held:
            return False
        if upto is None:
            return True
        return end is not None and end <= upto


class RangePermissions:
    """The merged READ and WRITE intervals of one user (etcd's ``unifiedRangePermissions``),
    built once from all the grants of all the user's roles, then queried."""

    __slots__ = ("_read", "_write")

    def __init__(self, grants: Iterable[Grant]) -> None:
        read: list[Interval] = []
        write: list[Interval] = []
        for grant in grants:
            iv = interval_of(grant.key, grant.range_end)
            if iv is None:
                continue
            if _counts_as(grant.perm_type, PermType.READ):
                read.append(iv)
            if _counts_as(grant.perm_type, PermType.WRITE):
                write.append(iv)
        self._read = _Merged(read)
        self._write = _Merged(write)

    def is_permitted(self, key: bytes, range_end: bytes, perm_type: PermType) -> bool:
        """Whether a request of ``perm_type`` on ``(key, range_end)`` is covered (READWRITE:
        covered for READ and for WRITE)."""
        if perm_type == PermType.READWRITE:
            return self._check(self._read, key, range_end) and self._check(
                self._write, key, range_end
            )
        merged = self._read if perm_type == PermType.READ else self._write
        return self._check(merged, key, range_end)

    @staticmethod
    def _check(merged: _Merged, key: bytes, range_end: bytes) -> bool:
        if not key:
            return False
        if not range_end:
            return merged.covers_key(key)
        end = None if is_open_ended(range_end) else range_end
        if end is not None and end <= key:
            return merged.covers_key(key)
        return merged.covers(key, end)


def is_permitted(
    grants: Iterable[Grant], key: bytes, range_end: bytes, perm_type: PermType
) -> bool:
    """Whether ``grants`` (all the permissions of all of a user's roles) cover a request of
    ``perm_type`` on ``(key, range_end)``; see the module docstring."""
    return RangePermissions(grants).is_permitted(key, range_end, perm_type)
