"""Errors raised by the MVCC store and its LMDB backend.

Owns: one exception class per condition a caller must handle, each carrying
etcd's exact message text (the API layer maps the class to a gRPC status and
prefixes ``etcdserver: `` where etcd does).  Two families:

- request errors (``MVCCRequestError``): the request cannot be served as asked
  (compacted or future revision, missing key for ignore_value/ignore_lease,
  unknown lease); the store is unchanged;
- storage errors (``BackendError``): the disk returned garbage or LMDB's map is
  full; the caller must stop serving from this member (corruption) or grow the map
  and write again (space exceeded: ``Backend.grow_map``).  The backend quota users
  meet, and its NOSPACE alarm, are a soft limit checked above this layer
  (``raftkv.server.quota``).
"""

from __future__ import annotations


class MVCCError(Exception):
    """Base class of every error this package raises on purpose."""


class MVCCRequestError(MVCCError):
    """The request is invalid for the current state; nothing was changed."""


class CompactedError(MVCCRequestError):
    """The requested revision is older than the compacted revision."""

    def __init__(self) -> None:
        super().__init__("mvcc: required revision has been compacted")


class FutureRevError(MVCCRequestError):
    """The requested revision is newer than the store's current revision."""

    def __init__(self) -> None:
        super().__init__("mvcc: required revision is a future revision")


class KeyNotFoundError(MVCCRequestError):
    """ignore_value / ignore_lease was set on a put whose key does not exist."""

    def __init__(self) -> None:
        super().__init__("etcdserver: key not found")


class LeaseNotFoundError(MVCCRequestError):
    """A put names a lease the lessor does not know (etcd's lease.ErrLeaseNotFound)."""

    def __init__(self) -> None:
        super().__init__("lease not found")


class DuplicateKeyError(MVCCRequestError):
    """A txn branch puts one key twice or puts a key it also deletes (etcd's checkIntervals)."""

    def __init__(self) -> None:
        super().__init__("etcdserver: duplicate key given in txn request")


class BackendError(MVCCError):
    """The storage layer failed; the member must not serve from it as is."""


class BackendCorruptionError(BackendError):
    """A stored value failed its CRC32C check (bit rot, torn page, misplaced write)."""

    def __init__(self, bucket: str, key: bytes, detail: str = "checksum mismatch") -> None:
        self.bucket = bucket
        self.key = key
        super().__init__(
            f"mvcc: backend corruption in bucket {bucket!r} at key {key.hex()}: {detail}"
        )


class BackendSpaceExceededError(BackendError):
    """LMDB's map is full: the write was refused (its transaction must be aborted).  The map
    is sized well above the soft quota, so a member meets this only past it; the applier then
    doubles the map (``Backend.grow_map``) and applies the batch again."""

    def __init__(self) -> None:
        super().__init__("mvcc: database space exceeded")
