"""Lessor apply methods: grant, revoke, attach, detach, checkpoint, restore, digest."""

from __future__ import annotations

import pytest

from raftkv.lease import (
    MAX_LEASE_TTL,
    NO_LEASE,
    LeaseCorruptError,
    LeaseExistsError,
    LeaseNotFoundError,
    LeaseTTLTooLargeError,
    Lessor,
    MemoryLeaseStore,
    decode_lease,
    encode_lease,
    min_lease_ttl,
)
from tests.lease.support import MIN_TTL, make, must


def test_min_lease_ttl_matches_etcd_arithmetic() -> None:
    assert min_lease_ttl(10, 100) == 2  # etcd defaults: 1.5 s → 2 s
    assert min_lease_ttl(20, 100) == 3  # 3.0 s exactly, no float round-up
    assert min_lease_ttl(11, 100) == 2  # (33 // 2) ticks = 1.6 s
    assert min_lease_ttl(1, 1) == 1
    with pytest.raises(ValueError):
        min_lease_ttl(0, 100)


def test_constructor_rejects_bad_config() -> None:
    with pytest.raises(ValueError):
        Lessor(MemoryLeaseStore(), min_ttl=0)
    with pytest.raises(ValueError):
        Lessor(MemoryLeaseStore(), min_ttl=1, checkpoint_interval=0)
    with pytest.raises(ValueError):
        Lessor(MemoryLeaseStore(), min_ttl=1, revoke_rate=3)


def test_grant_persists_and_clamps_ttl() -> None:
    lessor, store = make()
    lease = lessor.grant(7, 60)
    assert (lease.id, lease.ttl, lease.remaining_ttl, lease.expiry) == (7, 60, 0, None)
    assert decode_lease(store.records[7]).ttl == 60
    short = lessor.grant(8, 1)
    assert short.ttl == MIN_TTL
    negative = lessor.grant(9, -5)
    assert negative.ttl == MIN_TTL
    assert decode_lease(store.records[8]).ttl == MIN_TTL
    assert lessor.lookup(7) is lease
    assert len(lessor) == 3


def test_grant_errors_in_etcd_order() -> None:
    lessor, store = make()
    with pytest.raises(LeaseNotFoundError, match=r"^lease not found$"):
        lessor.grant(NO_LEASE, 10)
    with pytest.raises(LeaseNotFoundError):
        lessor.grant(NO_LEASE, MAX_LEASE_TTL + 1)  # ID is checked before TTL
    with pytest.raises(LeaseTTLTooLargeError, match=r"^too large lease TTL$"):
        lessor.grant(5, MAX_LEASE_TTL + 1)
    assert lessor.grant(5, MAX_LEASE_TTL).ttl == MAX_LEASE_TTL
    with pytest.raises(LeaseExistsError, match=r"^lease already exists$"):
        lessor.grant(5, 10)
    with pytest.raises(LeaseTTLTooLargeError):
        lessor.grant(5, MAX_LEASE_TTL + 1)  # TTL is checked before existence
    assert must(lessor, 5).ttl == MAX_LEASE_TTL
    assert list(store.records) == [5]
    with pytest.raises(ValueError):
        lessor.grant(1 << 63, 10)


def test_revoke_returns_sorted_keys_and_deletes_record() -> None:
    lessor, store = make()
    lessor.grant(1, 10)
    lessor.grant(2, 10)
    for key in (b"zeta", b"alpha", b"\x00", b"mid"):
        lessor.attach(1, key)
    lessor.attach(2, b"other")
    assert lessor.revoke(1) == [b"\x00", b"alpha", b"mid", b"zeta"]
    assert lessor.lookup(1) is None
    assert 1 not in store.records and 2 in store.records
    assert lessor.get_lease(b"alpha") == NO_LEASE
    assert lessor.get_lease(b"other") == 2
    with pytest.raises(LeaseNotFoundError):
        lessor.revoke(1)
    assert lessor.revoke(2) == [b"other"]
    assert store.records == {}
    lessor.check_invariants()


def test_attach_detach_and_key_index() -> None:
    lessor, _ = make()
    lessor.grant(1, 10)
    lessor.grant(2, 10)
    lessor.attach(1, b"a")
    lessor.attach(1, b"a")
    lessor.attach(1, b"b")
    assert lessor.get_lease(b"a") == 1
    assert must(lessor, 1).keys() == [b"a", b"b"]
    # A key belongs to one lease: attaching it elsewhere moves it.
    lessor.attach(2, b"a")
    assert lessor.get_lease(b"a") == 2
    assert must(lessor, 1).keys() == [b"b"]
    # Detaching from a lease the key is not on changes nothing.
    lessor.detach(1, b"a")
    assert lessor.get_lease(b"a") == 2
    lessor.detach(2, b"a")
    assert lessor.get_lease(b"a") == NO_LEASE
    lessor.detach(2, b"never")
    with pytest.raises(LeaseNotFoundError):
        lessor.attach(3, b"x")
    with pytest.raises(LeaseNotFoundError):
        lessor.detach(3, b"x")
    assert lessor.get_lease(b"x") == NO_LEASE
    lessor.check_invariants()


def test_leases_sorted_by_id() -> None:
    lessor, _ = make()
    for lease_id in (30, -4, 2, 1 << 62):
        lessor.grant(lease_id, 10)
    assert [lease.id for lease in lessor.leases()] == [-4, 2, 30, 1 << 62]


def test_apply_checkpoint_persists_and_ignores_unknown() -> None:
    lessor, store = make()
    lessor.grant(1, 100)
    lessor.apply_checkpoint(1, 40)
    assert must(lessor, 1).remaining_ttl == 40
    assert decode_lease(store.records[1]).remaining_ttl == 40
    lessor.apply_checkpoint(1, -3)
    assert decode_lease(store.records[1]).remaining_ttl == 0
    lessor.apply_checkpoint(99, 5)
    assert 99 not in store.records and lessor.lookup(99) is None


def test_time_to_live_on_follower_uses_checkpoint() -> None:
    lessor, _ = make()
    lessor.grant(1, 100)
    lessor.attach(1, b"k2")
    lessor.attach(1, b"k1")
    assert lessor.time_to_live(1, now=5.0) == (100, 100, [b"k1", b"k2"])
    lessor.apply_checkpoint(1, 33)
    assert lessor.time_to_live(1, now=5.0) == (100, 33, [b"k1", b"k2"])
    with pytest.raises(LeaseNotFoundError):
        lessor.time_to_live(2, now=5.0)


def test_restore_rebuilds_from_store() -> None:
    lessor, store = make()
    lessor.grant(1, 100)
    lessor.grant(2, 50)
    lessor.apply_checkpoint(2, 20)
    lessor.attach(1, b"k")
    fresh, _ = make()
    fresh.restore(store)
    assert [(le.id, le.ttl, le.remaining_ttl, le.keys()) for le in fresh.leases()] == [
        (1, 100, 0, []),
        (2, 50, 20, []),
    ]
    assert not fresh.is_primary
    fresh.attach(1, b"k")  # the server re-attaches keys from the MVCC index
    assert fresh.state_digest() == lessor.state_digest()
    # The restored lessor writes to the store it was restored from.
    fresh.revoke(2)
    assert 2 not in store.records


def test_restore_clamps_ttl_to_min() -> None:
    store = MemoryLeaseStore()
    store.put_lease(4, encode_lease(4, 1, 0))
    lessor, _ = make()
    lessor.restore(store)
    assert must(lessor, 4).ttl == MIN_TTL


@pytest.mark.parametrize(
    "records",
    [
        {4: encode_lease(5, 10, 0)},
        {4: encode_lease(4, 10, 0)[:-1] + b"\x00"},
        {4: b"junk"},
    ],
)
def test_restore_rejects_corrupt_store_and_keeps_state(records: dict[int, bytes]) -> None:
    lessor, _ = make()
    lessor.grant(1, 10)
    before = lessor.state_digest()
    bad = MemoryLeaseStore()
    bad.records.update(records)
    with pytest.raises(LeaseCorruptError):
        lessor.restore(bad)
    assert lessor.state_digest() == before
    assert lessor.lookup(1) is not None


def test_state_digest_covers_every_replicated_field() -> None:
    def digest_after(*steps: tuple[str, int, object]) -> bytes:
        lessor, _ = make()
        lessor.grant(1, 10)
        lessor.attach(1, b"k")
        for name, lease_id, arg in steps:
            getattr(lessor, name)(lease_id, arg)
        return lessor.state_digest()

    digests = [
        digest_after(),
        digest_after(("grant", 2, 10)),
        digest_after(("grant", 2, 11)),
        digest_after(("apply_checkpoint", 1, 5)),
        digest_after(("attach", 1, b"k2")),
        digest_after(("detach", 1, b"k")),
        digest_after(("grant", 2, 10), ("attach", 2, b"k")),
    ]
    assert len(set(digests)) == len(digests)
    assert len(digests[0]) == 32
    # Key boundaries are framed: (b"ab",) and (b"a", b"b") differ.
    one = digest_after(("attach", 1, b"ab"), ("detach", 1, b"k"))
    two = digest_after(("attach", 1, b"a"), ("attach", 1, b"b"), ("detach", 1, b"k"))
    assert one != two


def test_state_digest_ignores_leader_local_state() -> None:
    lessor, _ = make()
    lessor.grant(1, 10)
    before = lessor.state_digest()
    lessor.promote(1.0, now=100.0)
    lessor.renew(1, now=101.0)
    assert lessor.state_digest() == before
