"""The applier's checkpoints and state replacement, on real LMDB backends in temporary dirs:
state hashes are taken exactly at checkpoint entries, agree between members that applied the
same entries, tell a diverged one apart part by part, and a diverged member whose state is
replaced by a healthy member's backend, then re-applies the entries above it, ends equal."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from raftkv import failpoints
from raftkv.guard.state_hash import StateHash
from raftkv.mvcc.backend import BackendConfig
from raftkv.proto import rpc_pb2 as pb
from raftkv.raft.types import Entry
from raftkv.server.applier import Applier
from raftkv.server.bootstrap import MemberInfo
from raftkv.server.requests import RequestKind, encode_request

MEMBERS = [MemberInfo(1, "m1", ("http://127.0.0.1:2380",))]


def make_applier(root: Path) -> Applier:
    applier = Applier.detached(str(root), BackendConfig(map_size=64 << 20), min_lease_ttl=1)
    applier.write_initial_members(MEMBERS)
    return applier


def put(index: int, key: str, value: str) -> Entry:
    req = pb.PutRequest(key=key.encode(), value=value.encode())
    return Entry(1, index, data=encode_request(RequestKind.PUT, index, req.SerializeToString()))


def hash_check(index: int) -> Entry:
    return Entry(1, index, data=encode_request(RequestKind.HASH_CHECK, index, b""))


@pytest.fixture(autouse=True)
def no_failpoints() -> Iterator[None]:
    yield
    failpoints.configure(None)


def checkpoints_of(applier: Applier) -> list[tuple[int, StateHash]]:
    taken: list[tuple[int, StateHash]] = []

    def on_checkpoint(index: int, compaction: bool) -> None:
        assert not compaction
        taken.append((index, applier.state_hash_deferred()()))

    applier.on_checkpoint = on_checkpoint
    return taken


def test_state_hash_is_taken_at_the_checkpoint_entry(tmp_path: Path) -> None:
    a = make_applier(tmp_path / "a")
    taken = checkpoints_of(a)
    # one batch: the checkpoint at index 4 sees the puts at 2 and 3, not the one at 5
    a.apply_entries([put(2, "x", "1"), put(3, "y", "2"), hash_check(4), put(5, "z", "3")])
    assert [i for i, _sh in taken] == [4]
    ((_index, sh),) = taken
    assert (sh.applied_index, sh.revision) == (4, 3)
    assert a.applied_index() == 5
    a.close()


def test_members_agree_and_a_diverged_one_differs_in_keys(tmp_path: Path) -> None:
    entries = [put(2, "a", "1"), put(3, "b", "2"), hash_check(4)]
    good, other = make_applier(tmp_path / "good"), make_applier(tmp_path / "other")
    good_cp, other_cp = checkpoints_of(good), checkpoints_of(other)
    good.apply_entries(entries)
    other.apply_entries(entries)
    assert good_cp[0][1] == other_cp[0][1]
    bad = make_applier(tmp_path / "bad")
    bad_cp = checkpoints_of(bad)
    failpoints.configure("applyCorruptValue=1*on")
    bad.apply_entries(entries)
    assert good_cp[0][1].diff(bad_cp[0][1]) == ("keys",)
    for a in (good, other, bad):
        a.close()


def test_replaced_state_plus_reapplied_entries_equals_the_healthy_state(tmp_path: Path) -> None:
    head = [put(2, "a", "1"), put(3, "b", "2")]
    tail = [put(4, "c", "3"), put(5, "a", "4"), hash_check(6)]
    good, bad = make_applier(tmp_path / "good"), make_applier(tmp_path / "bad")
    good.apply_entries(head)
    copy = tmp_path / "copy.mdb"
    good.copy_backend(str(copy))  # the healthy state at index 3
    good_cp = checkpoints_of(good)
    good.apply_entries(tail)
    failpoints.configure("applyCorruptValue=on")
    bad.apply_entries(head + tail[:2])  # diverged, and already past the copy's index
    failpoints.configure(None)
    assert bad.applied_index() == 5
    assert bad.replace_state(str(copy)) == 3
    bad_cp = checkpoints_of(bad)
    bad.apply_entries([put(4, "c", "3"), put(5, "a", "4")])  # re-applied from the local log
    bad.apply_entries(tail[2:])
    assert bad_cp[0][1] == good_cp[0][1]
    assert bad.digest.latest() == good.digest.latest()
    good.close()
    bad.close()
