"""Backend: buckets, CRC envelope, bit-rot detection, space quota, revision codec."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import lmdb
import pytest

from raftkv.mvcc import (
    Backend,
    BackendConfig,
    BackendCorruptionError,
    BackendSpaceExceededError,
    KVStore,
    PutRequest,
    RangeRequest,
)
from raftkv.mvcc.backend import DEFAULT_BUCKETS, seal, verify_file
from raftkv.mvcc.revision import (
    bytes_to_rev,
    decode_kv,
    encode_kv,
    is_tombstone,
    main_to_bytes,
    pack,
    payload_to_proto,
    rev_to_bytes,
)
from raftkv.mvcc.types import KeyValue
from tests.mvcc.conftest import SMALL_MAP, open_store


def test_buckets_roundtrip_and_persist(tmp_path: Path) -> None:
    b = Backend(tmp_path, BackendConfig(map_size=SMALL_MAP))
    assert set(DEFAULT_BUCKETS) <= set(b.buckets)
    b.put("lease", b"\x00" * 8, b"lease-1")
    b.put("members", b"m1", b"peer")
    with b.write() as tx:
        tx.put("auth", b"enabled", b"\x01")
        tx.put("alarm", b"a1", b"nospace")
    assert b.delete("members", b"m1")
    assert not b.delete("members", b"m1")
    b.close()
    b = Backend(tmp_path, BackendConfig(map_size=SMALL_MAP))
    assert b.get("lease", b"\x00" * 8) == b"lease-1"
    assert b.get("members", b"m1") is None
    assert b.items("auth") == [(b"enabled", b"\x01")]
    assert b.items("alarm") == [(b"a1", b"nospace")]
    with pytest.raises(KeyError):
        b.get("nope", b"x")
    b.close()


def test_write_aborts_on_exception(tmp_path: Path) -> None:
    b = Backend(tmp_path, BackendConfig(map_size=SMALL_MAP))
    with pytest.raises(RuntimeError), b.write() as tx:
        tx.put("lease", b"k", b"v")
        raise RuntimeError("boom")
    assert b.get("lease", b"k") is None
    b.close()


def _raw_put(b: Backend, bucket: str, key: bytes, stored: bytes) -> None:
    with b.env.begin(write=True) as txn:
        txn.put(key, stored, db=b.db(bucket))


def test_raw_value_without_valid_crc_is_refused(tmp_path: Path) -> None:
    b = Backend(tmp_path, BackendConfig(map_size=SMALL_MAP))
    b.put("lease", b"k", b"value")
    good = seal(b"k", b"value")
    _raw_put(b, "lease", b"k", good[:-1] + b"X")
    with pytest.raises(BackendCorruptionError) as ei:
        b.get("lease", b"k")
    assert ei.value.bucket == "lease" and ei.value.key == b"k"
    _raw_put(b, "lease", b"k", b"\x01")
    with pytest.raises(BackendCorruptionError):
        b.items("lease")
    # a value sealed for another key is rejected too (misdirected write)
    _raw_put(b, "lease", b"k", seal(b"other", b"value"))
    with pytest.raises(BackendCorruptionError):
        b.get("lease", b"k")
    b.close()


def test_bit_flip_in_data_file_detected_on_read(tmp_path: Path) -> None:
    s = open_store(tmp_path / "db")
    marker = b"MARKER-" + b"q" * 40
    s.apply_batch([(1, 1, PutRequest(b"k", marker))])
    s.backend.force_commit()
    s.backend.close()
    data = tmp_path / "db" / "data.mdb"
    raw = bytearray(data.read_bytes())
    pos = raw.find(marker)
    assert pos > 0
    raw[pos + 10] ^= 0x04
    data.write_bytes(bytes(raw))
    b = Backend(tmp_path / "db", BackendConfig(map_size=SMALL_MAP))
    with pytest.raises(BackendCorruptionError) as ei:
        KVStore(b)  # the index rebuild reads (and checks) every value
    b.close()
    assert ei.value.bucket == "key"
    assert bytes_to_rev(ei.value.key) == pack(2)
    # restore the byte: the store opens and serves again
    raw[pos + 10] ^= 0x04
    data.write_bytes(bytes(raw))
    s = open_store(tmp_path / "db")
    assert s.range(RangeRequest(b"k")).kvs[0].value == marker
    s.backend.close()


def test_verify_file_checks_every_value_of_a_copy_and_writes_nothing(tmp_path: Path) -> None:
    b = Backend(tmp_path / "db", BackendConfig(map_size=SMALL_MAP, extra_buckets=("extra",)))
    b.put("lease", b"l1", b"lease-1")
    b.put("extra", b"x1", b"a bucket of another version")  # read too: every named database
    copy = tmp_path / "copy" / "backend.db"
    copy.parent.mkdir()
    fd = os.open(copy, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        b.env.copyfd(fd, compact=True)
    finally:
        os.close(fd)
    b.close()
    verify_file(str(copy))
    assert os.listdir(copy.parent) == ["backend.db"]  # no lock file next to it
    env = lmdb.open(str(copy), subdir=False, lock=False, max_dbs=16)
    with env.begin(write=True) as txn:
        txn.put(
            b"x1",
            seal(b"x1", b"a bucket of another version")[:-1] + b"!",
            db=env.open_db(b"extra", txn=txn),
        )
    env.close()
    with pytest.raises(BackendCorruptionError) as ei:
        verify_file(str(copy))
    assert (ei.value.bucket, ei.value.key) == ("extra", b"x1")
    copy.write_bytes(b"not an LMDB file" * 512)
    with pytest.raises(lmdb.Error):
        verify_file(str(copy))


def test_space_exceeded(tmp_path: Path) -> None:
    b = Backend(tmp_path, BackendConfig(map_size=1024 * 1024))
    with pytest.raises(BackendSpaceExceededError, match="database space exceeded"):
        for i in range(1000):
            b.put("lease", i.to_bytes(8, "big"), b"x" * 4000)
    assert b.size() <= b.quota
    b.close()


def test_sync_modes(tmp_path: Path) -> None:
    for mode in ("full", "nometasync", "nosync"):
        b = Backend(tmp_path / mode, BackendConfig(map_size=SMALL_MAP, sync_mode=mode))
        b.put("meta", b"k", mode.encode())
        b.force_commit()
        b.close()
        b = Backend(tmp_path / mode, BackendConfig(map_size=SMALL_MAP, sync_mode=mode))
        assert b.get("meta", b"k") == mode.encode()
        b.close()
    with pytest.raises(ValueError):
        Backend(tmp_path / "x", BackendConfig(sync_mode="fast"))  # type: ignore[arg-type]


def test_revision_codec() -> None:
    r = pack(5, 3)
    raw = rev_to_bytes(r)
    assert raw == (5).to_bytes(8, "big") + b"_" + (3).to_bytes(8, "big")
    assert bytes_to_rev(raw) == r and not is_tombstone(raw)
    t = rev_to_bytes(r, tombstone=True)
    assert t == raw + b"t" and is_tombstone(t) and bytes_to_rev(t) == r
    assert main_to_bytes(5) == rev_to_bytes(pack(5, 0))
    assert rev_to_bytes(pack(2, 0)) < rev_to_bytes(pack(2, 0), True) < rev_to_bytes(pack(2, 1))
    with pytest.raises(ValueError):
        pack(1, 1 << 32)
    kv = KeyValue(b"key", 2, 9, 3, b"value", 77)
    assert decode_kv(encode_kv(kv)) == kv


def test_kv_proto_encoding_matches_protobuf_rules() -> None:
    assert payload_to_proto(encode_kv(KeyValue(b"a"))) == b"\x0a\x01a"
    assert payload_to_proto(encode_kv(KeyValue(b"a", 2, 300, 1, b"v", 0))) == (
        b"\x0a\x01a\x10\x02\x18\xac\x02\x20\x01\x2a\x01v"
    )
    assert payload_to_proto(encode_kv(KeyValue(b"", lease=-1))) == b"\x30" + b"\xff" * 9 + b"\x01"


# -- batched commits ------------------------------------------------------------------------


def _committed_count(b: Backend, bucket: str) -> int:
    """Entries of ``bucket`` in the file, read without committing the pending batch."""
    with b.env.begin() as txn:
        return int(txn.stat(b.db(bucket))["entries"])


def _batched(path: Path, interval: float = 3600.0, limit: int = 1000) -> Backend:
    return Backend(
        path, BackendConfig(map_size=SMALL_MAP, batch_interval=interval, batch_limit=limit)
    )


def _put_batch(b: Backend, key: bytes, ops: int = 1) -> None:
    tx, raw = b.begin_batch()
    tx.put("lease", key, b"v")
    raw.commit()
    b.end_batch(ops)


def test_batches_stay_pending_until_committed_yet_are_read(tmp_path: Path) -> None:
    b = _batched(tmp_path)
    commits: list[float] = []
    b.on_commit = commits.append
    _put_batch(b, b"a")
    _put_batch(b, b"b")
    assert _committed_count(b, "lease") == 0
    assert b.commit_deadline() is not None
    with b.read_latest() as tx:
        assert [k for k, _v in tx.iterate("lease")] == [b"a", b"b"]
    assert commits == []
    b.commit_pending()
    assert _committed_count(b, "lease") == 2
    assert b.commit_deadline() is None
    assert len(commits) == 1 and commits[0] >= 0
    b.close()


def test_read_write_and_close_commit_the_pending_batch_first(tmp_path: Path) -> None:
    b = _batched(tmp_path)
    _put_batch(b, b"a")
    assert b.get("lease", b"a") == b"v"  # read() commits first
    assert _committed_count(b, "lease") == 1
    _put_batch(b, b"b")
    b.put("members", b"m", b"x")  # write() commits first, then its own transaction
    assert _committed_count(b, "lease") == 2
    _put_batch(b, b"c")
    b.close()
    b = _batched(tmp_path)
    assert [k for k, _v in b.items("lease")] == [b"a", b"b", b"c"]
    b.close()


def test_batch_commits_when_it_reaches_the_limit_or_the_interval(tmp_path: Path) -> None:
    b = _batched(tmp_path / "limit", limit=5)
    _put_batch(b, b"a", ops=3)
    assert _committed_count(b, "lease") == 0
    _put_batch(b, b"b", ops=2)
    assert _committed_count(b, "lease") == 2 and b.commit_deadline() is None
    b.close()
    b = _batched(tmp_path / "interval", interval=0.0)
    _put_batch(b, b"a")
    assert _committed_count(b, "lease") == 1 and b.commit_deadline() is None
    b.close()


def test_an_aborted_nested_batch_keeps_the_pending_ones(tmp_path: Path) -> None:
    b = _batched(tmp_path)
    _put_batch(b, b"a")
    tx, raw = b.begin_batch()
    tx.put("lease", b"b", b"v")
    raw.abort()
    b.commit_pending()
    assert [k for k, _v in b.items("lease")] == [b"a"]
    b.close()


def test_the_pending_batch_belongs_to_its_thread(tmp_path: Path) -> None:
    b = _batched(tmp_path)
    _put_batch(b, b"a")
    errors: list[BaseException] = []

    def other() -> None:
        for call in (b.commit_pending, lambda: b.read_latest().__enter__()):
            try:
                call()
            except RuntimeError as exc:
                errors.append(exc)

    t = threading.Thread(target=other)
    t.start()
    t.join()
    assert len(errors) == 2
    assert _committed_count(b, "lease") == 0
    b.close()
    assert Backend(tmp_path, BackendConfig(map_size=SMALL_MAP)).items("lease")[0][0] == b"a"


def test_store_reads_see_applied_writes_before_the_commit(tmp_path: Path) -> None:
    s = KVStore(_batched(tmp_path))
    s.apply_batch([(1, 1, PutRequest(b"k", b"v1"))])
    s.apply_batch([(2, 1, PutRequest(b"k", b"v2"))])
    assert _committed_count(s.backend, "key") == 0
    kvs = s.range(RangeRequest(b"k")).kvs
    assert [(kv.value, kv.mod_revision) for kv in kvs] == [(b"v2", 3)]
    assert s.range(RangeRequest(b"k", revision=2)).kvs[0].value == b"v1"
    hashed, _rev = s.hash_kv()  # hashing reads the file: the pending batch is committed first
    assert _committed_count(s.backend, "key") == 2
    s.backend.close()
    reopened = KVStore(Backend(tmp_path, BackendConfig(map_size=SMALL_MAP)))
    assert reopened.consistent_index == 2
    assert reopened.hash_kv()[0] == hashed
    reopened.backend.close()
