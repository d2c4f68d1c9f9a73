"""Backend: buckets, CRC envelope, bit-rot detection, space quota, revision codec."""

from __future__ import annotations

from pathlib import Path

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
from raftkv.mvcc.backend import DEFAULT_BUCKETS, seal
from raftkv.mvcc.revision import (
    bytes_to_rev,
    decode_kv,
    encode_kv,
    is_tombstone,
    kv_to_proto,
    main_to_bytes,
    pack,
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
    assert kv_to_proto(KeyValue(b"a")) == b"\x0a\x01a"
    assert kv_to_proto(KeyValue(b"a", 2, 300, 1, b"v", 0)) == (
        b"\x0a\x01a\x10\x02\x18\xac\x02\x20\x01\x2a\x01v"
    )
    assert kv_to_proto(KeyValue(b"", lease=-1)) == b"\x30" + b"\xff" * 9 + b"\x01"
