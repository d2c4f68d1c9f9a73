"""Shared helpers of the lease tests: a lessor over a memory store, non-None lookups."""

from __future__ import annotations

from raftkv.lease import Lease, Lessor, MemoryLeaseStore

MIN_TTL = 2


def make(
    store: MemoryLeaseStore | None = None,
    *,
    checkpoint_interval: float = 300.0,
    expired_retry_interval: float = 3.0,
    revoke_rate: int = 1000,
    checkpoint_batch_limit: int = 1000,
    enable_checkpoint: bool = True,
) -> tuple[Lessor, MemoryLeaseStore]:
    """A lessor with ``MIN_TTL`` over ``store`` (a fresh memory store by default)."""
    store = store if store is not None else MemoryLeaseStore()
    lessor = Lessor(
        store,
        min_ttl=MIN_TTL,
        checkpoint_interval=checkpoint_interval,
        expired_retry_interval=expired_retry_interval,
        revoke_rate=revoke_rate,
        checkpoint_batch_limit=checkpoint_batch_limit,
        enable_checkpoint=enable_checkpoint,
    )
    return lessor, store


def must(lessor: Lessor, lease_id: int) -> Lease:
    """The lease with that ID, failing the test when it does not exist."""
    lease = lessor.lookup(lease_id)
    assert lease is not None, f"lease {lease_id} missing"
    return lease


def expiry(lessor: Lessor, lease_id: int) -> float:
    """The expiry of a lease that must have one (the lessor is primary)."""
    value = must(lessor, lease_id).expiry
    assert value is not None, f"lease {lease_id} has no expiry"
    return value
