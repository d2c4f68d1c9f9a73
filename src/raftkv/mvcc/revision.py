"""Revisions and the on-disk encoding of the key bucket.

Owns:
- the in-memory revision form: one int ``main << 32 | sub`` ("packed"), cheap to
  store by the million and ordered like etcd's (main, sub) pairs;
- etcd's 17-byte bucket key: main (8 bytes, big-endian) ``_`` sub (8 bytes,
  big-endian), plus a trailing ``t`` for a tombstone;
- the stored form of a ``KeyValue`` (fixed header + key + value) and its
  canonical protobuf encoding (mvccpb.KeyValue, proto3 rules), which is what
  HashKV hashes so the hash equals etcd's for the same history.

Contracts: ``0 <= sub < 2**32`` (a txn has at most 2**32 writes); bucket keys
sort bytewise in revision order.
"""

from __future__ import annotations

import struct

from raftkv.mvcc.types import KeyValue
from raftkv.proto import kv_pb2

SUB_BITS = 32
SUB_MASK = (1 << SUB_BITS) - 1
REV_BYTES_LEN = 17
TOMBSTONE_MARK = b"t"

_REV = struct.Struct(">QcQ")
_KV_HEADER = struct.Struct(">qqqqI")
_KV_PROTO = kv_pb2.KeyValue


def pack(main: int, sub: int = 0) -> int:
    """Return the packed form of revision (main, sub)."""
    if not 0 <= sub <= SUB_MASK:
        raise ValueError(f"sub revision out of range: {sub}")
    return (main << SUB_BITS) | sub


def main_of(packed: int) -> int:
    return packed >> SUB_BITS


def sub_of(packed: int) -> int:
    return packed & SUB_MASK


def rev_to_bytes(packed: int, tombstone: bool = False) -> bytes:
    """etcd's bucket key for a revision (18 bytes with the tombstone mark)."""
    raw = _REV.pack(packed >> SUB_BITS, b"_", packed & SUB_MASK)
    return raw + TOMBSTONE_MARK if tombstone else raw


def main_to_bytes(main: int) -> bytes:
    """The 17-byte key of revision (main, 0): the lowest key of that main revision."""
    return _REV.pack(main, b"_", 0)


def bytes_to_rev(raw: bytes) -> int:
    """Packed revision of a bucket key (with or without the tombstone mark)."""
    main, _, sub = _REV.unpack_from(raw)
    return int((main << SUB_BITS) | sub)


def is_tombstone(raw: bytes) -> bool:
    return len(raw) == REV_BYTES_LEN + 1 and raw[REV_BYTES_LEN:] == TOMBSTONE_MARK


def encode_kv(kv: KeyValue) -> bytes:
    """Stored payload of a key-bucket entry (the CRC is added by the backend)."""
    return (
        _KV_HEADER.pack(kv.create_revision, kv.mod_revision, kv.version, kv.lease, len(kv.key))
        + kv.key
        + kv.value
    )


def encode_kv_fields(
    key: bytes, value: bytes, create: int, mod: int, version: int, lease: int
) -> bytes:
    return _KV_HEADER.pack(create, mod, version, lease, len(key)) + key + value


def decode_kv(payload: bytes) -> KeyValue:
    create, mod, version, lease, klen = _KV_HEADER.unpack_from(payload)
    start = _KV_HEADER.size
    return KeyValue(
        payload[start : start + klen], create, mod, version, payload[start + klen :], lease
    )


def decode_kv_meta(payload: bytes) -> tuple[bytes, int, int, int]:
    """(key, create_revision, version, lease) without materialising the value."""
    create, _mod, version, lease, klen = _KV_HEADER.unpack_from(payload)
    start = _KV_HEADER.size
    return payload[start : start + klen], create, version, lease


def payload_to_proto(payload: bytes) -> bytes:
    """The stored record ``payload`` as the canonical proto3 encoding of mvccpb.KeyValue (zero
    fields omitted, in field order): the bytes etcd stores and HashKV hashes, which protobuf's
    C runtime writes exactly.  Hot: HashKV and snapshot export run it on every record."""
    create, mod, version, lease, klen = _KV_HEADER.unpack_from(payload)
    start = _KV_HEADER.size
    return _KV_PROTO(
        key=payload[start : start + klen],
        create_revision=create,
        mod_revision=mod,
        version=version,
        value=payload[start + klen :],
        lease=lease,
    ).SerializeToString()
