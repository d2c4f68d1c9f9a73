"""The ``backendBitFlip`` failpoint: a key-bucket value corrupted at rest after its CRC was
computed, and every read path of the store refusing it with ``BackendCorruptionError``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from raftkv import failpoints as fp
from raftkv.mvcc import (
    Backend,
    BackendConfig,
    BackendCorruptionError,
    KVStore,
    PutRequest,
    RangeRequest,
    TxnRequest,
)
from raftkv.mvcc.backend import BUCKET_KEY, BUCKET_LEASE, BUCKET_META, seal
from raftkv.mvcc.watchable import WatchableStore, WatchResponse
from tests.mvcc.conftest import SMALL_MAP, open_store


@pytest.fixture(autouse=True)
def _clean() -> Iterator[None]:
    fp.configure(None)
    yield
    fp.configure(None)


def test_flip_hits_key_bucket_puts_only_after_the_crc(tmp_path: Path) -> None:
    b = Backend(tmp_path / "db", BackendConfig(map_size=SMALL_MAP, sync_mode="nosync"))
    try:
        fp.configure("backendBitFlip=1*off->1*on")
        b.put(BUCKET_META, b"m", b"meta")  # other buckets are never hit
        b.put(BUCKET_LEASE, b"l", b"lease")
        b.put(BUCKET_KEY, b"k1", b"one")  # hit 1: off
        b.put(BUCKET_KEY, b"k2", b"two")  # hit 2: flipped
        b.put(BUCKET_KEY, b"k3", b"three")  # chain used up
        with b.env.begin() as raw_txn:
            raw = raw_txn.get(b"k2", db=b.db(BUCKET_KEY))
        good = seal(b"k2", b"two")
        # the CRC is the one of the intended value; only the last byte differs
        assert raw[:4] == good[:4] and raw[:-1] == good[:-1] and raw[-1] == good[-1] ^ 0xFF
        assert b.get(BUCKET_META, b"m") == b"meta" and b.get(BUCKET_LEASE, b"l") == b"lease"
        assert b.get(BUCKET_KEY, b"k1") == b"one" and b.get(BUCKET_KEY, b"k3") == b"three"
        with pytest.raises(BackendCorruptionError) as info:
            b.get(BUCKET_KEY, b"k2")
        assert (info.value.bucket, info.value.key) == (BUCKET_KEY, b"k2")
        assert "bucket 'key' at key 6b32" in str(info.value)
        with pytest.raises(BackendCorruptionError):
            b.items(BUCKET_KEY)
    finally:
        b.close()


def test_every_read_of_a_flipped_value_raises(tmp_path: Path) -> None:
    s = open_store(tmp_path / "db")
    try:
        s.apply_batch([(1, 1, PutRequest(b"a", b"1"))])
        fp.configure("backendBitFlip=1*on")
        s.apply_batch([(2, 1, PutRequest(b"b", b"2"))])
        s.apply_batch([(3, 1, PutRequest(b"c", b"3"))])
        assert [kv.value for kv in s.range(RangeRequest(b"a")).kvs] == [b"1"]
        assert [kv.value for kv in s.range(RangeRequest(b"c")).kvs] == [b"3"]
        # a count-only range reads no value and still answers
        assert s.range(RangeRequest(b"a", b"\x00", count_only=True)).count == 3
        with pytest.raises(BackendCorruptionError) as info:
            s.range(RangeRequest(b"a", b"\x00"))
        assert info.value.bucket == BUCKET_KEY
        with pytest.raises(BackendCorruptionError):
            s.read_txn(TxnRequest(success=(RangeRequest(b"b"),)))
        with pytest.raises(BackendCorruptionError):
            s.hash_kv(0)
    finally:
        s.backend.close()


def test_watch_catch_up_meets_the_flipped_value(tmp_path: Path) -> None:
    backend = Backend(tmp_path / "db", BackendConfig(map_size=SMALL_MAP, sync_mode="nosync"))
    w = WatchableStore(KVStore(backend))
    try:
        fp.configure("backendBitFlip=1*on")
        w.store.apply_batch([(1, 1, PutRequest(b"k", b"v"))])
        got: list[WatchResponse] = []

        def sink(resp: WatchResponse) -> bool:
            got.append(resp)
            return True

        w.watch(b"k", b"", 1, sink=sink)
        with pytest.raises(BackendCorruptionError):
            w.sync_watchers()
        assert got == []  # corrupt data is never delivered
    finally:
        backend.close()
