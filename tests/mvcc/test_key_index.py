"""KeyIndex, SortedKeys and TreeIndex against etcd's documented examples and a model."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from raftkv.mvcc.index import TreeIndex
from raftkv.mvcc.key_index import KeyIndex
from raftkv.mvcc.revision import pack
from raftkv.mvcc.sorted_keys import SortedKeys


def _example() -> KeyIndex:
    # etcd's example: put 2,4,6(t) then 8,10,12(t) then 14,14.1,16(t)
    ki = KeyIndex(b"foo")
    for m in (2, 4):
        ki.put(pack(m))
    assert ki.tombstone(pack(6))
    for m in (8, 10):
        ki.put(pack(m))
    assert ki.tombstone(pack(12))
    ki.put(pack(14))
    ki.put(pack(14, 1))
    assert ki.tombstone(pack(16))
    return ki


def test_get_across_generations() -> None:
    ki = _example()
    assert ki.get(1) is None
    assert ki.get(2) == (pack(2), pack(2), 1)
    assert ki.get(5) == (pack(4), pack(2), 2)
    assert ki.get(6) is None and ki.get(7) is None
    assert ki.get(11) == (pack(10), pack(8), 2)
    assert ki.get(13) is None
    assert ki.get(14) == (pack(14, 1), pack(14), 2)
    assert ki.get(16) is None and ki.get(100) is None
    assert not ki.tombstone(pack(17))  # already dead


def test_since() -> None:
    ki = _example()
    assert ki.since(9) == [pack(10), pack(12), pack(14, 1), pack(16)]
    assert ki.since(0)[0] == pack(2)


def test_compact_and_keep_follow_etcd() -> None:
    ki = _example()
    avail: set[int] = set()
    ki.keep(6, avail)
    assert avail == set()  # tombstone at exactly 6 is not kept by keep()
    avail = set()
    ki.compact(6, avail)
    assert avail == {pack(6)}  # ... but compaction keeps it (watchers from 6 see it)
    assert [g.revs for g in ki.generations] == [
        [pack(6)],
        [pack(8), pack(10), pack(12)],
        [pack(14), pack(14, 1), pack(16)],
        [],
    ]
    avail = set()
    ki.compact(7, avail)
    assert avail == set()
    assert ki.generations[0].revs == [pack(8), pack(10), pack(12)]
    avail = set()
    ki.compact(11, avail)
    assert avail == {pack(10)}
    assert ki.get(11) == (pack(10), pack(8), 2)  # version survives compaction
    avail = set()
    ki.compact(17, avail)
    assert ki.is_empty()


def test_restore_tombstone_then_put() -> None:
    ki = KeyIndex(b"k")
    ki.restore_tombstone(pack(16))
    assert ki.get(16) is None and ki.get(20) is None
    ki.put(pack(17))
    ki.put(pack(18))
    assert ki.get(18) == (pack(18), pack(17), 2)
    avail: set[int] = set()
    ki.compact(17, avail)
    assert len(ki.generations) == 1


@settings(max_examples=50, deadline=None)
@given(
    st.lists(st.tuples(st.booleans(), st.binary(min_size=1, max_size=3)), max_size=400),
    st.integers(4, 16),
)
def test_sorted_keys_matches_sorted_set(ops: list[tuple[bool, bytes]], load: int) -> None:
    sk = SortedKeys(load=load)
    model: set[bytes] = set()
    for add, k in ops:
        if add:
            assert sk.add(k) == (k not in model)
            model.add(k)
        else:
            assert sk.remove(k) == (k in model)
            model.discard(k)
    want = sorted(model)
    assert list(sk) == want and len(sk) == len(want)
    for lo, hi in ((b"", None), (b"a", b"b"), (b"\x80", None), (b"b", b"a")):
        expect = [k for k in want if k >= lo and (hi is None or k < hi)]
        assert list(sk.irange(lo, hi)) == expect
        assert sk.count_range(lo, hi) == len(expect)
    for k in want[:5]:
        assert k in sk
        assert sk.after(k, 3) == [x for x in want if x > k][:3]


def test_sorted_keys_bulk() -> None:
    rng = random.Random(7)
    keys = [rng.randbytes(6) for _ in range(5000)]
    sk = SortedKeys(keys[:2500], load=50)
    for k in keys[2500:]:
        sk.add(k)
    assert list(sk) == sorted(set(keys))


def test_tree_index_ranges_and_compaction() -> None:
    ti = TreeIndex()
    ti.put(b"a", pack(2))
    ti.put(b"b", pack(3))
    ti.put(b"c", pack(4))
    assert ti.tombstone(b"b", pack(5))
    assert not ti.tombstone(b"zz", pack(6))
    assert ti.revisions(b"a", b"", 5, 0) == ([pack(2), pack(4)], 2)
    assert ti.revisions(b"a", b"", 4, 1) == ([pack(2)], 3)
    assert ti.revisions(b"b", None, 4, 0) == ([pack(3)], 1)
    assert ti.count_revisions(b"a", b"c", 3) == 2
    assert ti.range(b"b", b"d", 5) == [(b"c", pack(4))]
    assert ti.compact(6) == {pack(2), pack(4)}
    assert len(ti) == 2 and ti.key_index(b"b") is None
