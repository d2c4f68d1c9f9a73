"""The state hash over a real MVCC store, lessor, member list and alarms, and its parts."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from raftkv.guard import digest
from raftkv.guard.state_hash import (
    PARTS,
    NotComparableError,
    StateHash,
    alarms_digest,
    compute_state_hash,
    members_digest,
)
from raftkv.lease import Lessor, MemoryLeaseStore
from raftkv.mvcc import Backend, BackendConfig, KVStore
from raftkv.mvcc.types import CompactionRequest, DeleteRangeRequest, PutRequest, WriteRequest
from raftkv.server.bootstrap import MemberInfo

CORRUPT = 2  # etcd's AlarmType.CORRUPT
NOSPACE = 1


@dataclass
class Member:
    """The replicated state of one member, built from the real components."""

    store: KVStore
    lessor: Lessor
    members: dict[int, MemberInfo] = field(default_factory=dict)
    alarms: set[tuple[int, int]] = field(default_factory=set)
    index: int = 0

    def apply(self, *reqs: WriteRequest) -> None:
        batch = []
        for req in reqs:
            self.index += 1
            batch.append((self.index, 1, req))
        self.store.apply_batch(batch)

    def state_hash(self) -> StateHash:
        kv_hash, _current = self.store.hash_kv(0)
        return compute_state_hash(
            applied_index=self.index,
            kv_hash=kv_hash,
            lease_digest=self.lessor.state_digest(),
            members=list(self.members.values()),
            alarms=self.alarms,
        )


def new_member(path: Path, reverse: bool) -> Member:
    backend = Backend(path, BackendConfig(map_size=64 * 1024 * 1024, sync_mode="nosync"))
    m = Member(KVStore(backend), Lessor(MemoryLeaseStore(reverse=reverse), min_ttl=2))
    m.lessor.grant(10, 60)
    m.lessor.grant(11, 5)
    m.lessor.attach(10, b"a")
    m.apply(
        PutRequest(b"a", b"1", lease=10),
        PutRequest(b"b", b"2"),
        PutRequest(b"c", b"3"),
        DeleteRangeRequest(b"c"),
        PutRequest(b"b", b"22"),
    )
    infos = [
        MemberInfo(1, "m1", ("http://a:2380",), ("http://a:2379",)),
        MemberInfo(2, "m2", ("http://b:2380",)),
        MemberInfo(3, "m3", ("http://c:2380", "http://c2:2380"), is_learner=True),
    ]
    for info in reversed(infos) if reverse else infos:
        m.members[info.id] = info
    m.alarms.add((2, NOSPACE))
    return m


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[tuple[Member, Member]]:
    a = new_member(tmp_path / "a", reverse=False)
    b = new_member(tmp_path / "b", reverse=True)  # other insertion orders, same state
    yield a, b
    a.store.backend.close()
    b.store.backend.close()


def test_equal_state_equal_hash(pair: tuple[Member, Member]) -> None:
    a, b = pair
    ha, hb = a.state_hash(), b.state_hash()
    assert ha == hb and ha.value == hb.value and len(ha.value) == 16
    assert ha.diff(hb) == ()
    assert ha.revision == 6 and ha.compact_revision == -1


def test_a_different_value_is_a_keys_mismatch(pair: tuple[Member, Member]) -> None:
    a, b = pair
    a.apply(PutRequest(b"b", b"3"))
    b.apply(PutRequest(b"b", b"X"))
    assert a.state_hash().diff(b.state_hash()) == ("keys",)


def test_a_skipped_write_is_a_revision_and_keys_mismatch(pair: tuple[Member, Member]) -> None:
    a, b = pair
    a.apply(PutRequest(b"d", b"4"))
    b.index += 1  # the entry was applied as nothing
    assert a.state_hash().diff(b.state_hash()) == ("revision", "keys")


def test_compaction_is_part_of_the_state(pair: tuple[Member, Member]) -> None:
    a, b = pair
    a.apply(CompactionRequest(3))
    a.store.run_compaction()
    b.apply(PutRequest(b"zz", b""))
    assert a.state_hash().diff(b.state_hash()) == ("revision", "compact_revision", "keys")


def test_a_forgotten_lease_is_a_leases_mismatch(pair: tuple[Member, Member]) -> None:
    a, b = pair
    b.lessor.revoke(11)
    assert a.state_hash().diff(b.state_hash()) == ("leases",)
    a.lessor.revoke(11)
    a.lessor.apply_checkpoint(10, 30)
    assert a.state_hash().diff(b.state_hash()) == ("leases",)


def test_member_and_alarm_mismatches_are_named(pair: tuple[Member, Member]) -> None:
    a, b = pair
    b.members[2] = dataclasses.replace(b.members[2], client_urls=("http://b:2379",))
    assert a.state_hash().diff(b.state_hash()) == ("members",)
    b.members[2] = a.members[2]
    b.alarms.add((3, CORRUPT))
    assert a.state_hash().diff(b.state_hash()) == ("alarms",)
    b.members.pop(1)
    assert a.state_hash().diff(b.state_hash()) == ("members", "alarms")


def test_hashes_at_different_indexes_are_not_comparable(pair: tuple[Member, Member]) -> None:
    a, b = pair
    b.apply(PutRequest(b"e", b"5"))
    with pytest.raises(NotComparableError):
        a.state_hash().diff(b.state_hash())


def test_judge_names_the_outlier_by_state_hash(pair: tuple[Member, Member], tmp_path: Path) -> None:
    a, b = pair
    c = new_member(tmp_path / "c", reverse=False)
    try:
        for m in (a, b):
            m.apply(PutRequest(b"f", b"6"))
        c.apply(PutRequest(b"f", b"7"))
        hashes = {1: a.state_hash(), 2: b.state_hash(), 3: c.state_hash()}
        truth, outliers = digest.judge({mid: h.value for mid, h in hashes.items()})
        assert truth == hashes[1].value and outliers == [3]
        assert hashes[1].diff(hashes[3]) == ("keys",)
    finally:
        c.store.backend.close()


# -- encodings -----------------------------------------------------------------------------


def test_dict_round_trip_and_tampering(pair: tuple[Member, Member]) -> None:
    h = pair[0].state_hash()
    obj = h.to_dict()
    assert set(obj) == {"applied_index", "value", *PARTS}
    assert StateHash.from_dict(obj) == h
    with pytest.raises(ValueError, match="does not match"):
        StateHash.from_dict({**obj, "keys": h.keys ^ 1})
    with pytest.raises(ValueError, match="malformed"):
        StateHash.from_dict({k: v for k, v in obj.items() if k != "leases"})
    with pytest.raises(ValueError):
        StateHash.from_dict({**obj, "members": "zz"})


def test_member_digest_is_canonical_and_covers_every_field() -> None:
    base = MemberInfo(5, "n", ("p1", "p2"), ("c1",), False)
    other = MemberInfo(6, "o", ("q",))
    assert members_digest([base, other]) == members_digest([other, base])
    variants = [
        dataclasses.replace(base, id=7),
        dataclasses.replace(base, name="m"),
        dataclasses.replace(base, peer_urls=("p2", "p1")),
        dataclasses.replace(base, peer_urls=("p1p2",)),
        dataclasses.replace(base, client_urls=()),
        dataclasses.replace(base, is_learner=True),
    ]
    seen = {members_digest([base, other])}
    for v in variants:
        seen.add(members_digest([v, other]))
    assert len(seen) == len(variants) + 1
    with pytest.raises(ValueError, match="twice"):
        members_digest([base, base])


def test_alarm_digest_is_a_set_digest() -> None:
    assert alarms_digest([(1, 2), (3, 1)]) == alarms_digest([(3, 1), (1, 2), (1, 2)])
    assert alarms_digest([(1, 2)]) != alarms_digest([(2, 1)])
    assert alarms_digest([]) != alarms_digest([(0, 0)])
