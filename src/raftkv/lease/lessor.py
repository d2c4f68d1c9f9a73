"""The lessor: every lease of one member, with etcd's lessor semantics.

Owns: the lease map, the key → lease index, persistence of lease records
through a ``LeaseStore``, and the leader-local machinery (expiry queue,
checkpoint schedule, keepalives).  Modelled on etcd's ``server/lease/lessor.go``.

Two kinds of methods:

- **Apply methods** (``grant``, ``revoke``, ``attach``, ``detach``,
  ``apply_checkpoint``, ``restore``) are called while applying committed
  entries (or at start-up).  Given the same sequence they leave byte-identical
  replicated state (IDs, TTLs, checkpointed remaining TTLs, keys) and store
  contents on every member, whatever role the member has.  They never read a
  clock and never choose anything at random: lease ID 0 ("pick one") is
  resolved by the SERVER before it proposes the grant, so a committed grant
  always carries the final ID and ``grant`` rejects 0.  The ``now`` that
  ``grant`` takes only sets the leader-local expiry.
- **Leader-local methods** (``promote``, ``demote``, ``renew``,
  ``expired_leases``, ``checkpoint_candidates``, ``time_to_live``) take time
  as a monotonic ``now`` in seconds and change only expiries and schedules,
  which are never replicated nor digested.  Expiry exists only on the primary
  (the Raft leader): followers keep ``expiry = None`` and never report an
  expired lease; the server turns ``expired_leases`` into proposed revokes and
  ``checkpoint_candidates`` into a proposed LeaseCheckpoint entry.
"""

from __future__ import annotations

import hashlib
import math
import struct

from raftkv.lease.errors import (
    LeaseCorruptError,
    LeaseExistsError,
    LeaseExpiredError,
    LeaseNotFoundError,
    LeaseTTLTooLargeError,
    NotPrimaryError,
)
from raftkv.lease.lease import (
    INT64_MAX,
    INT64_MIN,
    MAX_LEASE_TTL,
    NO_LEASE,
    Lease,
    LeaseStore,
    decode_lease,
)
from raftkv.lease.lease_queue import LeaseQueue

LEASE_REVOKE_RATE = 1000
"""Leases revoked per second at most (etcd's leaseRevokeRate); ``expired_leases``
returns half of it per call, the server calling it every 500 ms."""

DEFAULT_CHECKPOINT_INTERVAL = 300.0
"""Seconds between two checkpoints of one lease (etcd's defaultLeaseCheckpointInterval)."""

DEFAULT_EXPIRED_RETRY_INTERVAL = 3.0
"""Seconds before an expired lease not yet revoked is reported again."""

MAX_CHECKPOINT_BATCH = 1000
"""Checkpoints per LeaseCheckpoint entry at most (etcd's maxLeaseCheckpointBatchSize)."""

_DIGEST_TAG = b"raftkv/lease-state/v1\x00"
_DIGEST_LEASE = struct.Struct(">qqqI")
_DIGEST_LEN = struct.Struct(">I")


def min_lease_ttl(election_ticks: int, heartbeat_ms: int) -> int:
    """etcd's minimum lease TTL: ceil of 3/2 election timeouts, in whole seconds.

    As etcd computes it: ``(3 * election_ticks) // 2`` ticks of ``heartbeat_ms``
    milliseconds, rounded up to a second (defaults 10 ticks x 100 ms → 2 s).
    """
    if election_ticks <= 0 or heartbeat_ms <= 0:
        raise ValueError("election_ticks and heartbeat_ms must be positive")
    millis = ((3 * election_ticks) // 2) * heartbeat_ms
    return max(1, -(-millis // 1000))


def _check_id(lease_id: int) -> None:
    if not INT64_MIN <= lease_id <= INT64_MAX:
        raise ValueError(f"lease ID {lease_id} does not fit int64")
    if lease_id == NO_LEASE:
        # etcd's Grant answers ErrLeaseNotFound for NoLease; the server picks IDs.
        raise LeaseNotFoundError()


class Lessor:
    """All leases of one member; see the module docstring for the two kinds of methods."""

    def __init__(
        self,
        store: LeaseStore,
        *,
        min_ttl: int,
        checkpoint_interval: float = DEFAULT_CHECKPOINT_INTERVAL,
        expired_retry_interval: float = DEFAULT_EXPIRED_RETRY_INTERVAL,
        revoke_rate: int = LEASE_REVOKE_RATE,
        checkpoint_batch_limit: int = MAX_CHECKPOINT_BATCH,
        enable_checkpoint: bool = True,
    ) -> None:
        """Create an empty lessor over ``store``; call ``restore`` to load what it holds.

        ``min_ttl`` (seconds, >= 1) is the floor every granted TTL is raised to;
        compute it with ``min_lease_ttl``.  All members must use the same value,
        since it changes the TTL a grant records.
        """
        if min_ttl < 1:
            raise ValueError("min_ttl must be at least 1 second")
        if checkpoint_interval <= 0 or expired_retry_interval <= 0:
            raise ValueError("intervals must be positive")
        if revoke_rate < 4 or checkpoint_batch_limit < 1:
            raise ValueError("revoke_rate must be >= 4 and checkpoint_batch_limit >= 1")
        self._store = store
        self._min_ttl = min_ttl
        self._checkpoint_interval = checkpoint_interval
        self._expired_retry_interval = expired_retry_interval
        self._revoke_rate = revoke_rate
        self._checkpoint_batch_limit = checkpoint_batch_limit
        self._enable_checkpoint = enable_checkpoint
        self._leases: dict[int, Lease] = {}
        self._item_map: dict[bytes, int] = {}
        # Leader-local state: meaningful only while ``_primary``.
        self._primary = False
        self._expiry_queue = LeaseQueue()
        self._checkpoint_queue = LeaseQueue()
        self._pending_clears: set[int] = set()

    # ------------------------------------------------------------------ queries

    @property
    def is_primary(self) -> bool:
        return self._primary

    @property
    def min_ttl(self) -> int:
        return self._min_ttl

    def __len__(self) -> int:
        return len(self._leases)

    def lookup(self, lease_id: int) -> Lease | None:
        """The lease with that ID, or ``None``; the returned object must not be mutated."""
        return self._leases.get(lease_id)

    def leases(self) -> list[Lease]:
        """Every lease, sorted by ID."""
        return [self._leases[lease_id] for lease_id in sorted(self._leases)]

    def get_lease(self, key: bytes) -> int:
        """The ID of the lease ``key`` is attached to, or ``NO_LEASE``."""
        return self._item_map.get(key, NO_LEASE)

    def time_to_live(self, lease_id: int, now: float) -> tuple[int, int, list[bytes]]:
        """(granted TTL, remaining TTL, sorted keys) of a lease, as LeaseTimeToLive reports.

        On the primary the remaining TTL is the whole seconds left before expiry
        (truncated as etcd does, never below 0: an expired lease awaiting its
        revoke reports 0).  Elsewhere it is the checkpointed remaining TTL, the
        best a follower knows (etcd forwards this request to the leader).
        """
        lease = self._leases.get(lease_id)
        if lease is None:
            raise LeaseNotFoundError()
        if lease.expiry is None:
            remaining = lease.checkpointed_ttl()
        else:
            remaining = max(0, int(lease.expiry - now))
        return lease.ttl, remaining, lease.keys()

    # ------------------------------------------------------------ apply methods

    def grant(self, lease_id: int, ttl: int, now: float | None = None) -> Lease:
        """Create a lease from a committed LeaseGrant; returns it (its ``ttl`` is the granted TTL).

        Errors, checked in etcd's order: ID 0 → ``LeaseNotFoundError`` (the
        server must have picked an ID before proposing); ``ttl > MAX_LEASE_TTL``
        → ``LeaseTTLTooLargeError``; ID in use → ``LeaseExistsError``.  A TTL
        below ``min_ttl`` is raised to it.  ``now`` is required on the primary
        (it starts the lease's expiry) and ignored elsewhere.
        """
        _check_id(lease_id)
        if ttl > MAX_LEASE_TTL:
            raise LeaseTTLTooLargeError()
        if lease_id in self._leases:
            raise LeaseExistsError()
        at = self._require_now(now) if self._primary else 0.0
        lease = Lease(lease_id, max(ttl, self._min_ttl))
        self._store.put_lease(lease_id, lease.encode())
        self._leases[lease_id] = lease
        if self._primary:
            lease.expiry = at + lease.ttl
            self._expiry_queue.register(lease_id, lease.expiry)
            self._schedule_checkpoint(lease, at)
        return lease

    def revoke(self, lease_id: int) -> list[bytes]:
        """Delete a lease from a committed LeaseRevoke; returns its keys, sorted bytewise.

        The caller deletes those keys, in that order, in the same backend
        transaction as this call's ``delete_lease`` (etcd sorts them so every
        member writes identical revisions).  Unknown ID → ``LeaseNotFoundError``.
        """
        lease = self._leases.get(lease_id)
        if lease is None:
            raise LeaseNotFoundError()
        keys = lease.keys()
        self._store.delete_lease(lease_id)
        del self._leases[lease_id]
        for key in keys:
            if self._item_map.get(key) == lease_id:
                del self._item_map[key]
        self._expiry_queue.remove(lease_id)
        self._checkpoint_queue.remove(lease_id)
        self._pending_clears.discard(lease_id)
        return keys

    def attach(self, lease_id: int, key: bytes) -> None:
        """Attach ``key`` to a lease (a put with that lease was applied).

        A key belongs to at most one lease: attaching it moves it away from the
        lease it was attached to.  Unknown ID → ``LeaseNotFoundError``.
        """
        lease = self._leases.get(lease_id)
        if lease is None:
            raise LeaseNotFoundError()
        previous = self._item_map.get(key)
        if previous is not None and previous != lease_id:
            self._leases[previous]._keys.discard(key)
        lease._keys.add(key)
        self._item_map[key] = lease_id

    def detach(self, lease_id: int, key: bytes) -> None:
        """Detach ``key`` from a lease (the key was deleted or re-put without it).

        Detaching a key that is not attached to that lease is a no-op.
        Unknown ID → ``LeaseNotFoundError``.
        """
        lease = self._leases.get(lease_id)
        if lease is None:
            raise LeaseNotFoundError()
        lease._keys.discard(key)
        if self._item_map.get(key) == lease_id:
            del self._item_map[key]

    def apply_checkpoint(self, lease_id: int, remaining_ttl: int) -> None:
        """Record a committed checkpoint: the lease's remaining TTL as the leader saw it.

        ``remaining_ttl <= 0`` clears the checkpoint (the full TTL applies
        again, stored as 0).  A checkpoint of an unknown lease is ignored, as in
        etcd (the lease was revoked between proposal and apply).  Expiries are
        not touched: only ``promote`` turns checkpoints into expiries.
        """
        lease = self._leases.get(lease_id)
        if lease is None:
            return
        value = max(0, remaining_ttl)
        record = Lease(lease_id, lease.ttl, value).encode()
        self._store.put_lease(lease_id, record)
        lease.remaining_ttl = value

    def restore(self, store: LeaseStore) -> None:
        """Replace every lease by the records in ``store`` and use ``store`` from now on.

        Called at start-up and after a snapshot is installed.  Keys come back
        empty: the server re-attaches them from the MVCC key index.  The lessor
        comes back as a follower (no expiries); a leader promotes it again.  TTLs
        below ``min_ttl`` are raised to it, as etcd does on recovery.  A record
        that does not decode, or whose ID differs from its store key, raises
        ``LeaseCorruptError`` and leaves the lessor unchanged.
        """
        leases: dict[int, Lease] = {}
        for lease_id, data in store.iter_leases():
            lease = decode_lease(data)
            if lease.id != lease_id:
                raise LeaseCorruptError(f"lease record {lease.id} stored under ID {lease_id}")
            if lease_id in leases:
                raise LeaseCorruptError(f"lease {lease_id} stored twice")
            lease.ttl = max(lease.ttl, self._min_ttl)
            leases[lease_id] = lease
        self._store = store
        self._leases = leases
        self._item_map = {}
        self._clear_leader_state()

    def state_digest(self) -> bytes:
        """SHA-256 over the replicated state: (id, ttl, remaining_ttl, sorted keys) by ID.

        Equal on every member that applied the same entries; expiries and
        schedules are not part of it.
        """
        digest = hashlib.sha256(_DIGEST_TAG)
        digest.update(_DIGEST_LEN.pack(len(self._leases)))
        for lease_id in sorted(self._leases):
            lease = self._leases[lease_id]
            keys = lease.keys()
            digest.update(_DIGEST_LEASE.pack(lease_id, lease.ttl, lease.remaining_ttl, len(keys)))
            for key in keys:
                digest.update(_DIGEST_LEN.pack(len(key)))
                digest.update(key)
        return digest.digest()

    def check_invariants(self) -> None:
        """Raise ``AssertionError`` when the key index and the leases disagree."""
        attached = 0
        for lease_id, lease in self._leases.items():
            assert lease.id == lease_id, f"lease {lease.id} filed under {lease_id}"
            assert lease.ttl >= self._min_ttl, f"lease {lease_id} ttl below min"
            assert lease.remaining_ttl >= 0, f"lease {lease_id} negative remaining ttl"
            for key in lease._keys:
                assert self._item_map.get(key) == lease_id, f"key {key!r} not indexed"
            attached += lease.key_count
        assert attached == len(self._item_map), "key index has keys of no lease"
        if not self._primary:
            assert all(lease.expiry is None for lease in self._leases.values())
            assert not self._expiry_queue and not self._checkpoint_queue

    # ---------------------------------------------------- leader-local methods

    def promote(self, extend: float, now: float) -> None:
        """Become the primary: every lease expires ``extend`` seconds after its checkpointed TTL.

        As etcd's Promote: expiry = now + remaining (checkpointed, else full TTL)
        + extend.  With at least ``revoke_rate`` leases, expiries are spread so
        no one-second window holds more than 3/4 of the revoke rate, which keeps
        a leader change from revoking a pile-up of leases at once.
        """
        self._clear_leader_state()
        self._primary = True
        for lease_id in sorted(self._leases):
            lease = self._leases[lease_id]
            self._set_expiry(lease, now + extend + lease.checkpointed_ttl())
            self._schedule_checkpoint(lease, now)
        if len(self._leases) < self._revoke_rate:
            return
        ordered = sorted(self._leases.values(), key=lambda le: (le.remaining(now), le.id))
        base_window = ordered[0].remaining(now)
        next_window = base_window + 1.0
        expires = 0
        target_per_second = (3 * self._revoke_rate) // 4
        for lease in ordered:
            remaining = lease.remaining(now)
            if remaining > next_window:
                base_window = remaining
                next_window = base_window + 1.0
                expires = 1
                continue
            expires += 1
            if expires <= target_per_second:
                continue
            # The n-th lease of a crowded window moves to n/target seconds past the
            # window's start; leases already that far ahead move less.
            delay = expires / target_per_second - (remaining - base_window)
            next_window = base_window + delay
            self._set_expiry(lease, now + extend + delay + lease.checkpointed_ttl())

    def demote(self) -> None:
        """Stop being the primary: no lease has an expiry any more, schedules are dropped."""
        self._clear_leader_state()

    def renew(self, lease_id: int, now: float) -> int:
        """Keepalive: restart the lease's full TTL at ``now``; returns the TTL.

        Only the primary renews (``NotPrimaryError`` elsewhere).  An unknown ID
        raises ``LeaseNotFoundError``; a lease whose expiry passed raises
        ``LeaseExpiredError`` (its revoke is on its way).  A lease with a
        checkpointed remaining TTL renews at once from its full TTL; a
        checkpoint clearing the recorded value is queued for
        ``checkpoint_candidates`` (etcd proposes one too), so a later leader
        does not start the lease from the stale, shorter value.
        """
        if not self._primary:
            raise NotPrimaryError()
        lease = self._leases.get(lease_id)
        if lease is None:
            raise LeaseNotFoundError()
        if lease.expiry is not None and lease.expiry <= now:
            raise LeaseExpiredError()
        if self._enable_checkpoint and lease.remaining_ttl > 0:
            self._pending_clears.add(lease_id)
        self._set_expiry(lease, now + lease.ttl)
        return lease.ttl

    def expired_leases(self, now: float, limit: int = LEASE_REVOKE_RATE // 2) -> list[int]:
        """IDs of at most ``limit`` leases whose expiry is at or before ``now``, earliest first.

        Empty unless primary.  A returned lease is not returned again before
        ``expired_retry_interval`` seconds pass (so a revoke lost with a
        dropped proposal is retried) or it is revoked.  O(k log n) for k
        returned leases.
        """
        if not self._primary:
            return []
        expired: list[int] = []
        queue = self._expiry_queue
        while len(expired) < limit:
            top = queue.peek()
            if top is None or top[0] > now:
                break
            lease_id = top[1]
            lease = self._leases.get(lease_id)
            if lease is None:
                queue.remove(lease_id)
                continue
            if lease.expiry is not None and lease.expiry <= now:
                queue.register(lease_id, now + self._expired_retry_interval)
                expired.append(lease_id)
            elif lease.expiry is not None:
                queue.register(lease_id, lease.expiry)
            else:
                queue.remove(lease_id)
        return expired

    def checkpoint_candidates(self, now: float) -> list[tuple[int, int]]:
        """(lease_id, remaining_ttl) pairs to propose as one LeaseCheckpoint entry, by ID.

        Empty unless primary with checkpointing enabled.  Holds the clears
        queued by ``renew`` (remaining 0) and the leases whose scheduled
        checkpoint is due: every ``checkpoint_interval`` seconds a lease whose
        remaining time exceeds the interval records ceil(remaining seconds),
        skipped while that is not below its TTL.  At most
        ``checkpoint_batch_limit`` pairs; the rest wait for the next call.
        """
        if not self._primary or not self._enable_checkpoint:
            return []
        limit = self._checkpoint_batch_limit
        out: dict[int, int] = {}
        for lease_id in sorted(self._pending_clears):
            if len(out) >= limit:
                break
            self._pending_clears.discard(lease_id)
            if lease_id in self._leases:
                out[lease_id] = 0
        queue = self._checkpoint_queue
        while len(out) < limit:
            top = queue.peek()
            if top is None or top[0] > now:
                break
            _, lease_id = queue.pop()
            lease = self._leases.get(lease_id)
            if lease is None or lease.expiry is None or lease.expiry <= now:
                continue
            left = lease.expiry - now
            if left > self._checkpoint_interval:
                queue.register(lease_id, now + self._checkpoint_interval)
            remaining = math.ceil(left)
            if remaining < lease.ttl:
                out[lease_id] = remaining
        return sorted(out.items())

    # ------------------------------------------------------------------ helpers

    def _require_now(self, now: float | None) -> float:
        if now is None:
            raise ValueError("now is required on the primary lessor")
        return now

    def _set_expiry(self, lease: Lease, expiry: float) -> None:
        lease.expiry = expiry
        self._expiry_queue.register(lease.id, expiry)

    def _schedule_checkpoint(self, lease: Lease, now: float) -> None:
        if self._enable_checkpoint and lease.remaining(now) > self._checkpoint_interval:
            self._checkpoint_queue.register(lease.id, now + self._checkpoint_interval)

    def _clear_leader_state(self) -> None:
        self._primary = False
        for lease in self._leases.values():
            lease.expiry = None
        self._expiry_queue.clear()
        self._checkpoint_queue.clear()
        self._pending_clears.clear()
