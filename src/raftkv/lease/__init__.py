"""Leases: TTL-bound key ownership with etcd's lessor semantics.

Owns the public surface of ``raftkv.lease``: the ``Lessor`` (apply methods and
leader-local expiry/keepalive/checkpoint methods), the ``Lease`` record and its
persisted encoding, the ``LeaseStore`` persistence seam, and the lease errors.
Nothing here reads a clock: callers pass a monotonic ``now``.
"""

from __future__ import annotations

from raftkv.lease.errors import (
    LeaseCorruptError,
    LeaseError,
    LeaseExistsError,
    LeaseExpiredError,
    LeaseNotFoundError,
    LeaseTTLTooLargeError,
    NotPrimaryError,
)
from raftkv.lease.lease import (
    MAX_LEASE_TTL,
    NO_LEASE,
    RECORD_SIZE,
    Lease,
    LeaseStore,
    MemoryLeaseStore,
    decode_lease,
    encode_lease,
)
from raftkv.lease.lease_queue import LeaseQueue
from raftkv.lease.lessor import (
    DEFAULT_CHECKPOINT_INTERVAL,
    DEFAULT_EXPIRED_RETRY_INTERVAL,
    LEASE_REVOKE_RATE,
    MAX_CHECKPOINT_BATCH,
    Lessor,
    min_lease_ttl,
)

__all__ = [
    "DEFAULT_CHECKPOINT_INTERVAL",
    "DEFAULT_EXPIRED_RETRY_INTERVAL",
    "LEASE_REVOKE_RATE",
    "MAX_CHECKPOINT_BATCH",
    "MAX_LEASE_TTL",
    "NO_LEASE",
    "RECORD_SIZE",
    "Lease",
    "LeaseCorruptError",
    "LeaseError",
    "LeaseExistsError",
    "LeaseExpiredError",
    "LeaseNotFoundError",
    "LeaseQueue",
    "LeaseStore",
    "LeaseTTLTooLargeError",
    "Lessor",
    "MemoryLeaseStore",
    "NotPrimaryError",
    "decode_lease",
    "encode_lease",
    "min_lease_ttl",
]
