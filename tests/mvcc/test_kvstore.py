"""KVStore: etcd request semantics, consistent index, reopen, compaction, HashKV."""

from __future__ import annotations

from pathlib import Path

import pytest

from raftkv.mvcc import (
    CompactedError,
    CompactionRequest,
    Compare,
    CompareResult,
    CompareTarget,
    DeleteRangeRequest,
    DuplicateKeyError,
    FutureRevError,
    KeyNotFoundError,
    KVStore,
    LeaseNotFoundError,
    PutRequest,
    RangeRequest,
    SortOrder,
    SortTarget,
    TxnRequest,
)
from raftkv.mvcc.types import WriteRequest
from tests.mvcc.conftest import open_store


def _apply(s: KVStore, *reqs: WriteRequest) -> list[object]:
    start = s.consistent_index + 1
    return list(s.apply_batch([(start + i, 1, r) for i, r in enumerate(reqs)]))


def _keys(s: KVStore, req: RangeRequest) -> list[bytes]:
    return [kv.key for kv in s.range(req).kvs]


def test_empty_store_is_at_revision_1(store: KVStore) -> None:
    r = store.range(RangeRequest(b"a"))
    assert (r.revision, r.kvs, r.count, r.more) == (1, (), 0, False)
    assert store.compact_revision == -1


def test_range_end_conventions(store: KVStore) -> None:
    _apply(store, *(PutRequest(k, k) for k in (b"a", b"ab", b"b", b"c")))
    assert _keys(store, RangeRequest(b"a")) == [b"a"]
    assert _keys(store, RangeRequest(b"a", b"b")) == [b"a", b"ab"]
    assert _keys(store, RangeRequest(b"ab", b"\x00")) == [b"ab", b"b", b"c"]
    assert _keys(store, RangeRequest(b"\x00", b"\x00")) == [b"a", b"ab", b"b", b"c"]
    assert _keys(store, RangeRequest(b"c", b"a")) == []


def test_limit_count_more_sort_filters(store: KVStore) -> None:
    _apply(store, PutRequest(b"a", b"3"), PutRequest(b"b", b"1"), PutRequest(b"c", b"2"))
    _apply(store, PutRequest(b"a", b"4"))  # a: version 2, mod 5
    r = store.range(RangeRequest(b"a", b"\x00", limit=2))
    assert [kv.key for kv in r.kvs] == [b"a", b"b"] and r.count == 3 and r.more
    r = store.range(RangeRequest(b"a", b"\x00", limit=3))
    assert r.count == 3 and not r.more
    r = store.range(RangeRequest(b"a", b"\x00", sort_target=SortTarget.VALUE))
    assert [kv.value for kv in r.kvs] == [b"1", b"2", b"4"]  # NONE + non-key target = ASCEND
    r = store.range(
        RangeRequest(
            b"a", b"\x00", sort_order=SortOrder.DESCEND, sort_target=SortTarget.MOD, limit=1
        )
    )
    assert [kv.key for kv in r.kvs] == [b"a"] and r.more and r.count == 3
    r = store.range(RangeRequest(b"a", b"\x00", sort_target=SortTarget.VERSION))
    assert [kv.key for kv in r.kvs] == [b"b", b"c", b"a"]
    # filters prune kvs but not count (etcd's pruneKVs)
    r = store.range(RangeRequest(b"a", b"\x00", min_mod_revision=4))
    assert [kv.key for kv in r.kvs] == [b"a", b"c"] and r.count == 3
    r = store.range(RangeRequest(b"a", b"\x00", max_create_revision=2, limit=1))
    assert [kv.key for kv in r.kvs] == [b"a"] and not r.more
    r = store.range(RangeRequest(b"a", b"\x00", count_only=True, limit=1))
    assert r.kvs == () and r.count == 3 and not r.more
    r = store.range(RangeRequest(b"a", keys_only=True))
    assert r.kvs[0].value == b"" and r.kvs[0].version == 2


def test_historical_reads_and_errors(store: KVStore) -> None:
    _apply(store, PutRequest(b"k", b"1"), PutRequest(b"k", b"2"), DeleteRangeRequest(b"k"))
    assert store.range(RangeRequest(b"k", revision=2)).kvs[0].value == b"1"
    assert store.range(RangeRequest(b"k", revision=3)).kvs[0].version == 2
    assert store.range(RangeRequest(b"k", revision=4)).kvs == ()
    with pytest.raises(FutureRevError, match="required revision is a future revision"):
        store.range(RangeRequest(b"k", revision=5))
    _apply(store, CompactionRequest(3))
    store.run_compaction()
    with pytest.raises(CompactedError, match="required revision has been compacted"):
        store.range(RangeRequest(b"k", revision=2))
    assert store.range(RangeRequest(b"k", revision=3)).kvs[0].value == b"2"
    [err] = _apply(store, CompactionRequest(3))
    assert isinstance(err, CompactedError)
    [err] = _apply(store, CompactionRequest(9))
    assert isinstance(err, FutureRevError)


def test_put_flags(tmp_path: Path) -> None:
    s = KVStore(open_store(tmp_path / "db").backend, lease_exists=lambda lid: lid == 7)
    out = _apply(
        s,
        PutRequest(b"k", ignore_value=True),
        PutRequest(b"k", b"v", lease=8),
        PutRequest(b"k", b"v", lease=7),
        PutRequest(b"k", b"w", ignore_lease=True, prev_kv=True),
        PutRequest(b"k", ignore_value=True, lease=0),
    )
    assert isinstance(out[0], KeyNotFoundError) and str(out[0]) == "etcdserver: key not found"
    assert isinstance(out[1], LeaseNotFoundError)
    assert out[3].prev_kv.value == b"v"  # type: ignore[union-attr]
    kv = s.range(RangeRequest(b"k")).kvs[0]
    assert (kv.value, kv.lease, kv.version, kv.create_revision, kv.mod_revision) == (
        b"w",
        0,
        3,
        2,
        4,
    )
    assert s.leased_keys() == {}
    s.backend.close()


def test_leased_keys_after_a_restore_match_a_scan_of_every_live_key(tmp_path: Path) -> None:
    """The restore gathers each live key's lease from its latest record; once a batch writes,
    every live key is read again.  Both answers agree."""
    path = tmp_path / "db"
    s = KVStore(open_store(path).backend, lease_exists=lambda lid: lid in (7, 8))
    _apply(
        s,
        PutRequest(b"a", b"1", lease=7),
        PutRequest(b"b", b"1", lease=7),
        PutRequest(b"c", b"1", lease=8),
        PutRequest(b"d", b"1"),
        PutRequest(b"b", b"2"),  # its lease dropped by a plain put
        DeleteRangeRequest(b"c"),  # deleted
        PutRequest(b"d", b"2", lease=8),  # a lease attached later
        PutRequest(b"e", b"1", lease=8),
        DeleteRangeRequest(b"e"),
        PutRequest(b"e", b"2", lease=7),  # deleted, then put again with another lease
    )
    expected = {b"a": 7, b"d": 8, b"e": 7}
    assert s.leased_keys() == expected  # read from every live key
    s.backend.close()
    reopened = KVStore(open_store(path).backend, lease_exists=lambda lid: lid in (7, 8))
    assert reopened.leased_keys() == expected  # gathered by the restore
    _apply(reopened, PutRequest(b"a", b"3"))
    assert reopened.leased_keys() == {b"d": 8, b"e": 7}  # after a write: read again
    reopened.backend.close()


def test_delete_range(store: KVStore) -> None:
    _apply(store, PutRequest(b"a"), PutRequest(b"b"), PutRequest(b"c"))
    [r] = _apply(store, DeleteRangeRequest(b"a", b"c", prev_kv=True))
    assert r.deleted == 2 and r.revision == 5  # type: ignore[union-attr]
    assert [kv.key for kv in r.prev_kvs] == [b"a", b"b"]  # type: ignore[union-attr]
    [r] = _apply(store, DeleteRangeRequest(b"zz"))
    assert r.deleted == 0 and r.revision == 5  # type: ignore[union-attr]
    assert store.current_revision == 5
    _apply(store, PutRequest(b"a", b"again"))
    kv = store.range(RangeRequest(b"a")).kvs[0]
    assert (kv.create_revision, kv.version) == (6, 1)


def _cmp(key: bytes, target: CompareTarget, result: CompareResult, **kw: object) -> Compare:
    return Compare(key, target, result, **kw)  # type: ignore[arg-type]


def test_txn_semantics(store: KVStore) -> None:
    _apply(store, PutRequest(b"a", b"1"), PutRequest(b"b", b"2"))
    t = TxnRequest(
        compare=(
            _cmp(b"a", CompareTarget.VALUE, CompareResult.EQUAL, value=b"1"),
            _cmp(b"a", CompareTarget.VERSION, CompareResult.GREATER, version=0, range_end=b"c"),
        ),
        success=(
            PutRequest(b"a2", b"x"),
            PutRequest(b"a", b"y"),
            RangeRequest(b"a"),
            TxnRequest(
                compare=(
                    _cmp(b"zz", CompareTarget.CREATE, CompareResult.EQUAL, create_revision=0),
                ),
                success=(DeleteRangeRequest(b"b", prev_kv=True),),
            ),
        ),
        failure=(PutRequest(b"never"),),
    )
    [r] = _apply(store, t)
    assert r.succeeded and r.revision == 4  # type: ignore[union-attr]
    rng = r.responses[2]  # type: ignore[union-attr]
    assert rng.kvs[0].value == b"y" and rng.kvs[0].version == 2 and rng.revision == 4
    nested = r.responses[3]  # type: ignore[union-attr]
    assert nested.succeeded and nested.responses[0].deleted == 1 and nested.revision == 0
    assert store.range(RangeRequest(b"b")).kvs == ()
    # missing key: VALUE compare fails, others compare against zero values
    t2 = TxnRequest(compare=(_cmp(b"m", CompareTarget.VALUE, CompareResult.EQUAL),))
    [r2] = _apply(store, t2)
    assert not r2.succeeded and r2.revision == 4  # type: ignore[union-attr]
    t3 = TxnRequest(compare=(_cmp(b"m", CompareTarget.MOD, CompareResult.LESS, mod_revision=1),))
    [r3] = _apply(store, t3)
    assert r3.succeeded  # type: ignore[union-attr]  # mod_revision 0 < 1
    # validation happens before any write: no revision is consumed
    bad = TxnRequest(success=(PutRequest(b"n", b"1"), PutRequest(b"n2", ignore_value=True)))
    [err] = _apply(store, bad)
    assert isinstance(err, KeyNotFoundError)
    bad_rev = TxnRequest(success=(PutRequest(b"n", b"1"), RangeRequest(b"a", revision=99)))
    [err] = _apply(store, bad_rev)
    assert isinstance(err, FutureRevError)
    assert store.current_revision == 4 and store.range(RangeRequest(b"n")).kvs == ()
    for dup in (
        TxnRequest(success=(PutRequest(b"q"), PutRequest(b"q"))),
        TxnRequest(
            success=(DeleteRangeRequest(b"p", b"r"), TxnRequest(success=(PutRequest(b"q"),)))
        ),
    ):
        [err] = _apply(store, dup)
        assert isinstance(err, DuplicateKeyError)
    # then/else of one nested txn may put the same key (they exclude each other)
    ok = TxnRequest(success=(TxnRequest(success=(PutRequest(b"q"),), failure=(PutRequest(b"q"),)),))
    assert not isinstance(_apply(store, ok)[0], DuplicateKeyError)
    ro = store.read_txn(TxnRequest(success=(RangeRequest(b"a"),)))
    assert ro.revision == 5 and ro.responses[0].kvs[0].value == b"y"  # type: ignore[union-attr]


def test_consistent_index_makes_reapply_a_noop(tmp_path: Path) -> None:
    s = open_store(tmp_path / "db")
    out = s.apply_batch([(5, 2, PutRequest(b"a", b"1")), (6, 2, PutRequest(b"a", b"2"))])
    assert all(o is not None for o in out)
    assert (s.consistent_index, s.term) == (6, 2)
    assert s.apply_batch([(6, 2, PutRequest(b"a", b"3")), (4, 1, PutRequest(b"z"))]) == [None, None]
    s.backend.close()
    s = open_store(tmp_path / "db")
    assert (s.consistent_index, s.term, s.current_revision) == (6, 2, 3)
    assert s.range(RangeRequest(b"a")).kvs[0].value == b"2"
    s.backend.close()


def test_failed_batch_rolls_back_memory_state(store: KVStore) -> None:
    _apply(store, PutRequest(b"a", b"1"))
    with pytest.raises(RuntimeError), store.write_batch() as b:
        assert b.begin_entry(store.consistent_index + 1, 1)
        b.put(PutRequest(b"a", b"2"))
        b.put(PutRequest(b"new"))
        raise RuntimeError("disk on fire")
    assert store.current_revision == 2 and store.consistent_index == 1
    assert _keys(store, RangeRequest(b"\x00", b"\x00")) == [b"a"]
    assert store.range(RangeRequest(b"a")).kvs[0].value == b"1"


def test_reopen_gives_same_answers_and_hash(tmp_path: Path) -> None:
    s = open_store(tmp_path / "db", compaction_batch=2)
    for i in range(30):
        _apply(s, PutRequest(b"k%d" % (i % 7), b"v%d" % i))
        if i % 5 == 4:
            _apply(s, DeleteRangeRequest(b"k%d" % (i % 3)))
    _apply(s, CompactionRequest(20))
    s.run_compaction()
    before = [s.range(RangeRequest(b"\x00", b"\x00", revision=r)) for r in range(20, 37)]
    h = s.hash_kv()
    s.backend.close()
    s = open_store(tmp_path / "db")
    assert s.compact_revision == 20
    assert [s.range(RangeRequest(b"\x00", b"\x00", revision=r)) for r in range(20, 37)] == before
    assert s.hash_kv() == h
    s.backend.close()


def test_interrupted_compaction_resumes_at_startup(tmp_path: Path) -> None:
    s = open_store(tmp_path / "db", compaction_batch=2)
    for i in range(20):
        _apply(s, PutRequest(b"k%d" % (i % 4), b"%d" % i))
    _apply(s, CompactionRequest(15))
    for _ in range(4):
        s.compact_step()  # index phase done, part of the key bucket deleted
    assert s.compaction_pending()
    s.backend.close()
    s = open_store(tmp_path / "db", compaction_batch=2)
    assert s.compact_revision == 15 and s.compaction_pending()
    s.run_compaction()
    with s.backend.read() as tx:
        assert tx.count("key") == 4 + 6  # latest of each key <= 15, plus revisions 16..21
    s.backend.close()
    s = open_store(tmp_path / "db")
    assert not s.compaction_pending() and s.compact_revision == 15
    s.backend.close()


def test_hash_kv_equals_etcd_3_4(store: KVStore) -> None:
    # Golden values: the same requests against etcd 3.4.23 (`etcdctl endpoint hashkv`).
    _apply(
        store,
        PutRequest(b"a", b"1"),
        PutRequest(b"b", b"2"),
        PutRequest(b"a", b"3"),
        DeleteRangeRequest(b"a"),
        PutRequest(b"c", b"hello"),
        TxnRequest(
            success=(PutRequest(b"x", b"1"), PutRequest(b"y", b"2"), DeleteRangeRequest(b"c"))
        ),
        PutRequest(b"a", b"4"),
    )
    assert store.hash_kv()[0].hash == 630230629
    assert store.hash_kv(5)[0].hash == 1346927904
    _apply(store, CompactionRequest(5))
    store.run_compaction()
    assert store.hash_kv()[0].hash == 852925529
    _apply(store, PutRequest(b"z", b"1"), CompactionRequest(9))
    store.run_compaction()
    h, cur = store.hash_kv()
    assert (h.hash, h.revision, h.compact_revision, cur) == (2042745690, 9, 9, 9)
    with pytest.raises(CompactedError):
        store.hash_kv(8)
    with pytest.raises(FutureRevError):
        store.hash_kv(10)


def test_hash_independent_of_compaction_batching(tmp_path: Path) -> None:
    hashes = []
    for n, batch in enumerate((1, 3, 1000)):
        s = open_store(tmp_path / str(n), compaction_batch=batch)
        for i in range(40):
            _apply(s, PutRequest(b"k%d" % (i % 9), b"%d" % i))
            if i % 6 == 0:
                _apply(s, DeleteRangeRequest(b"k1", b"k4"))
        _apply(s, CompactionRequest(30))
        # hash while the compaction is scheduled but not done equals the hash after it
        pending = s.hash_kv()
        s.run_compaction()
        hashes.append((pending, s.hash_kv()))
        s.backend.close()
    assert hashes[0] == hashes[1] == hashes[2]
    assert hashes[0][0] == hashes[0][1]
