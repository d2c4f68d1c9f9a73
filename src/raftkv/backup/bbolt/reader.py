"""A read-only view of a bbolt database file (see ``layout`` for the format).

Owns: choosing the meta page as bbolt does, B+tree descent and in-order iteration of buckets,
and ``check()``, a full structural walk. The file is memory-mapped and read with
``struct.unpack_from`` at computed offsets; only keys and values handed to the caller are copied.

Contract: every structure is bounds-checked before it is read, so a malformed file raises
``BoltFormatError`` (path, byte offset, reason) and nothing else: no IndexError, struct.error,
RecursionError (walks use explicit stacks) or endless loop (a walk visits each page at most
once and a page reached twice is an error). Misuse (a closed reader, a negative ``length``)
raises ValueError; an unknown bucket raises KeyError; OS errors opening the file propagate.
Nested buckets are read by ``check()``; ``items``, ``get`` and ``count`` skip sub-bucket entries.
"""

from __future__ import annotations

import array
import mmap
import os
import sys
from collections.abc import Iterator
from types import TracebackType
from typing import NamedTuple

from raftkv.backup.bbolt.layout import (
    BRANCH_ELEMENT,
    BRANCH_PAGE,
    BUCKET_HEADER,
    BUCKET_HEADER_SIZE,
    BUCKET_LEAF_FLAG,
    ELEMENT_SIZE,
    FREELIST_COUNT_OVERFLOW,
    FREELIST_PAGE,
    LEAF_ELEMENT,
    LEAF_PAGE,
    MAX_PAGE_SIZE,
    META_SIZE,
    MIN_PAGE_SIZE,
    PAGE_HEADER,
    PAGE_HEADER_SIZE,
    PGID,
    PGID_NO_FREELIST,
    BoltFormatError,
    Meta,
    decode_meta,
    element_array,
    page_flag_name,
)

__all__ = ["BoltFormatError", "BoltReader"]

_REACHABLE = 1
_FREE = 2


class _Page(NamedTuple):
    """A branch or leaf page whose header and element array are known to lie in bounds."""

    base: int  # file offset of the page header
    limit: int  # file offset just past the page's last byte (its overflow pages included)
    pgid: int  # 0 for an inline bucket's page
    flags: int
    nelem: int


class BoltReader:
    """Read-only view of a bbolt file; ``length`` limits the bytes that belong to the database.

    etcd snapshot files carry a 32-byte SHA-256 after the database: pass ``size - 32``. A
    ``length`` beyond the file's size is clipped to it. Use as a context manager or ``close()``.
    ``size`` is the database's size as bbolt's ``Tx.Size`` reports it (high-water mark times
    page size; etcd's ``totalSize``).
    """

    path: str
    page_size: int
    txid: int
    size: int

    def __init__(self, path: str | os.PathLike[str], *, length: int | None = None) -> None:
        self.path = os.fspath(path)
        if length is not None and length < 0:
            raise ValueError(f"length must be >= 0, got {length}")
        with open(self.path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            self._length = size if length is None else min(length, size)
            if self._length < PAGE_HEADER_SIZE + META_SIZE:
                raise BoltFormatError(
                    self.path, 0, f"file of {self._length} bytes is too short for a meta page"
                )
            self._mm: mmap.mmap | None = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        try:
            self._meta, self._meta_offset = self._load_meta()
        except BaseException:
            self.close()
            raise
        self.page_size = self._meta.page_size
        self.txid = self._meta.txid
        self._hwm = self._meta.pgid
        self.size = self._hwm * self.page_size

    # --- lifetime -------------------------------------------------------------------------

    def close(self) -> None:
        if self._mm is not None:
            self._mm.close()
            self._mm = None

    def __enter__(self) -> BoltReader:
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _map(self) -> mmap.mmap:
        if self._mm is None:
            raise ValueError(f"BoltReader({self.path!r}) is closed")
        return self._mm

    def _error(self, offset: int, reason: str) -> BoltFormatError:
        return BoltFormatError(self.path, offset, reason)

    # --- meta -----------------------------------------------------------------------------

    def _meta_at(self, page_offset: int) -> tuple[Meta | None, str]:
        start = page_offset + PAGE_HEADER_SIZE
        if start + META_SIZE > self._length:
            return None, f"meta page at offset {page_offset} is beyond the end of the file"
        raw = self._map()[start : start + META_SIZE]
        meta = decode_meta(raw)
        problem = meta.problem(raw)
        return (None, problem) if problem is not None else (meta, "")

    def _load_meta(self) -> tuple[Meta, int]:
        meta0, why0 = self._meta_at(0)
        page_size = meta0.page_size if meta0 is not None else 0
        if meta0 is None:
            # bbolt's getPageSizeFromSecondMeta: probe for meta 1 at 1 KiB .. 16 MiB.
            pos = MIN_PAGE_SIZE
            while pos <= MAX_PAGE_SIZE and pos + PAGE_HEADER_SIZE + META_SIZE <= self._length:
                probe, _ = self._meta_at(pos)
                if probe is not None and probe.page_size == pos:
                    page_size = pos
                    break
                pos <<= 1
        if page_size == 0:
            raise self._error(0, f"no valid meta page: meta 0: {why0}; no valid meta 1 found")
        candidates: list[tuple[Meta, int]] = []
        for offset in (0, page_size):
            meta, _ = self._meta_at(offset)
            if meta is not None and meta.page_size == page_size:
                candidates.append((meta, offset))
        # bbolt's DB.meta: the valid meta with the higher txid (meta 0 on a tie).
        meta, offset = max(candidates, key=lambda c: (c[0].txid, -c[1]))
        need = meta.pgid * page_size
        if need > self._length:
            raise self._error(
                self._length,
                f"file truncated: the meta at offset {offset} (txid {meta.txid}) names "
                f"{meta.pgid} pages of {page_size} bytes ({need} bytes), the file has "
                f"{self._length}",
            )
        return meta, offset

    # --- pages ----------------------------------------------------------------------------

    def _page_header(self, pgid: int, ref: int) -> tuple[int, int, int, int]:
        """(base, flags, count, overflow) of page ``pgid``, referenced from file offset ``ref``."""
        if not 2 <= pgid < self._hwm:
            raise self._error(ref, f"page id {pgid} outside 2 .. {self._hwm - 1}")
        base = pgid * self.page_size
        own, flags, count, overflow = PAGE_HEADER.unpack_from(self._map(), base)
        if own != pgid:
            raise self._error(base, f"page {pgid}: header names page {own}")
        if pgid + overflow >= self._hwm:
            raise self._error(
                base, f"page {pgid}: {overflow} overflow pages run past high-water mark {self._hwm}"
            )
        return base, flags, count, overflow

    def _node(self, pgid: int, ref: int) -> _Page:
        """The branch or leaf page ``pgid``, referenced from file offset ``ref``."""
        base, flags, count, overflow = self._page_header(pgid, ref)
        if flags != BRANCH_PAGE and flags != LEAF_PAGE:
            raise self._error(
                base, f"page {pgid}: expected a branch or leaf page, found {page_flag_name(flags)}"
            )
        limit = base + (overflow + 1) * self.page_size
        return self._checked(_Page(base, limit, pgid, flags, count))

    def _checked(self, page: _Page) -> _Page:
        if page.base + PAGE_HEADER_SIZE + page.nelem * ELEMENT_SIZE > page.limit:
            raise self._error(page.base, f"{page.nelem} elements overrun the page")
        if page.flags == BRANCH_PAGE and page.nelem == 0:
            raise self._error(page.base, f"page {page.pgid}: empty branch page")
        return page

    def _bucket_root(self, value: int, value_end: int) -> _Page:
        """The root page of the bucket whose header is the value at [value, value_end)."""
        if value_end - value < BUCKET_HEADER_SIZE:
            raise self._error(
                value, f"bucket value of {value_end - value} bytes is shorter than its header"
            )
        root, _sequence = BUCKET_HEADER.unpack_from(self._map(), value)
        if root != 0:
            return self._node(root, value)
        base = value + BUCKET_HEADER_SIZE
        if value_end - base < PAGE_HEADER_SIZE:
            raise self._error(
                value,
                f"inline bucket value of {value_end - value} bytes is shorter than bucket "
                f"header + page header ({BUCKET_HEADER_SIZE + PAGE_HEADER_SIZE})",
            )
        _own, flags, count, _overflow = PAGE_HEADER.unpack_from(self._map(), base)
        if flags != LEAF_PAGE:
            raise self._error(base, f"inline bucket page is a {page_flag_name(flags)} page")
        return self._checked(_Page(base, value_end, 0, flags, count))

    def _root_page(self) -> _Page:
        return self._node(self._meta.root, self._meta_offset + PAGE_HEADER_SIZE + 16)

    def _leaf(self, page: _Page, i: int) -> tuple[int, int, int, int]:
        """(flags, key offset, key end, value end) of leaf element ``i``, bounds-checked."""
        at = page.base + PAGE_HEADER_SIZE + i * ELEMENT_SIZE
        flags, pos, ksize, vsize = LEAF_ELEMENT.unpack_from(self._map(), at)
        key = at + pos
        if key + ksize + vsize > page.limit:
            raise self._error(at, f"leaf element {i}: key/value end outside its page")
        return flags, key, key + ksize, key + ksize + vsize

    def _branch(self, page: _Page, i: int) -> tuple[int, int, int]:
        """(key offset, key end, child pgid) of branch element ``i``, bounds-checked."""
        at = page.base + PAGE_HEADER_SIZE + i * ELEMENT_SIZE
        pos, ksize, child = BRANCH_ELEMENT.unpack_from(self._map(), at)
        key = at + pos
        if key + ksize > page.limit:
            raise self._error(at, f"branch element {i}: key end outside its page")
        return key, key + ksize, child

    def _leaves(self, root: _Page) -> Iterator[_Page]:
        """The leaf pages of the tree under ``root``, in key order; each page at most once."""
        seen: set[int] = set()
        stack: list[tuple[int, int]] = []  # (child pgid, referencing element's offset)
        page: _Page | None = root
        while True:
            if page is None:
                if not stack:
                    return
                pgid, ref = stack.pop()
                if pgid in seen:
                    raise self._error(ref, f"page {pgid} reached twice (a cycle)")
                page = self._node(pgid, ref)
            if page.pgid:
                seen.add(page.pgid)
            if page.flags == LEAF_PAGE:
                yield page
            else:
                for i in range(page.nelem - 1, -1, -1):
                    stack.append((self._branch(page, i)[2], page.base + 16 + i * ELEMENT_SIZE))
            page = None

    def _seek(self, root: _Page, key: bytes) -> tuple[int, int, int] | None:
        """(flags, value offset, value end) of ``key`` in the tree under ``root``, or None."""
        mm = self._map()
        page = root
        seen: set[int] = set()
        while page.flags == BRANCH_PAGE:
            seen.add(page.pgid)
            lo, hi = 0, page.nelem  # find the last element whose key <= key (or element 0)
            while lo < hi:
                mid = (lo + hi) // 2
                k, ke, _ = self._branch(page, mid)
                if mm[k:ke] <= key:
                    lo = mid + 1
                else:
                    hi = mid
            i = max(lo - 1, 0)
            child = self._branch(page, i)[2]
            ref = page.base + PAGE_HEADER_SIZE + i * ELEMENT_SIZE
            if child in seen:
                raise self._error(ref, f"page {child} reached twice (a cycle)")
            page = self._node(child, ref)
        lo, hi = 0, page.nelem
        while lo < hi:
            mid = (lo + hi) // 2
            flags, k, ke, ve = self._leaf(page, mid)
            found = mm[k:ke]
            if found == key:
                return flags, ke, ve
            if found < key:
                lo = mid + 1
            else:
                hi = mid
        return None

    def _bucket(self, name: bytes) -> _Page:
        hit = self._seek(self._root_page(), name)
        if hit is None or not hit[0] & BUCKET_LEAF_FLAG:
            raise KeyError(name)
        return self._bucket_root(hit[1], hit[2])

    # --- public reads ---------------------------------------------------------------------

    def buckets(self) -> list[bytes]:
        """Root-level bucket names, ascending."""
        mm = self._map()
        names = []
        for page in self._leaves(self._root_page()):
            for i in range(page.nelem):
                flags, k, ke, _ = self._leaf(page, i)
                if flags & BUCKET_LEAF_FLAG:
                    names.append(mm[k:ke])
        return names

    def items(self, bucket: bytes) -> Iterator[tuple[bytes, bytes]]:
        """(key, value) of ``bucket`` in key order, sub-buckets skipped; KeyError if unknown."""
        root = self._bucket(bucket)
        return self._items(root)

    def _items(self, root: _Page, *, copy: bool = True) -> Iterator[tuple[bytes, bytes]]:
        """Entries under ``root`` in key order; with ``copy=False`` they are (b"", b"")."""
        empty = (b"", b"")
        for page in self._leaves(root):
            mm = self._map()
            limit = page.limit
            at = page.base + PAGE_HEADER_SIZE
            elements = element_array(page.nelem).unpack_from(mm, at)
            for i in range(0, 4 * page.nelem, 4):
                key = at + elements[i + 1]
                key_end = key + elements[i + 2]
                value_end = key_end + elements[i + 3]
                if value_end > limit:
                    raise self._error(at, f"leaf element {i // 4}: key/value end outside its page")
                if not elements[i] & BUCKET_LEAF_FLAG:
                    yield (mm[key:key_end], mm[key_end:value_end]) if copy else empty
                at += ELEMENT_SIZE

    def get(self, bucket: bytes, key: bytes) -> bytes | None:
        """The value of ``key`` in ``bucket`` (None if absent or a sub-bucket); KeyError if the
        bucket is unknown. A B+tree descent, O(depth * log(page elements))."""
        hit = self._seek(self._bucket(bucket), key)
        if hit is None or hit[0] & BUCKET_LEAF_FLAG:
            return None
        return self._map()[hit[1] : hit[2]]

    def count(self, bucket: bytes) -> int:
        """Number of key/value entries in ``bucket`` (sub-buckets not counted)."""
        n = 0
        for _ in self._items(self._bucket(bucket), copy=False):
            n += 1
        return n

    # --- check ----------------------------------------------------------------------------

    def check(self) -> None:
        """Walk every page reachable from the meta and raise BoltFormatError on the first problem.

        Checks: page ids inside 2 .. high-water mark - 1 and matching their headers; page flags
        as expected (branch/leaf in trees, freelist for the freelist); elements, keys and values
        inside their page, element data after the element array in element order; keys
        non-empty, strictly ascending within a page and within the bounds their parent branch
        sets; every bucket (nested and inline ones too) walked; no page reached twice or both
        reached and free; with a persisted freelist, reachable + free pages are exactly 2 .. hwm-1
        (without one, bbolt treats unreachable pages as free, so that last check is skipped).
        """
        mm = self._map()
        state = bytearray(self._hwm)
        state[0] = state[1] = _REACHABLE
        meta_fields = self._meta_offset + PAGE_HEADER_SIZE
        freelist = self._meta.freelist
        if freelist != PGID_NO_FREELIST:
            self._check_freelist(state, freelist, meta_fields + 32)
        # Buckets to walk: (root page, offset of the reference); trees: (page, lower, upper).
        buckets: list[_Page] = [self._root_page()]
        inline_seen: set[int] = set()
        while buckets:
            tree: list[tuple[_Page, bytes | None, bytes | None]] = [(buckets.pop(), None, None)]
            while tree:
                page, lower, upper = tree.pop()
                if page.pgid:
                    self._mark(state, page)
                elif page.base in inline_seen:
                    raise self._error(page.base, "inline bucket page reached twice")
                else:
                    inline_seen.add(page.base)
                data_floor = page.base + PAGE_HEADER_SIZE + page.nelem * ELEMENT_SIZE
                prev: bytes | None = None
                children: list[tuple[int, int, bytes]] = []
                for i in range(page.nelem):
                    at = page.base + PAGE_HEADER_SIZE + i * ELEMENT_SIZE
                    if page.flags == LEAF_PAGE:
                        flags, k, ke, ve = self._leaf(page, i)
                    else:
                        k, ke, child = self._branch(page, i)
                        flags, ve = 0, ke
                    if k < data_floor:
                        raise self._error(at, f"element {i}: data overlaps earlier page content")
                    data_floor = ve
                    key = mm[k:ke]
                    if not key:
                        raise self._error(at, f"element {i}: empty key")
                    if prev is not None and key <= prev:
                        raise self._error(at, f"element {i}: keys not strictly ascending")
                    if (lower is not None and key < lower) or (upper is not None and key >= upper):
                        raise self._error(at, f"element {i}: key outside its parent's range")
                    prev = key
                    if page.flags == BRANCH_PAGE:
                        children.append((child, at, key))
                    elif flags & BUCKET_LEAF_FLAG:
                        buckets.append(self._bucket_root(ke, ve))
                for j in range(len(children) - 1, -1, -1):
                    child, at, key = children[j]
                    bound = children[j + 1][2] if j + 1 < len(children) else upper
                    if 0 <= child < len(state) and state[child] == _REACHABLE:
                        raise self._error(at, f"page {child} reached twice")
                    tree.append((self._node(child, at), key, bound))
        if freelist != PGID_NO_FREELIST:
            missing = state.find(0, 2)
            if missing != -1:
                raise self._error(
                    missing * self.page_size, f"page {missing} is neither reachable nor free"
                )

    def _mark(self, state: bytearray, page: _Page) -> None:
        span = (page.limit - page.base) // self.page_size
        for pgid in range(page.pgid, page.pgid + span):
            if state[pgid] == _REACHABLE:
                raise self._error(page.base, f"page {pgid} reached twice")
            if state[pgid] == _FREE:
                raise self._error(page.base, f"page {pgid} is both reachable and free")
            state[pgid] = _REACHABLE

    def _check_freelist(self, state: bytearray, pgid: int, ref: int) -> None:
        base, flags, count, overflow = self._page_header(pgid, ref)
        if flags != FREELIST_PAGE:
            raise self._error(
                base, f"page {pgid}: expected freelist, found {page_flag_name(flags)}"
            )
        limit = base + (overflow + 1) * self.page_size
        self._mark(state, _Page(base, limit, pgid, flags, 0))
        for free in self._freelist_ids(base, limit, count):
            if not 2 <= free < self._hwm:
                raise self._error(base, f"free page id {free} outside 2 .. {self._hwm - 1}")
            if state[free]:
                why = "freed twice" if state[free] == _FREE else "both reachable and free"
                raise self._error(base, f"page {free} is {why}")
            state[free] = _FREE

    def _freelist_ids(self, base: int, limit: int, count: int) -> array.array[int]:
        start = base + PAGE_HEADER_SIZE
        if count == FREELIST_COUNT_OVERFLOW:
            if start + PGID.size > limit:
                raise self._error(base, "freelist count overflow word outside the page")
            (count,) = PGID.unpack_from(self._map(), start)
            start += PGID.size
        if start + count * PGID.size > limit:
            raise self._error(base, f"freelist of {count} page ids overruns its page")
        ids = array.array("Q", self._map()[start : start + count * PGID.size])
        if sys.byteorder == "big":
            ids.byteswap()
        return ids
