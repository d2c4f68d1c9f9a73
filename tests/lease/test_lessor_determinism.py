"""Determinism of apply: two members applying the same entries end byte-identical.

Member A changes role (promote/demote) and drives the leader loop the server
will run (keepalives, proposing revokes for expired leases and checkpoints);
member B stays a follower.  Both apply the same committed operations, each with
its own store (iterating in opposite orders).  A plain-dict model says what the
replicated state must be.  At the end both stores are restored into fresh
lessors, keys re-attached from the model's key index in opposite orders.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hypothesis import given, settings
from hypothesis import strategies as st

from raftkv.lease import (
    MAX_LEASE_TTL,
    LeaseError,
    Lessor,
    MemoryLeaseStore,
)

MIN_TTL = 3
IDS = st.sampled_from([1, 2, 3, 7, -5, (1 << 63) - 1, 0])
KEYS = st.sampled_from([b"", b"a", b"ab", b"b", b"\xff", b"key/1", b"key/2"])
TTLS = st.sampled_from([400, 100, 40, 10, 4, 3, 1, 0, -1, MAX_LEASE_TTL, MAX_LEASE_TTL + 1])

ARGS: dict[str, st.SearchStrategy[object]] = {
    "grant": TTLS,
    "revoke": st.none(),
    "attach": KEYS,
    "detach": KEYS,
    "checkpoint": st.integers(-2, 500),
    "tick": st.floats(0.0, 60.0, allow_nan=False),
    "promote": st.floats(0.0, 5.0, allow_nan=False),
    "demote": st.none(),
}
# Kinds repeated to weight them: mostly grants, keys and leader-loop turns.
KINDS = ["grant"] * 3 + ["tick"] * 5 + ["attach"] * 3 + list(ARGS)
OPS = st.sampled_from(KINDS).flatmap(lambda kind: st.tuples(st.just(kind), IDS, ARGS[kind]))


@dataclass
class Model:
    leases: dict[int, list[int]] = field(default_factory=dict)  # id -> [ttl, remaining]
    owner: dict[bytes, int] = field(default_factory=dict)

    def apply(self, op: str, lease_id: int, arg: object) -> object:
        """The expected outcome of one applied operation: a value or an error message."""
        if op == "grant":
            assert isinstance(arg, int)
            if lease_id == 0:
                return "lease not found"
            if arg > MAX_LEASE_TTL:
                return "too large lease TTL"
            if lease_id in self.leases:
                return "lease already exists"
            self.leases[lease_id] = [max(arg, MIN_TTL), 0]
            return max(arg, MIN_TTL)
        if op == "checkpoint":
            assert isinstance(arg, int)
            if lease_id in self.leases:
                self.leases[lease_id][1] = max(0, arg)
            return None
        if lease_id not in self.leases:
            return "lease not found"
        if op == "revoke":
            keys = sorted(k for k, owner in self.owner.items() if owner == lease_id)
            for key in keys:
                del self.owner[key]
            del self.leases[lease_id]
            return keys
        assert isinstance(arg, bytes)
        if op == "attach":
            self.owner[arg] = lease_id
        elif self.owner.get(arg) == lease_id:
            del self.owner[arg]
        return None


def apply(lessor: Lessor, op: str, lease_id: int, arg: object, now: float) -> object:
    try:
        if op == "grant":
            assert isinstance(arg, int)
            return lessor.grant(lease_id, arg, now=now).ttl
        if op == "revoke":
            return lessor.revoke(lease_id)
        if op == "checkpoint":
            assert isinstance(arg, int)
            lessor.apply_checkpoint(lease_id, arg)
            return None
        assert isinstance(arg, bytes)
        if op == "attach":
            lessor.attach(lease_id, arg)
        else:
            lessor.detach(lease_id, arg)
        return None
    except LeaseError as err:
        return str(err)


def snapshot(lessor: Lessor) -> list[tuple[int, int, int, list[bytes]]]:
    return [(le.id, le.ttl, le.remaining_ttl, le.keys()) for le in lessor.leases()]


@settings(max_examples=150, deadline=None)
@given(st.booleans(), st.lists(OPS, min_size=10, max_size=100))
def test_same_entries_give_identical_state_and_restores(
    start_as_leader: bool, ops: list[tuple[str, int | None, object]]
) -> None:
    store_a, store_b = MemoryLeaseStore(), MemoryLeaseStore(reverse=True)
    lessor_a = Lessor(store_a, min_ttl=MIN_TTL, checkpoint_interval=30.0)
    lessor_b = Lessor(store_b, min_ttl=MIN_TTL, checkpoint_interval=30.0)
    model = Model()
    now = 0.0
    if start_as_leader:
        lessor_a.promote(0.0, now=now)

    committed: list[tuple[str, int, object]] = []
    for op, lease_id, arg in ops:
        if op == "promote":
            assert isinstance(arg, float)
            lessor_a.promote(arg, now=now)
        elif op == "demote":
            lessor_a.demote()
        elif op == "tick":
            # One turn of the server's leader loop on A: a keepalive, then proposals.
            assert isinstance(arg, float) and lease_id is not None
            now += arg
            if lessor_a.is_primary and lessor_a.lookup(lease_id) is not None:
                lease = lessor_a.lookup(lease_id)
                assert lease is not None and lease.expiry is not None
                if lease.expiry > now:
                    assert lessor_a.renew(lease_id, now) == lease.ttl
            committed += [("revoke", i, None) for i in lessor_a.expired_leases(now)]
            committed += [("checkpoint", i, r) for i, r in lessor_a.checkpoint_candidates(now)]
            assert lessor_b.expired_leases(now) == []
            assert lessor_b.checkpoint_candidates(now) == []
        else:
            assert lease_id is not None
            committed.append((op, lease_id, arg))
        for c_op, c_id, c_arg in committed:
            expected = model.apply(c_op, c_id, c_arg)
            assert apply(lessor_a, c_op, c_id, c_arg, now) == expected
            assert apply(lessor_b, c_op, c_id, c_arg, now) == expected
        committed.clear()
        lessor_a.check_invariants()
        lessor_b.check_invariants()

    expected_state = [
        (i, ttl, rem, sorted(k for k, o in model.owner.items() if o == i))
        for i, (ttl, rem) in sorted(model.leases.items())
    ]
    assert snapshot(lessor_a) == snapshot(lessor_b) == expected_state
    assert lessor_a.state_digest() == lessor_b.state_digest()
    assert store_a.records == store_b.records

    restored = []
    for store, reverse in ((store_a, False), (store_b, True)):
        fresh = Lessor(MemoryLeaseStore(), min_ttl=MIN_TTL)
        fresh.restore(store)
        for key in sorted(model.owner, reverse=reverse):
            fresh.attach(model.owner[key], key)
        fresh.check_invariants()
        restored.append(fresh)
    assert snapshot(restored[0]) == snapshot(restored[1]) == expected_state
    assert restored[0].state_digest() == restored[1].state_digest() == lessor_a.state_digest()


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(IDS.filter(lambda i: i != 0), TTLS), max_size=20),
    st.floats(0.0, 5.0, allow_nan=False),
    st.floats(0.0, 1e6, allow_nan=False),
)
def test_promote_after_restore_never_exceeds_checkpoint_plus_extend(
    grants: list[tuple[int, int]], extend: float, now: float
) -> None:
    store = MemoryLeaseStore()
    lessor = Lessor(store, min_ttl=MIN_TTL)
    for lease_id, ttl in grants:
        if ttl <= MAX_LEASE_TTL and lessor.lookup(lease_id) is None:
            lessor.grant(lease_id, ttl)
            lessor.apply_checkpoint(lease_id, ttl // 2)
    successor = Lessor(MemoryLeaseStore(), min_ttl=MIN_TTL)
    successor.restore(store)
    successor.promote(extend, now=now)
    for lease in successor.leases():
        assert lease.expiry == now + extend + lease.checkpointed_ttl()
        assert lease.checkpointed_ttl() <= lease.ttl
    due = successor.expired_leases(now + extend + MIN_TTL - 1e-6)
    assert sorted(due) == [le.id for le in successor.leases() if le.checkpointed_ttl() < MIN_TTL]
