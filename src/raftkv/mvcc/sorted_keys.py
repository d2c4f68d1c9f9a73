"""A sorted set of byte strings with cheap inserts at a million entries.

Owns: the ordering of user keys for range scans.  A flat list with
``bisect.insort`` costs O(n) per insert (a memmove of n pointers); this keeps
the keys in sorted chunks of at most ``2 * load`` entries with a list of chunk
maxima, so an insert or removal moves at most one chunk (O(load)) plus, rarely,
splits or drops a chunk (O(n / load)).

Contracts: elements are unique; ``irange(lo, hi)`` yields elements with
``lo <= x < hi`` (no upper bound when ``hi`` is None) in ascending order and
must not be interleaved with mutations of the set.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Iterator

DEFAULT_LOAD = 1000


class SortedKeys:
    def __init__(self, keys: Iterable[bytes] = (), load: int = DEFAULT_LOAD) -> None:
        if load < 4:
            raise ValueError("load must be >= 4")
        self._load = load
        self._chunks: list[list[bytes]] = []
        self._maxes: list[bytes] = []
        self._len = 0
        items = sorted(set(keys))
        for i in range(0, len(items), load):
            chunk = items[i : i + load]
            self._chunks.append(chunk)
            self._maxes.append(chunk[-1])
        self._len = len(items)

    def __len__(self) -> int:
        return self._len

    def __contains__(self, key: object) -> bool:
        if not isinstance(key, bytes) or not self._maxes:
            return False
        ci = bisect_left(self._maxes, key)
        if ci == len(self._maxes):
            return False
        chunk = self._chunks[ci]
        i = bisect_left(chunk, key)
        return i < len(chunk) and chunk[i] == key

    def add(self, key: bytes) -> bool:
        """Insert ``key``; False if it was already present."""
        maxes = self._maxes
        if not maxes:
            self._chunks.append([key])
            maxes.append(key)
            self._len = 1
            return True
        ci = bisect_left(maxes, key)
        if ci == len(maxes):
            ci -= 1
            chunk = self._chunks[ci]
            chunk.append(key)
            maxes[ci] = key
        else:
            chunk = self._chunks[ci]
            i = bisect_left(chunk, key)
            if i < len(chunk) and chunk[i] == key:
                return False
            chunk.insert(i, key)
        self._len += 1
        if len(chunk) > 2 * self._load:
            half = len(chunk) >> 1
            tail = chunk[half:]
            del chunk[half:]
            self._chunks.insert(ci + 1, tail)
            maxes[ci] = chunk[-1]
            maxes.insert(ci + 1, tail[-1])
        return True

    def remove(self, key: bytes) -> bool:
        """Remove ``key``; False if it was absent."""
        maxes = self._maxes
        ci = bisect_left(maxes, key)
        if ci == len(maxes):
            return False
        chunk = self._chunks[ci]
        i = bisect_left(chunk, key)
        if i == len(chunk) or chunk[i] != key:
            return False
        del chunk[i]
        self._len -= 1
        if not chunk:
            del self._chunks[ci]
            del maxes[ci]
        elif i == len(chunk):
            maxes[ci] = chunk[-1]
        return True

    def irange(self, lo: bytes, hi: bytes | None = None) -> Iterator[bytes]:
        maxes = self._maxes
        ci = bisect_left(maxes, lo)
        if ci == len(maxes):
            return
        chunks = self._chunks
        i = bisect_left(chunks[ci], lo)
        while ci < len(chunks):
            chunk = chunks[ci]
            if hi is not None and chunk[-1] >= hi:
                end = bisect_left(chunk, hi, lo=i)
                yield from chunk[i:end]
                return
            yield from chunk[i:] if i else chunk
            ci += 1
            i = 0

    def count_range(self, lo: bytes, hi: bytes | None = None) -> int:
        """Number of elements in ``[lo, hi)`` without yielding them (0 if hi <= lo)."""
        upper = self._len if hi is None else self._rank(hi)
        return max(0, upper - self._rank(lo))

    def _rank(self, key: bytes) -> int:
        ci = bisect_left(self._maxes, key)
        if ci == len(self._maxes):
            return self._len
        return sum(len(c) for c in self._chunks[:ci]) + bisect_left(self._chunks[ci], key)

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self._chunks:
            yield from chunk

    def after(self, key: bytes, limit: int) -> list[bytes]:
        """Up to ``limit`` elements strictly greater than ``key`` (compaction cursor)."""
        out: list[bytes] = []
        maxes = self._maxes
        ci = bisect_right(maxes, key)
        while ci < len(maxes) and len(out) < limit:
            chunk = self._chunks[ci]
            i = bisect_right(chunk, key)
            out.extend(chunk[i : i + limit - len(out)])
            ci += 1
        return out
