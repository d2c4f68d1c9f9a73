"""Corrupted bbolt files: BoltReader either reads them or raises BoltFormatError, nothing else.

Hypothesis flips bytes, writes boundary values into page headers and elements, zeroes pages
and truncates a file write_bolt produced (optionally re-sealing the metas' checksums so that
corrupted meta fields get past the checksum), then opens, checks and reads everything. A file
that passes check() must also read consistently. Targeted cases pin each kind of damage to the
error and offset it must produce, and the meta fallback bbolt performs.
"""

from __future__ import annotations

import functools
import random
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from raftkv.backup.bbolt import BoltFormatError, BoltReader, write_bolt
from raftkv.backup.bbolt.layout import (
    BRANCH_ELEMENT,
    BRANCH_PAGE,
    BUCKET_HEADER,
    FREELIST_PAGE,
    LEAF_ELEMENT,
    PAGE_HEADER,
    PGID,
    decode_meta,
)

Buckets = list[tuple[bytes, list[tuple[bytes, bytes]]]]


def _buckets(seed: int, n_big: int) -> Buckets:
    rng = random.Random(seed)
    big = sorted({rng.randbytes(rng.randint(1, 40)) for _ in range(n_big)})
    revs = [(i.to_bytes(8, "big") + b"_" + bytes(8), rng.randbytes(90)) for i in range(1, 200)]
    return [
        (
            b"big",
            [
                (k, rng.randbytes(5000 if i % 97 == 0 else rng.randint(0, 200)))
                for i, k in enumerate(big)
            ],
        ),
        (b"empty", []),
        (b"inline", [(b"a", b"1"), (b"b", b"2")]),
        (b"key", revs),
    ]


@functools.cache
def _image(page_size: int) -> bytes:
    with tempfile.TemporaryFile() as f:
        n = write_bolt(f, _buckets(page_size, 600), page_size=page_size)
        f.seek(0)
        return f.read(n)


def _reseal(image: bytearray, **fields: int) -> None:
    """Set meta fields on both metas (those that fit) and recompute their checksums."""
    ps = decode_meta(bytes(image[16:80])).page_size
    for base in (0, ps):
        if base + 80 > len(image):
            continue
        meta = decode_meta(bytes(image[base + 16 : base + 80]))._replace(**fields)
        image[base + 16 : base + 80] = meta.pack()


def _exercise(path: Path, names: list[bytes]) -> None:
    """Open, check and read everything; only BoltFormatError may escape any step."""
    size = path.stat().st_size
    try:
        reader = BoltReader(path)
    except BoltFormatError as e:
        assert e.path == str(path) and 0 <= e.offset <= size and str(e).startswith(str(path))
        event("open raised")
        return
    with reader as r:
        try:
            r.check()
            checked = True
        except BoltFormatError as e:
            assert 0 <= e.offset <= size
            checked = False
        event("check passed" if checked else "check raised")
        try:
            listed = r.buckets()
        except BoltFormatError:
            listed = []
        if checked:
            assert listed == sorted(set(listed))
        for name in sorted({*listed, *names}):
            try:
                items = list(r.items(name))
                count = r.count(name)
                sample = items[:: max(1, len(items) // 16)]
                got = [r.get(name, k) for k, _ in sample]
            except BoltFormatError as e:
                assert 0 <= e.offset <= size
                continue
            except KeyError:
                # Only check() vouches that every listed bucket can be found by descent.
                assert not (checked and name in listed)
                continue
            if checked:
                keys = [k for k, _ in items]
                assert count == len(items) and keys == sorted(set(keys))
                assert got == [v for _, v in sample]


_POS_KINDS = ["flip", "u16", "u32", "u64", "zero", "truncate"]


@st.composite
def damaged(draw: st.DrawFn, page_size: int) -> tuple[bytes, bool]:
    image = bytearray(_image(page_size))
    npages = len(image) // page_size
    anywhere = st.integers(0, len(image) - 1)
    structural = st.builds(
        lambda p, o: p * page_size + o, st.integers(0, npages - 1), st.integers(0, 127)
    )
    positions = st.one_of(structural, anywhere)
    values = {
        "flip": st.integers(1, 255),
        "u16": st.sampled_from([0, 1, 2, 4, 0x10, 0xFFFE, 0xFFFF]),
        "u32": st.sampled_from([0, 1, 16, page_size - 1, page_size, 2**31, 2**32 - 1]),
        "u64": st.sampled_from([0, 1, 2, 3, npages - 1, npages, npages + 1, 2**32, 2**64 - 1]),
    }
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(_POS_KINDS))
        if kind == "zero":
            page = draw(st.integers(0, npages - 1))
            image[page * page_size : (page + 1) * page_size] = bytes(page_size)
        elif kind == "truncate":
            del image[draw(st.integers(0, len(image))) :]
        else:
            pos = draw(positions)
            value = draw(values[kind])
            if kind == "flip":
                if pos < len(image):
                    image[pos] ^= value
            else:
                width = {"u16": 2, "u32": 4, "u64": 8}[kind]
                if pos + width <= len(image):
                    image[pos : pos + width] = value.to_bytes(width, "little")
    reseal = draw(st.booleans())
    if reseal and len(image) >= 80:
        _reseal(image)
    return bytes(image), reseal


@pytest.mark.timeout(300)
@settings(
    max_examples=1500,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(data=st.data(), page_size=st.sampled_from([1024, 4096]))
def test_damaged_files_read_or_raise_bolt_format_error(data: st.DataObject, page_size: int) -> None:
    image, _ = data.draw(damaged(page_size))
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "db"
        path.write_bytes(image)
        _exercise(path, [name for name, _ in _buckets(page_size, 600)])


# --- targeted cases -------------------------------------------------------------------------

PS = 4096


def _root_entry(image: bytes, name: bytes) -> tuple[int, int, int]:
    """(element offset, value offset, value size) of bucket ``name`` in the root leaf."""
    root = decode_meta(image[16:80]).root
    base = root * PS
    count = PAGE_HEADER.unpack_from(image, base)[2]
    for i in range(count):
        at = base + 16 + 16 * i
        _, pos, ksize, vsize = LEAF_ELEMENT.unpack_from(image, at)
        if image[at + pos : at + pos + ksize] == name:
            return at, at + pos + ksize, vsize
    raise AssertionError(name)


def _big_root(image: bytes) -> int:
    _, value, _ = _root_entry(image, b"big")
    root, _ = BUCKET_HEADER.unpack_from(image, value)
    assert PAGE_HEADER.unpack_from(image, root * PS)[1] == BRANCH_PAGE
    return int(root)


def _first_leaf(image: bytes) -> int:
    root = _big_root(image)
    return int(BRANCH_ELEMENT.unpack_from(image, root * PS + 16)[2])


@pytest.fixture
def db(tmp_path: Path) -> tuple[Path, bytearray]:
    return tmp_path / "db", bytearray(_image(PS))


def _raises(
    path: Path, image: bytes, offset: int, match: str, *, open_ok: bool = True, reads: bool = True
) -> None:
    """Opening (open_ok=False) or check() raises at ``offset``; so do reads (if ``reads``)."""
    path.write_bytes(image)
    if not open_ok:
        with pytest.raises(BoltFormatError, match=match) as exc:
            BoltReader(path)
        assert exc.value.offset == offset and exc.value.path == str(path)
        assert str(exc.value) == f"{path}: offset {offset}: {exc.value.reason}"
        return
    with BoltReader(path) as r:
        with pytest.raises(BoltFormatError, match=match) as exc:
            r.check()
        assert exc.value.offset == offset
        if not reads:
            return
        with pytest.raises(BoltFormatError, match=match):
            for name in r.buckets():
                list(r.items(name))


def test_both_metas_corrupt_names_offset_0(db: tuple[Path, bytearray]) -> None:
    path, image = db
    image[16] ^= 0xFF
    image[PS + 40] ^= 0x01
    _raises(path, bytes(image), 0, "no valid meta page", open_ok=False)


@pytest.mark.parametrize(("bad", "txid"), [(0, 1), (1, 2)])
def test_one_meta_corrupt_falls_back_to_the_other(
    db: tuple[Path, bytearray], bad: int, txid: int
) -> None:
    path, image = db
    image[bad * PS + 16 + 60] ^= 0x80  # the checksum
    path.write_bytes(bytes(image))
    with BoltReader(path) as r:
        assert r.txid == txid and r.page_size == PS
        r.check()
        assert [(n, list(r.items(n))) for n in r.buckets()] == _buckets(PS, 600)


def test_truncated_files(db: tuple[Path, bytearray]) -> None:
    path, image = db
    _raises(path, bytes(image[:50]), 0, "too short", open_ok=False)
    _raises(path, b"", 0, "too short", open_ok=False)
    _raises(path, bytes(image[: len(image) - PS]), len(image) - PS, "truncated", open_ok=False)
    path.write_bytes(bytes(image))
    with pytest.raises(BoltFormatError, match="truncated") as exc:
        BoltReader(path, length=len(image) - 1)
    assert exc.value.offset == len(image) - 1


def test_page_id_out_of_range(db: tuple[Path, bytearray]) -> None:
    path, image = db
    at = _big_root(image) * PS + 16
    BRANCH_ELEMENT.pack_into(image, at, *BRANCH_ELEMENT.unpack_from(image, at)[:2], 10**6)
    _raises(path, bytes(image), at, "outside 2")


def test_wrong_page_flag(db: tuple[Path, bytearray]) -> None:
    path, image = db
    leaf = _first_leaf(image)
    image[leaf * PS + 8 : leaf * PS + 10] = FREELIST_PAGE.to_bytes(2, "little")
    _raises(path, bytes(image), leaf * PS, "expected a branch or leaf page, found freelist")


def test_element_outside_page(db: tuple[Path, bytearray]) -> None:
    path, image = db
    at = _first_leaf(image) * PS + 16
    image[at + 4 : at + 8] = (PS * 3).to_bytes(4, "little")  # leaf element 0's pos
    _raises(path, bytes(image), at, "outside its page")


def test_overflow_beyond_file(db: tuple[Path, bytearray]) -> None:
    path, image = db
    base = _first_leaf(image) * PS
    image[base + 12 : base + 16] = (10**6).to_bytes(4, "little")
    _raises(path, bytes(image), base, "overflow pages run past")


def test_cycle_is_reported_not_followed(db: tuple[Path, bytearray]) -> None:
    path, image = db
    root = _big_root(image)
    at = root * PS + 16
    BRANCH_ELEMENT.pack_into(image, at, *BRANCH_ELEMENT.unpack_from(image, at)[:2], root)
    _raises(path, bytes(image), at, "reached twice")
    with BoltReader(path) as r, pytest.raises(BoltFormatError, match="reached twice"):
        r.get(b"big", b"\x00")


def test_inline_value_shorter_than_header(db: tuple[Path, bytearray]) -> None:
    path, image = db
    at, value, _ = _root_entry(image, b"inline")
    image[at + 12 : at + 16] = (8).to_bytes(4, "little")  # vsize
    _raises(path, bytes(image), value, "shorter than its header")
    image[at + 12 : at + 16] = (20).to_bytes(4, "little")
    _raises(path, bytes(image), value, "shorter than bucket header \\+ page header")


def test_unreachable_page_not_free(db: tuple[Path, bytearray]) -> None:
    path, image = db
    hwm = len(image) // PS
    image += bytes(PS)
    _reseal(image, pgid=hwm + 1)
    _raises(path, bytes(image), hwm * PS, "neither reachable nor free", reads=False)
    # Listed in the freelist, the extra page is fine.
    image[2 * PS : 2 * PS + 16] = PAGE_HEADER.pack(2, FREELIST_PAGE, 1, 0)
    image[2 * PS + 16 : 2 * PS + 24] = PGID.pack(hwm)
    path.write_bytes(bytes(image))
    with BoltReader(path) as r:
        r.check()
    # A reachable page in the freelist is an error.
    image[2 * PS + 16 : 2 * PS + 24] = PGID.pack(_first_leaf(image))
    _raises(path, bytes(image), _first_leaf(image) * PS, "both reachable and free", reads=False)


def test_freelist_count_overflow(tmp_path: Path) -> None:
    """0xFFFF or more free ids: count 0xFFFF and the real count in the first u64 (sparse file)."""
    ps = 1024
    image = bytearray(_image(ps))
    hwm = len(image) // ps
    n_free = 0xFFFF + 10
    ids = [2, *range(hwm, hwm + n_free)]  # page 2, the old freelist page, is free now
    fl_page = hwm + n_free
    fl_pages = -(-(16 + 8 + 8 * len(ids)) // ps)
    body = PAGE_HEADER.pack(fl_page, FREELIST_PAGE, 0xFFFF, fl_pages - 1) + PGID.pack(len(ids))
    body += b"".join(PGID.pack(i) for i in ids)
    _reseal(image, freelist=fl_page, pgid=fl_page + fl_pages)
    path = tmp_path / "db"
    with open(path, "wb") as f:
        f.write(image)
        f.truncate(fl_page * ps)  # the free pages: a hole
        f.seek(fl_page * ps)
        f.write(body.ljust(fl_pages * ps, b"\0"))
    with BoltReader(path) as r:
        r.check()
        assert r.count(b"key") == 199
    # The count word claiming more ids than the pages hold.
    with open(path, "r+b") as f:
        f.seek(fl_page * ps + 16)
        f.write(PGID.pack(10**9))
    with BoltReader(path) as r, pytest.raises(BoltFormatError, match="overruns") as exc:
        r.check()
    assert exc.value.offset == fl_page * ps
