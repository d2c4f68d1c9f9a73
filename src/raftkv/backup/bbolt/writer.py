"""Writing a complete bbolt database from sorted streams (see ``layout`` for the format).

Owns ``write_bolt``: the file a freshly compacted bbolt database looks like, built bottom-up
in one pass. Page 0 and 1 are the metas, page 2 an empty freelist, pages 3.. the trees, written
in allocation order as they fill; the metas are written last.

Fill: pages are filled the way ``bbolt compact`` fills them (it sets ``FillPercent = 1.0``):
a page takes elements until the next one would push it past ``page_size``, but never has
fewer than two (bbolt's ``MinKeysPerPage``) unless its whole level holds fewer; a page whose
elements exceed ``page_size`` (a large value) continues on overflow pages. The last page of a
level borrows from its neighbour (or merges with it) so that it, too, holds two elements. At most 0xFFFE elements go
in a page. Branch keys are the first key of each child, as bbolt writes them.

Buckets: a bucket whose leaf page (16-byte header + 16 per element + keys + values) fits in
``page_size / 4`` is stored inline in the root bucket's leaf, as bbolt does; larger ones get
their own tree. Bucket sequences are 0.

Memory: items are consumed as a stream; per tree at most two pages of elements per level
are held, plus a quarter page while a bucket may still be inline.
"""

from __future__ import annotations

import io
from collections.abc import Iterable
from typing import BinaryIO

from raftkv.backup.bbolt.layout import (
    BRANCH_PAGE,
    BUCKET_HEADER,
    BUCKET_LEAF_FLAG,
    ELEMENT_SIZE,
    FREELIST_PAGE,
    LEAF_PAGE,
    MAX_KEY_SIZE,
    MAX_PAGE_COUNT,
    MAX_VALUE_SIZE,
    META_PAGE,
    MIN_KEYS_PER_PAGE,
    PAGE_HEADER,
    PAGE_HEADER_SIZE,
    element_array,
    is_valid_page_size,
    make_meta,
    pages_for,
)

__all__ = ["write_bolt"]

_FIRST_DATA_PAGE = 3  # 0, 1: metas; 2: the freelist
_MAX_U64 = 0xFFFF_FFFF_FFFF_FFFF

# An element: (flags, key, value) in a leaf; (child pgid, key, b"") in a branch.
_Element = tuple[int, bytes, bytes]


class _Pages:
    """Allocates page ids in order and writes each page as it is allocated."""

    def __init__(self, f: BinaryIO, page_size: int) -> None:
        self.f = f
        self.page_size = page_size
        self.next_pgid = _FIRST_DATA_PAGE

    def write_node(self, flags: int, elements: list[_Element]) -> int:
        """Write one branch or leaf page (with overflow pages as needed); return its id."""
        pgid = self.next_pgid
        body = encode_node(flags, elements, pgid)
        npages = pages_for(len(body), self.page_size)
        PAGE_HEADER.pack_into(body, 0, pgid, flags, len(elements), npages - 1)
        pad = npages * self.page_size - len(body)
        if pad:
            body += bytes(pad)
        write_all(self.f, body)
        self.next_pgid += npages
        return pgid


def write_all(f: BinaryIO, data: bytes | bytearray) -> None:
    """``f.write`` until all of ``data`` is written (a raw file may take part of it)."""
    view = memoryview(data)
    while view:
        n = f.write(view)
        if n is None or n == len(view):
            return
        view = view[n:]


def encode_node(flags: int, elements: list[_Element], pgid: int = 0) -> bytearray:
    """A page image (header, elements, keys, values), unpadded; header overflow left 0."""
    count = len(elements)
    at = PAGE_HEADER_SIZE + count * ELEMENT_SIZE
    header: list[int] = []
    data: list[bytes] = []
    pos = at - PAGE_HEADER_SIZE  # element i's data offset relative to element i
    if flags == LEAF_PAGE:
        for eflags, key, value in elements:
            header += (eflags, pos, len(key), len(value))
            data += (key, value)
            pos += len(key) + len(value) - ELEMENT_SIZE
    else:
        for child, key, _ in elements:
            header += (pos, len(key), child & 0xFFFF_FFFF, child >> 32)
            data.append(key)
            pos += len(key) - ELEMENT_SIZE
    blob = b"".join(data)
    body = bytearray(at + len(blob))
    PAGE_HEADER.pack_into(body, 0, pgid, flags, count, 0)
    if count:
        element_array(count).pack_into(body, PAGE_HEADER_SIZE, *header)
    body[at:] = blob
    return body


class _Level:
    """One level of a tree under construction: the page being filled and the one before it."""

    def __init__(self, flags: int) -> None:
        self.flags = flags
        self.prev: list[_Element] | None = None  # closed, not yet written (see finish)
        self.cur: list[_Element] = []
        self.cur_size = PAGE_HEADER_SIZE
        self.written = 0


class _TreeBuilder:
    """Builds one B+tree bottom-up from elements given in strictly ascending key order."""

    def __init__(self, pages: _Pages) -> None:
        self.pages = pages
        self.levels: list[_Level] = [_Level(LEAF_PAGE)]

    def add(self, depth: int, element: _Element) -> None:
        level = self.levels[depth]
        size = ELEMENT_SIZE + len(element[1]) + len(element[2])
        n = len(level.cur)
        if n >= MIN_KEYS_PER_PAGE and (
            level.cur_size + size > self.pages.page_size or n >= MAX_PAGE_COUNT
        ):
            if level.prev is not None:
                self._emit(depth, level.prev)
            level.prev, level.cur, level.cur_size = level.cur, [], PAGE_HEADER_SIZE
        level.cur.append(element)
        level.cur_size += size

    def _emit(self, depth: int, elements: list[_Element]) -> None:
        level = self.levels[depth]
        pgid = self.pages.write_node(level.flags, elements)
        level.written += 1
        if depth + 1 == len(self.levels):
            self.levels.append(_Level(BRANCH_PAGE))
        self.add(depth + 1, (pgid, elements[0][1], b""))

    def finish(self) -> int:
        """Write what is left, level by level; return the root page id."""
        depth = 0
        while True:
            level = self.levels[depth]
            prev, cur = level.prev, level.cur
            if prev is not None and len(cur) < MIN_KEYS_PER_PAGE:
                if len(prev) > MIN_KEYS_PER_PAGE:
                    cur.insert(0, prev.pop())
                else:
                    cur = prev + cur
                    prev = None
            if level.written == 0 and prev is None:  # the level is one page: the root
                return self.pages.write_node(level.flags, cur)
            if prev is not None:
                self._emit(depth, prev)
            self._emit(depth, cur)
            level.prev, level.cur = None, []
            depth += 1


class _BucketWriter:
    """Consumes one bucket's items; stays inline while its leaf fits in page_size / 4."""

    def __init__(self, pages: _Pages) -> None:
        self.pages = pages
        self.inline_limit = pages.page_size // 4
        self.buffered: list[_Element] | None = []
        self.size = PAGE_HEADER_SIZE
        self.tree: _TreeBuilder | None = None

    def add(self, key: bytes, value: bytes) -> None:
        element = (0, key, value)
        if self.buffered is None:
            assert self.tree is not None
            self.tree.add(0, element)
            return
        self.buffered.append(element)
        self.size += ELEMENT_SIZE + len(key) + len(value)
        if self.size > self.inline_limit or len(self.buffered) > MAX_PAGE_COUNT:
            self.tree = _TreeBuilder(self.pages)
            for buffered in self.buffered:
                self.tree.add(0, buffered)
            self.buffered = None

    def value(self) -> bytes:
        """The bucket's value in its parent: a header, and for an inline bucket its page."""
        if self.buffered is not None:
            return BUCKET_HEADER.pack(0, 0) + encode_node(LEAF_PAGE, self.buffered)
        assert self.tree is not None
        return BUCKET_HEADER.pack(self.tree.finish(), 0)


def _check_key(what: str, key: bytes, prev: bytes | None) -> None:
    if not key:
        raise ValueError(f"{what}: empty key")
    if len(key) > MAX_KEY_SIZE:
        raise ValueError(f"{what}: key of {len(key)} bytes exceeds bbolt's {MAX_KEY_SIZE}")
    if prev is not None and key <= prev:
        raise ValueError(f"{what}: keys not strictly ascending: {key[:64]!r} after {prev[:64]!r}")


def write_bolt(
    f: BinaryIO,
    buckets: Iterable[tuple[bytes, Iterable[tuple[bytes, bytes]]]],
    *,
    page_size: int = 4096,
    txid: int = 2,
) -> int:
    """Write a complete bbolt database holding root-level ``buckets`` (name, items).

    ``f`` must be seekable, writable, empty and positioned at 0; on return it is positioned at
    the end of the database (so a caller can append etcd's SHA-256 trailer). Returns the bytes
    written, a multiple of ``page_size``. Bucket names must be strictly ascending and non-empty,
    each bucket's keys too (ValueError otherwise; the file's content is then unspecified).
    Items are consumed as streams; memory stays bounded by a few pages per tree level. Metas:
    transaction ``txid`` on page ``txid % 2``, ``txid - 1`` on the other, both valid. Does not
    fsync; the caller owns durability.
    """
    if not is_valid_page_size(page_size):
        raise ValueError(f"page_size {page_size} is not a power of two in 1 KiB .. 16 MiB")
    if not 1 <= txid <= _MAX_U64:
        raise ValueError(f"txid {txid} outside 1 .. 2**64-1")
    if f.tell() != 0:
        raise ValueError("write_bolt needs a file positioned at offset 0")
    pages = _Pages(f, page_size)
    head = bytearray(3 * page_size)  # the metas (written last), then the empty freelist
    PAGE_HEADER.pack_into(head, 2 * page_size, 2, FREELIST_PAGE, 0, 0)
    write_all(f, head)

    root = _TreeBuilder(pages)
    prev_name: bytes | None = None
    for name, items in buckets:
        _check_key("bucket names", name, prev_name)
        prev_name = name
        bucket = _BucketWriter(pages)
        prev_key: bytes | None = None
        for key, value in items:
            _check_key(f"bucket {name[:64]!r}", key, prev_key)
            if len(value) > MAX_VALUE_SIZE:
                raise ValueError(f"value of {len(value)} bytes exceeds bbolt's {MAX_VALUE_SIZE}")
            prev_key = key
            bucket.add(key, value)
        root.add(0, (BUCKET_LEAF_FLAG, name, bucket.value()))
    root_pgid = root.finish()

    hwm = pages.next_pgid
    for t in (txid - 1, txid):
        meta = make_meta(page_size=page_size, root=root_pgid, freelist=2, pgid=hwm, txid=t)
        f.seek((t % 2) * page_size)
        write_all(f, PAGE_HEADER.pack(t % 2, META_PAGE, 0, 0) + meta.pack())
    f.seek(hwm * page_size, io.SEEK_SET)
    return hwm * page_size
