"""The bbolt on-disk layout: constants, structs and the checked decoders both sides share.

bbolt (go.etcd.io/bbolt, the B+tree file etcd's backend and ``etcdctl snapshot save`` use) writes
its in-memory structs straight to disk, so the layout is the Go struct layout of the writing
machine. Every bbolt file etcd ships comes from a little-endian 64-bit machine (amd64, arm64);
this module reads and writes **little-endian** files only (a big-endian file fails the magic
check). Facts below were taken from bbolt's ``internal/common`` (page.go, meta.go, bucket.go),
``node.go``, ``bucket.go`` and ``internal/freelist``.

Pages
    The file is an array of pages of ``page_size`` bytes (a power of two; the OS page size when
    the file was created, 4096 almost always). Page ``n`` starts at byte ``n * page_size``.
    Every page starts with a 16-byte header::

        id u64 | flags u16 | count u16 | overflow u32

    ``flags`` is exactly one of branch 0x01, leaf 0x02, meta 0x04, freelist 0x10. A page whose
    content does not fit in one page continues over ``overflow`` following pages (only the first
    carries a header; pages ``id .. id + overflow`` belong to it). ``id`` repeats the page's own
    number (bbolt asserts it when it reads a page).

Meta pages (pages 0 and 1)
    After the page header, a 64-byte meta::

        magic u32 = 0xED0CDAED | version u32 = 2 | page_size u32 | flags u32 |
        root bucket header (root pgid u64, sequence u64) | freelist pgid u64 |
        pgid u64 (high-water mark: pages 0 .. pgid-1 exist) | txid u64 | checksum u64

    ``checksum`` is FNV-1a 64 over the first 56 bytes of the meta (every field before it).
    A commit writes the meta with transaction id ``t`` to page ``t % 2``, so the two metas
    alternate; a reader uses the valid meta with the higher txid, and falls back to the other
    one when that is torn (bbolt's ``DB.meta``). ``freelist`` is 2**64-1 when the free list is
    not persisted (``NoFreelistSync``); then the free pages are exactly the unreachable ones.
    The page size is read from meta 0; when meta 0 is invalid bbolt probes for meta 1 at
    ``1024 << i`` (i = 0..14), which this module does too.

Branch and leaf pages
    ``count`` elements follow the header, then the keys and values they point to. A branch
    element is 16 bytes ``pos u32 | ksize u32 | pgid u64`` (a child page and the first key of
    that child); a leaf element is 16 bytes ``flags u32 | pos u32 | ksize u32 | vsize u32``.
    ``pos`` is relative to the element's own offset: element ``i`` sits at ``16 + 16 * i`` in
    the page and its key at ``16 + 16 * i + pos``, its value right after the key. Keys in a page
    are strictly ascending and non-empty; a branch key is the first key of its child subtree,
    and every key of child ``i`` is ``>= key[i]`` and ``< key[i + 1]``.

Buckets
    The meta's root bucket holds the top-level buckets. A leaf element with flag 0x01 is a
    (sub-)bucket; its value starts with a 16-byte bucket header ``root pgid u64 | sequence u64``.
    When ``root`` is 0 the bucket is *inline*: a complete leaf page (header with id 0, then the
    elements, keys, values) follows the header inside the value. bbolt stores a bucket inline
    when it has no sub-buckets and its leaf page (16-byte header + 16 per element + keys +
    values) is at most ``page_size / 4``; otherwise ``root`` names the bucket's root page.

Freelist page
    ``flags`` 0x10; ``count`` page ids (u64 each) follow the header. When there are 0xFFFF or
    more ids, ``count`` is 0xFFFF and the first u64 holds the real count, the ids follow it.
    Like any page it may overflow onto following pages.

Limits (bbolt's): keys 1 .. 32768 bytes, values up to 2**31 - 2 bytes, at most 0xFFFE elements
in a page.
"""

from __future__ import annotations

import functools
import struct
from typing import Final, NamedTuple

MAGIC: Final = 0xED0CDAED
VERSION: Final = 2

BRANCH_PAGE: Final = 0x01
LEAF_PAGE: Final = 0x02
META_PAGE: Final = 0x04
FREELIST_PAGE: Final = 0x10
PAGE_FLAG_NAMES: Final = {
    BRANCH_PAGE: "branch",
    LEAF_PAGE: "leaf",
    META_PAGE: "meta",
    FREELIST_PAGE: "freelist",
}

BUCKET_LEAF_FLAG: Final = 0x01
PGID_NO_FREELIST: Final = 0xFFFF_FFFF_FFFF_FFFF
FREELIST_COUNT_OVERFLOW: Final = 0xFFFF
MAX_PAGE_COUNT: Final = 0xFFFE

MIN_PAGE_SIZE: Final = 1024
MAX_PAGE_SIZE: Final = 1024 << 14
MAX_KEY_SIZE: Final = 32768
MAX_VALUE_SIZE: Final = (1 << 31) - 2
MIN_KEYS_PER_PAGE: Final = 2

PAGE_HEADER: Final = struct.Struct("<QHHI")  # id, flags, count, overflow
BRANCH_ELEMENT: Final = struct.Struct("<IIQ")  # pos, ksize, pgid
LEAF_ELEMENT: Final = struct.Struct("<IIII")  # flags, pos, ksize, vsize
BUCKET_HEADER: Final = struct.Struct("<QQ")  # root pgid, sequence
META: Final = struct.Struct("<IIIIQQQQQQ")
PGID: Final = struct.Struct("<Q")

PAGE_HEADER_SIZE: Final = PAGE_HEADER.size
ELEMENT_SIZE: Final = 16  # both element kinds
BUCKET_HEADER_SIZE: Final = BUCKET_HEADER.size
META_SIZE: Final = META.size
META_CHECKSUM_SPAN: Final = META_SIZE - 8

FNV64_OFFSET: Final = 0xCBF29CE484222325
FNV64_PRIME: Final = 0x100000001B3
_U64: Final = 0xFFFF_FFFF_FFFF_FFFF

assert PAGE_HEADER_SIZE == 16 and BRANCH_ELEMENT.size == 16 and LEAF_ELEMENT.size == 16
assert META_SIZE == 64 and BUCKET_HEADER_SIZE == 16


class FileFormatError(Exception):
    """A file is not what its decoder reads: ``path`` names it, ``offset`` is the byte offset
    of the bad structure in it, ``reason`` says what is wrong.  The base of the one documented
    error of each backup file decoder (bbolt databases, deltas)."""

    def __init__(self, path: str, offset: int, reason: str) -> None:
        super().__init__(path, offset, reason)
        self.path = path
        self.offset = offset
        self.reason = reason

    def __str__(self) -> str:
        return f"{self.path}: offset {self.offset}: {self.reason}"


class BoltFormatError(FileFormatError):
    """The one documented error of the reader: the file is not a valid bbolt database (the
    offset is that of a page header, an element or a value)."""


def fnv1a64(data: bytes) -> int:
    """FNV-1a 64 of ``data`` (Go's ``hash/fnv.New64a``)."""
    h = FNV64_OFFSET
    for byte in data:
        h = ((h ^ byte) * FNV64_PRIME) & _U64
    return h


def is_valid_page_size(page_size: int) -> bool:
    """Page sizes this module accepts: powers of two from 1 KiB to 16 MiB (bbolt's probe range)."""
    return MIN_PAGE_SIZE <= page_size <= MAX_PAGE_SIZE and page_size & (page_size - 1) == 0


class Meta(NamedTuple):
    """A decoded meta (the 64 bytes after a meta page's header)."""

    magic: int
    version: int
    page_size: int
    flags: int
    root: int
    sequence: int
    freelist: int
    pgid: int
    txid: int
    checksum: int

    def pack(self) -> bytes:
        """The 64 meta bytes with ``checksum`` recomputed over the other fields."""
        head = META.pack(*self[:-1], 0)[:META_CHECKSUM_SPAN]
        return head + PGID.pack(fnv1a64(head))

    def problem(self, raw: bytes) -> str | None:
        """Why this meta (decoded from the 64 bytes ``raw``) is unusable, or None when valid.

        bbolt checks magic, version and checksum; the range checks after those catch a meta
        whose checksum happens to match but whose pointers cannot be right.
        """
        if self.magic != MAGIC:
            return f"bad magic {self.magic:#010x} (want {MAGIC:#010x})"
        if self.version != VERSION:
            return f"unsupported version {self.version} (want {VERSION})"
        want = fnv1a64(raw[:META_CHECKSUM_SPAN])
        if self.checksum != want:
            return f"meta checksum {self.checksum:#018x} != computed {want:#018x}"
        if not is_valid_page_size(self.page_size):
            return f"page size {self.page_size} is not a power of two in 1 KiB .. 16 MiB"
        if self.pgid < 3:
            return f"high-water mark {self.pgid} leaves no room for a root page"
        if not 2 <= self.root < self.pgid:
            return f"root bucket page {self.root} outside 2 .. {self.pgid - 1}"
        if self.freelist != PGID_NO_FREELIST and not 2 <= self.freelist < self.pgid:
            return f"freelist page {self.freelist} outside 2 .. {self.pgid - 1}"
        return None


def decode_meta(raw: bytes) -> Meta:
    """Decode 64 meta bytes (no validation; see ``Meta.problem``)."""
    return Meta._make(META.unpack(raw))


def make_meta(*, page_size: int, root: int, freelist: int, pgid: int, txid: int) -> Meta:
    """A meta with magic, version and a checksum filled in."""
    partial = Meta(MAGIC, VERSION, page_size, 0, root, 0, freelist, pgid, txid, 0)
    raw = partial.pack()
    return decode_meta(raw)


@functools.lru_cache(maxsize=4096)
def element_array(count: int) -> struct.Struct:
    """A struct reading ``count`` 16-byte elements as 4 * count u32 (leaf) values at once."""
    return struct.Struct(f"<{4 * count}I")


@functools.lru_cache(maxsize=4096)
def pgid_array(count: int) -> struct.Struct:
    """A struct reading ``count`` u64 page ids."""
    return struct.Struct(f"<{count}Q")


def page_flag_name(flags: int) -> str:
    return PAGE_FLAG_NAMES.get(flags, f"unknown<{flags:#06x}>")


def pages_for(size: int, page_size: int) -> int:
    """Pages needed to hold ``size`` bytes (at least one)."""
    return max(1, -(-size // page_size))
