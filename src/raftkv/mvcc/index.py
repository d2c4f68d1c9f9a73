"""The in-memory key index (etcd's treeIndex): user key -> KeyIndex, in key order.

Owns: the mapping from every user key that has history to its ``KeyIndex``
and the sorted order of those keys for range scans.  Rebuilt from the key
bucket at start-up; never persisted.

Contracts:
- ``end is None`` selects the single key ``key``; ``end == b""`` selects every
  key >= ``key``; otherwise ``[key, end)`` (etcd's ``mkGteRange`` already applied);
- callers serialise mutations with reads (the store's lock).
"""

from __future__ import annotations

from collections.abc import Iterator

from raftkv.mvcc.key_index import KeyIndex
from raftkv.mvcc.sorted_keys import SortedKeys


class TreeIndex:
    def __init__(self) -> None:
        self._by_key: dict[bytes, KeyIndex] = {}
        self._order = SortedKeys()

    def __len__(self) -> int:
        return len(self._by_key)

    def key_index(self, key: bytes) -> KeyIndex | None:
        return self._by_key.get(key)

    def get(self, key: bytes, at_main: int) -> tuple[int, int, int] | None:
        """(modified, created, version) of ``key`` at ``at_main``, or None."""
        ki = self._by_key.get(key)
        if ki is None:
            return None
        return ki.get(at_main)

    def put(self, key: bytes, rev: int) -> None:
        self._key_index(key).put(rev)

    def put_latest(self, key: bytes, rev: int) -> tuple[int, int]:
        """``put`` of a revision above every revision in the index; returns what ``get`` then
        answers for ``key`` at ``rev``'s main revision: (created, version)."""
        ki = self._key_index(key)
        ki.put(rev)
        g = ki.generations[-1]
        return g.created, g.ver

    def _key_index(self, key: bytes) -> KeyIndex:
        """``key``'s index, created (and ordered in) if the key is new."""
        ki = self._by_key.get(key)
        if ki is None:
            ki = KeyIndex(key)
            self._by_key[key] = ki
            self._order.add(key)
        return ki

    def tombstone(self, key: bytes, rev: int) -> bool:
        """Mark ``key`` deleted at ``rev``; False if it is not alive."""
        ki = self._by_key.get(key)
        if ki is None:
            return False
        return ki.tombstone(rev)

    def insert_restored(self, ki: KeyIndex) -> None:
        """Add a key index built during start-up (``rebuild_order`` must follow)."""
        self._by_key[ki.key] = ki

    def rebuild_order(self) -> None:
        self._order = SortedKeys(self._by_key)

    def _visit(self, key: bytes, end: bytes | None) -> Iterator[KeyIndex]:
        if end is None:
            ki = self._by_key.get(key)
            if ki is not None:
                yield ki
            return
        by_key = self._by_key
        for k in self._order.irange(key, end or None):
            yield by_key[k]

    def revisions(
        self, key: bytes, end: bytes | None, at_main: int, limit: int
    ) -> tuple[list[int], int]:
        """Revisions visible at ``at_main`` (at most ``limit`` if > 0) and the total count."""
        revs: list[int] = []
        total = 0
        for ki in self._visit(key, end):
            got = ki.get(at_main)
            if got is None:
                continue
            if limit <= 0 or len(revs) < limit:
                revs.append(got[0])
            total += 1
        return revs, total

    def count_revisions(self, key: bytes, end: bytes | None, at_main: int) -> int:
        return sum(1 for ki in self._visit(key, end) if ki.get(at_main) is not None)

    def range(self, key: bytes, end: bytes | None, at_main: int) -> list[tuple[bytes, int]]:
        """(key, revision) of every key visible at ``at_main``."""
        out: list[tuple[bytes, int]] = []
        for ki in self._visit(key, end):
            got = ki.get(at_main)
            if got is not None:
                out.append((ki.key, got[0]))
        return out

    def keys_after(self, key: bytes | None, limit: int) -> list[bytes]:
        """Up to ``limit`` keys after ``key`` (from the first if None), for chunked walks."""
        if key is None:
            out: list[bytes] = []
            for k in self._order:
                if len(out) >= limit:
                    break
                out.append(k)
            return out
        return self._order.after(key, limit)

    def compact_keys(self, keys: list[bytes], at_main: int, available: set[int]) -> None:
        """Compact the given keys at ``at_main``; drop those left without history."""
        for k in keys:
            ki = self._by_key.get(k)
            if ki is None:
                continue
            ki.compact(at_main, available)
            if ki.is_empty():
                del self._by_key[k]
                self._order.remove(k)

    def compact(self, at_main: int) -> set[int]:
        available: set[int] = set()
        self.compact_keys(list(self._order), at_main, available)
        return available

    def keep(self, at_main: int) -> set[int]:
        available: set[int] = set()
        for k in self._order:
            self._by_key[k].keep(at_main, available)
        return available

    def key_indexes(self) -> Iterator[KeyIndex]:
        """Every key index in key order (for callers that rebuild derived state)."""
        by_key = self._by_key
        for k in self._order:
            yield by_key[k]
