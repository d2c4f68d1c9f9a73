"""The replicated cluster record as the applier builds it (real Applier, real LMDB): conf changes
validated with etcd's rules at apply and answered with the member list, refused ones replayed as
no-ops after a restart, the cluster version gating newer request kinds, versioned and legacy
entry data, unknown kinds and newer data dirs refused with one clear message."""

from __future__ import annotations

import asyncio
import struct
from pathlib import Path
from typing import Any

import pytest

from raftkv import errors
from raftkv.backup.etcd_schema import B_MEMBERS, B_MEMBERS_REMOVED, export_buckets
from raftkv.mvcc.backend import BUCKET_META, META_STORAGE_VERSION, BackendConfig
from raftkv.proto import rpc_pb2 as pb
from raftkv.raft.codec import encode_conf_change
from raftkv.raft.types import ConfChange, ConfChangeType, Entry, EntryType
from raftkv.server.applier import Applier
from raftkv.server.bootstrap import MemberInfo
from raftkv.server.cluster_info import MemberChange
from raftkv.server.data_dir import DataDir
from raftkv.server.raft_node import FatalStateMachineError, StorageVersionError
from raftkv.server.requests import (
    KIND_SINCE,
    RequestDecodeError,
    RequestKind,
    UnknownRequestError,
    decode_request,
    encode_request,
    request_kind,
)
from raftkv.version import STORAGE_VERSION, Version

M1 = MemberInfo(1, "m1", ("http://127.0.0.1:1",))
M2 = MemberInfo(2, "m2", ("http://127.0.0.1:2",))


class Recorder:
    """The Raft core's side of conf changes: what the applier told it."""

    def __init__(self) -> None:
        self.changes: list[ConfChange] = []

    def __call__(self, cc: ConfChange) -> None:
        self.changes.append(cc)


def applier_at(root: Path, raft: Recorder | None = None, max_learners: int = 1) -> Applier:
    return Applier(
        data_dir=DataDir(str(root)),
        backend_config=BackendConfig(map_size=64 << 20),
        min_lease_ttl=1,
        header=lambda rev: pb.ResponseHeader(revision=rev),
        apply_conf_change=raft or Recorder(),
        on_members_changed=lambda _m: None,
        max_learners=max_learners,
    )


def conf_entry(index: int, kind: ConfChangeType, info: MemberInfo, promote: bool = False) -> Entry:
    context = encode_request(RequestKind.MEMBER_CHANGE, index, MemberChange(info, promote).encode())
    data = encode_conf_change(ConfChange(kind, info.id, context))
    return Entry(1, index, EntryType.CONF_CHANGE, data)


def request(index: int, kind: RequestKind, body: bytes) -> Entry:
    return Entry(1, index, data=encode_request(kind, index, body))


def apply_answering(applier: Applier, entries: list[Entry]) -> dict[int, Any]:
    """Apply ``entries`` as if each was proposed here; returns request id -> answer/error."""

    async def main() -> dict[int, Any]:
        loop = asyncio.get_running_loop()
        futs = {e.index: loop.create_future() for e in entries}
        applier.waiters.update(futs)
        applier.apply_entries(entries)
        return {i: (f.exception() or f.result()) for i, f in futs.items() if f.done()}

    return asyncio.run(main())


def test_conf_changes_follow_etcds_rules_and_answer_with_the_member_list(tmp_path: Path) -> None:
    raft = Recorder()
    a = applier_at(tmp_path, raft)
    a.write_initial_members([M1])
    learner = MemberInfo(2, "", ("http://127.0.0.1:2",))
    same_urls = MemberInfo(3, "", M1.peer_urls)
    second_learner = MemberInfo(4, "", ("http://127.0.0.1:4",))
    answers = apply_answering(
        a,
        [
            conf_entry(2, ConfChangeType.ADD_LEARNER_NODE, learner),
            conf_entry(3, ConfChangeType.ADD_NODE, same_urls),
            conf_entry(4, ConfChangeType.ADD_LEARNER_NODE, second_learner),
            conf_entry(5, ConfChangeType.ADD_NODE, M1, promote=True),
            conf_entry(6, ConfChangeType.ADD_NODE, learner, promote=True),
            conf_entry(7, ConfChangeType.REMOVE_NODE, learner),
            conf_entry(8, ConfChangeType.ADD_NODE, learner),
        ],
    )
    assert [m.id for m in answers[2]] == [1, 2] and answers[2][1].is_learner
    assert isinstance(answers[3], errors.ERR_PEER_URL_EXIST)
    assert isinstance(answers[4], errors.ERR_TOO_MANY_LEARNERS)
    assert isinstance(answers[5], errors.ERR_MEMBER_NOT_LEARNER)
    assert [m.is_learner for m in answers[6]] == [False, False]
    assert [m.id for m in answers[7]] == [1]
    # A removed ID never comes back (etcd answers "member not found").
    assert isinstance(answers[8], errors.ERR_MEMBER_NOT_FOUND)
    # The Raft core saw the refused changes as no-ops (node 0).
    assert [(c.type, c.node_id) for c in raft.changes] == [
        (ConfChangeType.ADD_LEARNER_NODE, 2),
        (ConfChangeType.ADD_NODE, 0),
        (ConfChangeType.ADD_LEARNER_NODE, 0),
        (ConfChangeType.ADD_NODE, 0),
        (ConfChangeType.ADD_NODE, 2),
        (ConfChangeType.REMOVE_NODE, 2),
        (ConfChangeType.ADD_NODE, 0),
    ]
    assert a.cluster.removed == {2} and a.cluster.rejected == {3, 4, 5, 8}
    a.close()


def test_a_restart_replays_conf_changes_into_raft_except_the_refused(tmp_path: Path) -> None:
    entries = [
        conf_entry(2, ConfChangeType.ADD_LEARNER_NODE, M2),
        conf_entry(3, ConfChangeType.ADD_NODE, MemberInfo(3, "", M1.peer_urls)),
        conf_entry(4, ConfChangeType.ADD_NODE, M2, promote=True),
    ]
    a = applier_at(tmp_path)
    a.write_initial_members([M1])
    a.apply_entries(entries)
    a.force_commit()
    a.close()
    # The Raft core restarts from an older snapshot: the applier skips the entries (they are
    # at or below its consistent index) but the core must learn the changes again.
    raft = Recorder()
    again = applier_at(tmp_path, raft)
    again.apply_entries(entries)
    assert [(c.type, c.node_id) for c in raft.changes] == [
        (ConfChangeType.ADD_LEARNER_NODE, 2),
        (ConfChangeType.ADD_NODE, 2),
    ]
    assert not again.members[2].is_learner
    again.close()


def test_the_cluster_record_is_in_the_state_hash_and_the_digest(tmp_path: Path) -> None:
    a, b = applier_at(tmp_path / "a"), applier_at(tmp_path / "b")
    for x in (a, b):
        x.write_initial_members([M1])
    a.apply_entries([request(2, RequestKind.CLUSTER_VERSION, b"0.2")])
    b.apply_entries([request(2, RequestKind.CLUSTER_VERSION, b"0.3")])
    ha, hb = a.state_hash_deferred()(), b.state_hash_deferred()()
    assert ha.diff(hb) == ("members",)
    assert a.digest.latest() != b.digest.latest()
    assert a.cluster.cluster_version is not None and a.cluster.cluster_version.short() == "0.2"
    a.close()
    b.close()


def test_kinds_newer_than_the_cluster_version_are_refused_at_apply(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As a release that introduced ALARM at 0.3 would have it: refused (no effect) on every
    # member until the cluster version reaches 0.3.
    monkeypatch.setitem(KIND_SINCE, RequestKind.ALARM, Version(0, 3))
    a = applier_at(tmp_path)
    a.write_initial_members([M1])
    alarm = pb.AlarmRequest(
        action=pb.AlarmRequest.ACTIVATE, memberID=1, alarm=pb.NOSPACE
    ).SerializeToString()
    answers = apply_answering(
        a,
        [
            request(2, RequestKind.CLUSTER_VERSION, b"0.2"),
            request(3, RequestKind.ALARM, alarm),
            request(4, RequestKind.CLUSTER_VERSION, b"0.3"),
            request(5, RequestKind.ALARM, alarm),
        ],
    )
    assert isinstance(answers[3], errors.ERR_NOT_CAPABLE)
    assert not isinstance(answers[5], Exception)
    assert a.alarms == {(1, int(pb.NOSPACE))}
    a.close()


def test_entry_formats_legacy_v1_and_unknown() -> None:
    legacy = struct.pack(">BQ", RequestKind.PUT, 7) + b"body"  # raftkv 0.1 entries
    assert decode_request(legacy)[:3] == (RequestKind.PUT, 7, b"body")
    assert request_kind(legacy) == RequestKind.PUT
    v1 = encode_request(RequestKind.TXN, 9, b"x")
    assert v1[0] == 0x81 and decode_request(v1)[:3] == (RequestKind.TXN, 9, b"x")
    assert request_kind(v1) == RequestKind.TXN
    with pytest.raises(UnknownRequestError, match="entry format 5"):
        decode_request(b"\x85" + bytes(9))
    with pytest.raises(UnknownRequestError, match="request kind 99"):
        decode_request(struct.pack(">BBQ", 0x81, 99, 1))
    with pytest.raises(RequestDecodeError):
        decode_request(b"\x81\x01")


def test_a_newer_members_entry_is_skipped_as_every_member_skips_it(tmp_path: Path) -> None:
    # A newer member that had not applied a lower cluster version yet (a downgrade) proposed a
    # kind this binary does not know: the newer members refuse it (not capable: no effect),
    # so this one skips it, and both hold the same apply digest and state afterwards.
    old, newer = applier_at(tmp_path / "old"), applier_at(tmp_path / "newer")
    for x in (old, newer):
        x.write_initial_members([M1])
        x.apply_entries([request(2, RequestKind.CLUSTER_VERSION, b"0.2")])
    put = request(4, RequestKind.PUT, pb.PutRequest(key=b"k", value=b"v").SerializeToString())
    old.apply_entries([Entry(1, 3, data=struct.pack(">BBQ", 0x81, 99, 1)), put])
    # What a newer member's gate does with it: an entry without effect.
    newer.apply_entries([request(3, RequestKind.HASH_CHECK, b""), put])
    assert old.applied_index() == newer.applied_index() == 4
    assert old.digest.latest() == newer.digest.latest()
    assert old.state_hash_deferred()().value == newer.state_hash_deferred()().value
    old.close()
    newer.close()


def test_an_unknown_kind_above_this_members_version_stops_it(tmp_path: Path) -> None:
    a = applier_at(tmp_path)
    a.write_initial_members([M1])
    ahead = STORAGE_VERSION.next_minor().short().encode()
    a.apply_entries([request(2, RequestKind.CLUSTER_VERSION, ahead)])
    newer = Entry(1, 3, data=struct.pack(">BBQ", 0x81, 99, 1))
    with pytest.raises(FatalStateMachineError) as err:
        a.apply_entries([newer])
    text = str(err.value)
    assert "entry 3 holds request kind 99" in text and "upgrade this member" in text
    assert a.applied_index() == 2  # nothing of the batch was applied
    a.close()


def test_a_data_dir_of_a_newer_storage_version_is_refused(tmp_path: Path) -> None:
    a = applier_at(tmp_path)
    a.write_initial_members([M1])
    newer = STORAGE_VERSION.next_minor().short()
    a.backend.put(BUCKET_META, META_STORAGE_VERSION, newer.encode())
    a.close()
    with pytest.raises(StorageVersionError, match=f"storage version {newer}, newer than"):
        applier_at(tmp_path)


def test_removed_members_reach_etcds_members_removed_bucket(tmp_path: Path) -> None:
    a = applier_at(tmp_path)
    a.write_initial_members([M1])
    a.apply_entries(
        [
            conf_entry(2, ConfChangeType.ADD_NODE, MemberInfo(0x2A, "", ("http://127.0.0.1:9",))),
            conf_entry(3, ConfChangeType.REMOVE_NODE, MemberInfo(0x2A, "", ())),
        ]
    )
    a.commit_pending()
    with a.backend.read() as tx:
        buckets = dict(export_buckets(tx, None))
        assert list(buckets[B_MEMBERS_REMOVED]) == [(b"2a", b"removed")]
        assert [k for k, _v in buckets[B_MEMBERS]] == [b"1"]
    a.close()
