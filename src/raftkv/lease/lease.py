"""One lease, its persisted encoding, and the persistence seam of the lessor.

Owns:
- ``Lease``: the replicated part (ID, granted TTL, checkpointed remaining TTL,
  attached keys) and the leader-local part (``expiry``, a monotonic time or
  ``None`` for "never": followers keep no expiry);
- the binary record stored per lease in the backend's lease bucket;
- ``LeaseStore``, the Protocol the server backs with LMDB, and
  ``MemoryLeaseStore``, a dict-backed implementation for tests and the simulator.

Record layout (big-endian, 29 bytes), after etcd's leasepb.Lease{ID, TTL, RemainingTTL}:

    version u8 (=1) | id i64 | ttl i64 | remaining_ttl i64 | crc32c u32 over the 25 bytes before

Attached keys are not in the record: the MVCC key index stores each key's lease
ID and the server re-attaches keys after ``Lessor.restore``.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterable, Iterator
from typing import Protocol

import crc32c

from raftkv.lease.errors import LeaseCorruptError

NO_LEASE = 0
"""The lease ID meaning "no lease" (etcd's NoLease)."""

MAX_LEASE_TTL = 9_000_000_000
"""Largest TTL in seconds a lease may be granted (etcd's MaxLeaseTTL)."""

INT64_MIN = -(1 << 63)
INT64_MAX = (1 << 63) - 1

RECORD_VERSION = 1
_BODY = struct.Struct(">Bqqq")
_CRC = struct.Struct(">I")
RECORD_SIZE = _BODY.size + _CRC.size


class Lease:
    """A lease owned by a ``Lessor``; callers read it, only the lessor mutates it.

    ``remaining_ttl`` is 0 when no checkpoint is recorded (the full ``ttl``
    then applies on promotion); it is replicated state, changed only by an
    applied checkpoint.  ``expiry`` is leader-local and never replicated.
    """

    __slots__ = ("_keys", "expiry", "id", "remaining_ttl", "ttl")

    def __init__(self, lease_id: int, ttl: int, remaining_ttl: int = 0) -> None:
        self.id = lease_id
        self.ttl = ttl
        self.remaining_ttl = remaining_ttl
        self.expiry: float | None = None
        self._keys: set[bytes] = set()

    def keys(self) -> list[bytes]:
        """The attached keys, sorted bytewise (the order revokes delete them in)."""
        return sorted(self._keys)

    @property
    def key_count(self) -> int:
        return len(self._keys)

    def has_key(self, key: bytes) -> bool:
        return key in self._keys

    def checkpointed_ttl(self) -> int:
        """The TTL a newly promoted leader starts this lease with (etcd's getRemainingTTL)."""
        return self.remaining_ttl if self.remaining_ttl > 0 else self.ttl

    def remaining(self, now: float) -> float:
        """Seconds until expiry at monotonic time ``now``; ``inf`` when the lease has no expiry."""
        if self.expiry is None:
            return math.inf
        return self.expiry - now

    def encode(self) -> bytes:
        """The persisted record of this lease (keys and expiry are not part of it)."""
        return encode_lease(self.id, self.ttl, self.remaining_ttl)

    def __repr__(self) -> str:
        return (
            f"Lease(id={self.id}, ttl={self.ttl}, remaining_ttl={self.remaining_ttl}, "
            f"expiry={self.expiry}, keys={len(self._keys)})"
        )


def encode_lease(lease_id: int, ttl: int, remaining_ttl: int) -> bytes:
    """Encode one lease record; every field must fit a signed 64-bit integer."""
    for name, value in (("lease_id", lease_id), ("ttl", ttl), ("remaining_ttl", remaining_ttl)):
        if not INT64_MIN <= value <= INT64_MAX:
            raise ValueError(f"{name} {value} does not fit int64")
    body = _BODY.pack(RECORD_VERSION, lease_id, ttl, remaining_ttl)
    return body + _CRC.pack(crc32c.crc32c(body))


def decode_lease(data: bytes | bytearray | memoryview) -> Lease:
    """Decode one record into a fresh ``Lease`` (no keys, no expiry).

    Raises ``LeaseCorruptError`` and nothing else for any input that is not a
    record produced by ``encode_lease``.
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise LeaseCorruptError(f"lease record is {type(data).__name__}, not bytes")
    raw = bytes(data)
    if len(raw) != RECORD_SIZE:
        raise LeaseCorruptError(f"lease record has {len(raw)} bytes, want {RECORD_SIZE}")
    if raw[0] != RECORD_VERSION:
        raise LeaseCorruptError(f"lease record version {raw[0]} is not {RECORD_VERSION}")
    body, (crc,) = raw[: _BODY.size], _CRC.unpack_from(raw, _BODY.size)
    if crc32c.crc32c(body) != crc:
        raise LeaseCorruptError("lease record CRC mismatch")
    _, lease_id, ttl, remaining_ttl = _BODY.unpack(body)
    if lease_id == NO_LEASE:
        raise LeaseCorruptError("lease record has lease ID 0")
    return Lease(lease_id, ttl, remaining_ttl)


class LeaseStore(Protocol):
    """Where the lessor persists lease records (the backend's lease bucket).

    Contract: ``put_lease``/``delete_lease`` are called from the apply path and
    must land in the same backend write transaction as the entry being applied
    (so a revoke's lease deletion and its key deletions commit together);
    ``iter_leases`` yields every stored (lease_id, record) pair, in any order.
    """

    def put_lease(self, lease_id: int, data: bytes) -> None: ...

    def delete_lease(self, lease_id: int) -> None: ...

    def iter_leases(self) -> Iterable[tuple[int, bytes]]: ...


class MemoryLeaseStore:
    """A ``LeaseStore`` in a dict, for tests and the simulator.

    ``reverse`` makes ``iter_leases`` yield in descending ID order, so tests can
    check that nothing depends on the store's iteration order.
    """

    def __init__(self, *, reverse: bool = False) -> None:
        self.records: dict[int, bytes] = {}
        self._reverse = reverse

    def put_lease(self, lease_id: int, data: bytes) -> None:
        self.records[lease_id] = bytes(data)

    def delete_lease(self, lease_id: int) -> None:
        self.records.pop(lease_id, None)

    def iter_leases(self) -> Iterator[tuple[int, bytes]]:
        for lease_id in sorted(self.records, reverse=self._reverse):
            yield lease_id, self.records[lease_id]
