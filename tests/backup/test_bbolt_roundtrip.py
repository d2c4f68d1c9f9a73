"""write_bolt then BoltReader gives back exactly what was written (Hypothesis), plus the layout
facts a bbolt file must show: both metas valid, inline buckets, overflow pages, nested buckets
walked by check(), and the writer's misuse errors.

Big bucket sets are generated from a Hypothesis-drawn recipe (size class, key style, value
profile, seed) so that thousands of keys cost little to draw and a third of the buckets are
large (1000-3000 keys); small ones are drawn directly so that
Hypothesis can shrink their keys and values.
"""

from __future__ import annotations

import io
import os
import random
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from raftkv.backup.bbolt import BoltFormatError, BoltReader, write_bolt
from raftkv.backup.bbolt.layout import (
    BUCKET_HEADER,
    BUCKET_LEAF_FLAG,
    LEAF_PAGE,
    META_SIZE,
    PAGE_HEADER,
    PAGE_HEADER_SIZE,
    decode_meta,
    make_meta,
)
from raftkv.backup.bbolt.writer import encode_node

Buckets = list[tuple[bytes, list[tuple[bytes, bytes]]]]
SLOW_OK = [HealthCheck.too_slow, HealthCheck.data_too_large]


def _keys(rng: random.Random, n: int, style: str, max_len: int) -> list[bytes]:
    keys: set[bytes] = set()
    while len(keys) < n:
        if style == "etcd":  # etcd's revision keys: main (8 BE) _ sub (8 BE)
            main = rng.randrange(1, 1 << 20)
            keys.add(main.to_bytes(8, "big") + b"_" + rng.randrange(4).to_bytes(8, "big"))
        elif style == "prefix":
            keys.add(b"/registry/pods/" + rng.randbytes(rng.randint(1, max(4, max_len - 15))))
        else:
            keys.add(rng.randbytes(rng.randint(1, max_len)))
    return sorted(keys)


def _value(rng: random.Random, profile: str) -> bytes:
    if profile == "empty":
        return b""
    if (profile == "large" and rng.random() < 0.2) or (profile == "mixed" and rng.random() < 0.03):
        return rng.randbytes(rng.randint(4097, 10000))
    return rng.randbytes(rng.randint(0, 300))


@st.composite
def recipes(draw: st.DrawFn) -> Buckets:
    names = sorted(draw(st.lists(st.binary(min_size=1, max_size=40), unique=True, max_size=6)))
    out: Buckets = []
    for name in names:
        size = draw(st.sampled_from(["inline", "small", "large"]))
        style = draw(st.sampled_from(["random", "etcd", "prefix"]))
        max_len = draw(st.sampled_from([16, 64, 600]))
        profile = draw(st.sampled_from(["empty", "small", "mixed", "large"]))
        rng = random.Random(draw(st.integers(0, 2**32)))
        n = rng.randint(*{"inline": (0, 10), "small": (10, 300), "large": (1000, 3000)}[size])
        out.append((name, [(k, _value(rng, profile)) for k in _keys(rng, n, style, max_len)]))
    return out


@st.composite
def direct(draw: st.DrawFn) -> Buckets:
    names = sorted(draw(st.lists(st.binary(min_size=1, max_size=20), unique=True, max_size=4)))
    out: Buckets = []
    for name in names:
        items = draw(
            st.dictionaries(
                st.binary(min_size=1, max_size=600), st.binary(max_size=10000), max_size=12
            )
        )
        out.append((name, sorted(items.items())))
    return out


def _write(path: Path, buckets: Buckets, page_size: int) -> int:
    with open(path, "wb") as f:
        n = write_bolt(f, ((name, iter(items)) for name, items in buckets), page_size=page_size)
        assert f.tell() == n
    return n


def _absent(items: list[tuple[bytes, bytes]]) -> Iterator[bytes]:
    present = {k for k, _ in items}
    for k, _ in items[:: max(1, len(items) // 50)]:
        for probe in (k + b"\x00", k[:-1], k + b"\xff"):
            if probe and probe not in present:
                yield probe
    yield from (p for p in (b"\x00", b"\xff" * 700) if p not in present)


def _assert_roundtrip(buckets: Buckets, page_size: int) -> None:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "db"
        n = _write(path, buckets, page_size)
        assert n == os.path.getsize(path) and n % page_size == 0
        with BoltReader(path) as r:
            assert r.page_size == page_size and r.txid == 2 and r.size == n
            r.check()
            assert r.buckets() == [name for name, _ in buckets]
            for name, items in buckets:
                assert list(r.items(name)) == items
                assert r.count(name) == len(items)
                for k, v in items:
                    assert r.get(name, k) == v
                for k in _absent(items):
                    assert r.get(name, k) is None
            with pytest.raises(KeyError):
                r.items(b"no such bucket\xff")


@settings(max_examples=60, deadline=None, suppress_health_check=SLOW_OK)
@given(buckets=recipes(), page_size=st.sampled_from([4096, 16384]))
def test_roundtrip_generated(buckets: Buckets, page_size: int) -> None:
    _assert_roundtrip(buckets, page_size)


@settings(max_examples=60, deadline=None, suppress_health_check=SLOW_OK)
@given(buckets=direct(), page_size=st.sampled_from([1024, 4096, 16384]))
def test_roundtrip_direct(buckets: Buckets, page_size: int) -> None:
    _assert_roundtrip(buckets, page_size)


def test_deep_tree_small_pages() -> None:
    rng = random.Random(7)
    keys = _keys(rng, 3000, "random", 600)
    _assert_roundtrip([(b"deep", [(k, rng.randbytes(rng.randint(0, 2000))) for k in keys])], 1024)


def test_both_metas_valid_and_alternating(tmp_path: Path) -> None:
    path = tmp_path / "db"
    with open(path, "wb") as f:
        write_bolt(f, [(b"a", [(b"k", b"v")])], txid=7)
    image = path.read_bytes()
    for page, txid in ((0, 6), (1, 7)):
        base = page * 4096
        assert PAGE_HEADER.unpack_from(image, base)[:2] == (page, 0x04)
        raw = image[base + PAGE_HEADER_SIZE : base + PAGE_HEADER_SIZE + META_SIZE]
        meta = decode_meta(raw)
        assert meta.problem(raw) is None and meta.txid == txid and meta.freelist == 2
    assert PAGE_HEADER.unpack_from(image, 2 * 4096) == (2, 0x10, 0, 0)
    with BoltReader(path) as r:
        assert r.txid == 7 and r.get(b"a", b"k") == b"v"


def _root_leaf_value(image: bytes, page_size: int, index: int) -> bytes:
    meta = decode_meta(image[16:80])
    base = meta.root * page_size
    _, flags, count, _ = PAGE_HEADER.unpack_from(image, base)
    assert flags == LEAF_PAGE and index < count
    at = base + 16 + 16 * index
    eflags, pos, ksize, vsize = (
        int.from_bytes(image[at + i : at + i + 4], "little") for i in (0, 4, 8, 12)
    )
    assert eflags == BUCKET_LEAF_FLAG
    return image[at + pos + ksize : at + pos + ksize + vsize]


@pytest.mark.parametrize("page_size", [4096, 16384])
def test_inline_threshold_is_a_quarter_page(tmp_path: Path, page_size: int) -> None:
    # leaf page = 16 (header) + 16 (element) + key + value; inline while <= page_size / 4.
    fits = page_size // 4 - 32 - 1
    for extra, inline in ((0, True), (1, False)):
        path = tmp_path / f"db{extra}"
        n = _write(path, [(b"b", [(b"k", b"x" * (fits + extra))])], page_size)
        value = _root_leaf_value(path.read_bytes(), page_size, 0)
        root, _seq = BUCKET_HEADER.unpack_from(value)
        assert (root == 0) is inline
        assert n == (4 if inline else 5) * page_size
        with BoltReader(path) as r:
            r.check()
            assert r.get(b"b", b"k") == b"x" * (fits + extra)


def test_large_value_uses_overflow_pages(tmp_path: Path) -> None:
    path = tmp_path / "db"
    big = random.Random(1).randbytes(3 * 4096 + 5)
    _write(path, [(b"b", [(b"a", b"1"), (b"big", big), (b"c", b"3")])], 4096)
    image = path.read_bytes()
    root, _ = BUCKET_HEADER.unpack_from(_root_leaf_value(image, 4096, 0))
    assert PAGE_HEADER.unpack_from(image, root * 4096)[3] == 3  # 4 pages: 3 overflow
    with BoltReader(path) as r:
        r.check()
        assert r.get(b"b", b"big") == big


def _nested_image() -> bytes:
    """Root bucket: 'outer' (inline, holding key x and inline sub-bucket 'inner'),
    'tree' (page 4, holding key y and a sub-bucket 'sub' on page 5). Freelist empty."""
    ps = 1024
    inner = BUCKET_HEADER.pack(0, 0) + encode_node(LEAF_PAGE, [(0, b"deep", b"1")])
    outer_page = encode_node(LEAF_PAGE, [(BUCKET_LEAF_FLAG, b"inner", inner), (0, b"x", b"2")])
    outer = BUCKET_HEADER.pack(0, 0) + outer_page
    tree = BUCKET_HEADER.pack(4, 9)
    root = encode_node(
        LEAF_PAGE, [(BUCKET_LEAF_FLAG, b"outer", outer), (BUCKET_LEAF_FLAG, b"tree", tree)], 3
    )
    page4 = encode_node(
        LEAF_PAGE, [(BUCKET_LEAF_FLAG, b"sub", BUCKET_HEADER.pack(5, 0)), (0, b"y", b"3")], 4
    )
    page5 = encode_node(LEAF_PAGE, [(0, b"z", b"4")], 5)
    image = bytearray(6 * ps)
    for t in (1, 2):
        meta = make_meta(page_size=ps, root=3, freelist=2, pgid=6, txid=t)
        image[(t % 2) * ps : (t % 2) * ps + 80] = PAGE_HEADER.pack(t % 2, 0x04, 0, 0) + meta.pack()
    image[2 * ps : 2 * ps + 16] = PAGE_HEADER.pack(2, 0x10, 0, 0)
    for pgid, body in ((3, root), (4, page4), (5, page5)):
        image[pgid * ps : pgid * ps + len(body)] = body
    return bytes(image)


def test_nested_buckets_checked_and_skipped(tmp_path: Path) -> None:
    path = tmp_path / "nested"
    path.write_bytes(_nested_image())
    with BoltReader(path) as r:
        r.check()
        assert r.buckets() == [b"outer", b"tree"]
        assert list(r.items(b"outer")) == [(b"x", b"2")]
        assert list(r.items(b"tree")) == [(b"y", b"3")]
        assert r.get(b"outer", b"inner") is None and r.count(b"tree") == 1
    # The nested bucket's root pointed at its parent's page: check() must notice.
    image = bytearray(_nested_image())
    at = 4 * 1024 + 16 + 2 * 16 + len(b"sub")  # element 0's value: the sub-bucket header
    image[at : at + 8] = (4).to_bytes(8, "little")
    path.write_bytes(bytes(image))
    with BoltReader(path) as r, pytest.raises(BoltFormatError, match="reached twice"):
        r.check()


def test_empty_database(tmp_path: Path) -> None:
    path = tmp_path / "db"
    assert _write(path, [], 4096) == 4 * 4096
    with BoltReader(path) as r:
        r.check()
        assert r.buckets() == []
        with pytest.raises(KeyError):
            r.count(b"x")


@pytest.mark.parametrize(
    ("buckets", "kwargs", "match"),
    [
        ([(b"b", []), (b"a", [])], {}, "strictly ascending"),
        ([(b"a", []), (b"a", [])], {}, "strictly ascending"),
        ([(b"", [])], {}, "empty key"),
        ([(b"a", [(b"k", b""), (b"k", b"")])], {}, "strictly ascending"),
        ([(b"a", [(b"", b"")])], {}, "empty key"),
        ([(b"a", [(b"x" * 32769, b"")])], {}, "exceeds"),
        ([], {"page_size": 3000}, "page_size"),
        ([], {"page_size": 512}, "page_size"),
        ([], {"txid": 0}, "txid"),
    ],
)
def test_writer_misuse_is_value_error(buckets: Buckets, kwargs: dict[str, int], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        write_bolt(io.BytesIO(), buckets, **kwargs)


def test_reader_misuse(tmp_path: Path) -> None:
    path = tmp_path / "db"
    _write(path, [(b"a", [(b"k", b"v")])], 4096)
    with pytest.raises(ValueError):
        BoltReader(path, length=-1)
    r = BoltReader(path, length=10**9)  # clipped to the file
    r.close()
    r.close()
    with pytest.raises(ValueError, match="closed"):
        r.buckets()
