"""Lessor leader-local methods: promote, demote, renew, expiry, checkpoints, leader change."""

from __future__ import annotations

import pytest

from raftkv.lease import (
    LeaseExpiredError,
    LeaseNotFoundError,
    NotPrimaryError,
)
from tests.lease.support import expiry, make, must


def test_grant_on_primary_sets_expiry_and_needs_now() -> None:
    lessor, store = make()
    lessor.promote(0.0, now=0.0)
    lease = lessor.grant(1, 10, now=5.0)
    assert lease.expiry == 15.0
    with pytest.raises(ValueError, match="now is required"):
        lessor.grant(2, 10)
    assert lessor.lookup(2) is None and 2 not in store.records


def test_promote_uses_checkpointed_ttl_plus_extend() -> None:
    lessor, _ = make()
    lessor.grant(1, 100)
    lessor.grant(2, 100)
    lessor.apply_checkpoint(2, 30)
    lessor.promote(1.5, now=1000.0)
    assert lessor.is_primary
    assert expiry(lessor, 1) == 1101.5
    assert expiry(lessor, 2) == 1031.5
    assert lessor.expired_leases(1031.4) == []
    assert lessor.expired_leases(1031.5) == [2]
    assert lessor.time_to_live(1, now=1001.2) == (100, 100, [])


def test_followers_never_report_expired_leases() -> None:
    lessor, _ = make()
    lessor.grant(1, 2)
    lessor.grant(2, 3)
    assert lessor.expired_leases(1e12) == []
    assert lessor.checkpoint_candidates(1e12) == []
    lessor.promote(0.0, now=0.0)
    lessor.demote()
    assert not lessor.is_primary
    assert all(lease.expiry is None for lease in lessor.leases())
    assert lessor.expired_leases(1e12) == []
    lessor.check_invariants()


def test_expired_leases_order_limit_and_retry() -> None:
    lessor, _ = make(expired_retry_interval=3.0)
    lessor.promote(0.0, now=0.0)
    for lease_id, ttl in ((1, 10), (2, 5), (3, 7), (4, 50)):
        lessor.grant(lease_id, ttl, now=0.0)
    assert lessor.expired_leases(4.9) == []
    assert lessor.expired_leases(10.0, limit=2) == [2, 3]
    assert lessor.expired_leases(10.0) == [1]
    # Not reported again until the retry interval passes or it is revoked.
    assert lessor.expired_leases(12.0) == []
    lessor.revoke(2)
    assert lessor.expired_leases(13.0) == [1, 3]
    assert lessor.expired_leases(13.5) == []


def test_renew_restarts_full_ttl() -> None:
    lessor, _ = make()
    lessor.grant(1, 10)
    with pytest.raises(NotPrimaryError, match=r"^not a primary lessor$"):
        lessor.renew(1, now=0.0)
    lessor.promote(0.0, now=0.0)
    assert lessor.renew(1, now=8.0) == 10
    assert expiry(lessor, 1) == 18.0
    assert lessor.expired_leases(17.9) == []
    assert lessor.time_to_live(1, now=9.5) == (10, 8, [])
    with pytest.raises(LeaseNotFoundError):
        lessor.renew(2, now=9.0)
    assert lessor.expired_leases(18.0) == [1]
    with pytest.raises(LeaseExpiredError):
        lessor.renew(1, now=18.0)
    assert lessor.time_to_live(1, now=20.0) == (10, 0, [])


def test_renew_of_checkpointed_lease_queues_a_clear() -> None:
    lessor, _ = make(checkpoint_interval=60.0)
    lessor.grant(1, 100)
    lessor.apply_checkpoint(1, 30)
    lessor.promote(0.0, now=0.0)
    assert expiry(lessor, 1) == 30.0
    # The pending checkpoint does not stop keepalives: the lease gets its full TTL now.
    assert lessor.renew(1, now=10.0) == 100
    assert expiry(lessor, 1) == 110.0
    assert must(lessor, 1).remaining_ttl == 30
    assert lessor.checkpoint_candidates(11.0) == [(1, 0)]
    assert lessor.checkpoint_candidates(11.0) == []
    lessor.apply_checkpoint(1, 0)
    assert lessor.renew(1, now=12.0) == 100
    assert lessor.checkpoint_candidates(12.0) == []


def test_renew_clear_not_queued_when_checkpointing_disabled() -> None:
    lessor, _ = make(enable_checkpoint=False, checkpoint_interval=10.0)
    lessor.grant(1, 100)
    lessor.apply_checkpoint(1, 30)
    lessor.promote(0.0, now=0.0)
    lessor.renew(1, now=1.0)
    assert lessor.checkpoint_candidates(50.0) == []


def test_scheduled_checkpoints() -> None:
    lessor, _ = make(checkpoint_interval=60.0)
    lessor.promote(0.0, now=0.0)
    lessor.grant(1, 300, now=0.0)
    lessor.grant(2, 30, now=0.0)  # shorter than the interval: never checkpointed
    lessor.grant(3, 300, now=0.0)
    assert lessor.checkpoint_candidates(59.9) == []
    lessor.renew(3, now=59.7)  # remaining rounds up to its TTL: skipped
    assert lessor.checkpoint_candidates(60.0) == [(1, 240)]
    assert lessor.checkpoint_candidates(60.5) == []
    assert lessor.checkpoint_candidates(120.25) == [(1, 180), (3, 240)]
    lessor.revoke(1)
    assert lessor.checkpoint_candidates(180.5) == [(3, 180)]


def test_checkpoint_batch_limit() -> None:
    lessor, _ = make(checkpoint_interval=10.0, checkpoint_batch_limit=2)
    lessor.promote(0.0, now=0.0)
    for lease_id in range(1, 6):
        lessor.grant(lease_id, 100, now=0.0)
    first = lessor.checkpoint_candidates(20.0)
    second = lessor.checkpoint_candidates(20.0)
    third = lessor.checkpoint_candidates(20.0)
    assert first == [(1, 80), (2, 80)]
    assert second == [(3, 80), (4, 80)]
    assert third == [(5, 80)]


def test_leader_change_respects_checkpointed_remaining_ttl() -> None:
    leader, leader_store = make(checkpoint_interval=300.0)
    follower, follower_store = make(checkpoint_interval=300.0)
    leader.promote(0.0, now=0.0)
    for lessor in (leader, follower):
        lessor.grant(1, 1000, now=0.0)
        lessor.grant(2, 1000, now=0.0)
        lessor.attach(1, b"k")
    leader.renew(2, now=299.5)
    cps = leader.checkpoint_candidates(300.0)
    assert cps == [(1, 700)]
    for lease_id, remaining in cps:
        leader.apply_checkpoint(lease_id, remaining)
        follower.apply_checkpoint(lease_id, remaining)
    assert leader.state_digest() == follower.state_digest()
    assert leader_store.records == follower_store.records

    # The follower restarts, restores from its store and wins the election.
    successor, _ = make(checkpoint_interval=300.0)
    successor.restore(follower_store)
    successor.attach(1, b"k")
    assert successor.state_digest() == leader.state_digest()
    assert successor.expired_leases(1e12) == []
    successor.promote(2.0, now=5000.0)
    assert expiry(successor, 1) == 5702.0
    assert expiry(successor, 2) == 6002.0
    assert successor.expired_leases(5701.9) == []
    assert successor.expired_leases(5702.0) == [1]
    assert successor.revoke(1) == [b"k"]


def test_promote_rate_limits_simultaneous_expiries() -> None:
    lessor, _ = make(revoke_rate=8)  # at most 3/4 * 8 = 6 expiries per second
    for lease_id in range(1, 25):
        lessor.grant(lease_id, 10)
    lessor.promote(0.0, now=100.0)
    expiries = sorted(expiry(lessor, lease.id) for lease in lessor.leases())
    assert expiries[0] == 110.0
    assert all(110.0 <= e <= 115.0 for e in expiries)
    for start in range(110, 116):
        in_window = [e for e in expiries if start <= e < start + 1]
        assert len(in_window) <= 6, (start, in_window)
    # Fewer leases than the revoke rate are not spread.
    small, _ = make(revoke_rate=8)
    for lease_id in range(1, 8):
        small.grant(lease_id, 10)
    small.promote(0.0, now=100.0)
    assert {lease.expiry for lease in small.leases()} == {110.0}


def test_promote_twice_resets_schedules() -> None:
    lessor, _ = make(checkpoint_interval=10.0)
    lessor.grant(1, 100)
    lessor.promote(0.0, now=0.0)
    lessor.promote(0.0, now=50.0)
    assert expiry(lessor, 1) == 150.0
    assert lessor.checkpoint_candidates(55.0) == []
    assert lessor.checkpoint_candidates(60.0) == [(1, 90)]
    lessor.check_invariants()
