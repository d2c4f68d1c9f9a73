"""The apply digest's bytes are pinned: members running different raftkv versions compare their
digests, so a change of encoding or chaining (or of what the applier records for an entry) must
show up here, not as a false divergence between members.  The expected values were computed by
the implementation these tests were written against."""

from __future__ import annotations

from pathlib import Path

from raftkv.guard.digest import ApplyDigest
from raftkv.mvcc.backend import BackendConfig
from raftkv.proto import rpc_pb2 as pb
from raftkv.raft.types import Entry
from raftkv.server.applier import Applier
from raftkv.server.bootstrap import MemberInfo
from raftkv.server.requests import RequestKind, encode_request


def test_every_effect_kind_has_pinned_bytes() -> None:
    d = ApplyDigest()
    r = d.recorder
    r.put(b"key", b"value", 7, 5, 3, 2)
    r.delete(b"gone", 6)
    r.finish(1)
    r.compact(4)
    r.lease_grant(7, 60)
    r.lease_revoke(8)
    r.lease_checkpoint(7, 30)
    r.finish(2)
    r.member_set(0x1234, b'{"id":4660}')
    r.member_remove(0x99)
    r.alarm(0x1234, 1, True)
    r.auth(b"user/root", b"record")
    r.auth(b"role/x", None)
    r.finish(3)
    r.finish(4)  # an entry without effects
    d.commit()
    assert {i: d.digest_at(i).hex() for i in range(1, 5)} == EXPECTED_EFFECTS  # type: ignore[union-attr]
    assert d.encode_head().hex() == EXPECTED_HEAD


def _entry(index: int, kind: RequestKind, msg: object) -> Entry:
    body = msg.SerializeToString()  # type: ignore[attr-defined]
    return Entry(1, index, data=encode_request(kind, index, body))


def test_applier_records_pinned_digests(tmp_path: Path) -> None:
    a = Applier.detached(str(tmp_path), BackendConfig(map_size=64 << 20), min_lease_ttl=1)
    a.write_initial_members([MemberInfo(1, "m1", ("http://127.0.0.1:2380",))])
    txn = pb.TxnRequest()
    txn.compare.add(key=b"a", result=pb.Compare.EQUAL, target=pb.Compare.VERSION, version=2)
    txn.success.add(request_put=pb.PutRequest(key=b"c", value=b"3", lease=77))
    txn.success.add(request_delete_range=pb.DeleteRangeRequest(key=b"a"))
    entries = [
        _entry(2, RequestKind.LEASE_GRANT, pb.LeaseGrantRequest(ID=77, TTL=30)),
        _entry(3, RequestKind.PUT, pb.PutRequest(key=b"a", value=b"1")),
        _entry(4, RequestKind.PUT, pb.PutRequest(key=b"a", value=b"2", prev_kv=True)),
        _entry(5, RequestKind.PUT, pb.PutRequest(key=b"b", value=b"x", lease=77)),
        _entry(6, RequestKind.PUT, pb.PutRequest(key=b"b", value=b"y")),  # detached
        _entry(7, RequestKind.PUT, pb.PutRequest(key=b"b", value=b"z", lease=78)),  # error
        _entry(8, RequestKind.PUT, pb.PutRequest(key=b"b", ignore_value=True, lease=77)),
        _entry(9, RequestKind.TXN, txn),
        _entry(10, RequestKind.DELETE_RANGE, pb.DeleteRangeRequest(key=b"a", range_end=b"\0")),
        _entry(11, RequestKind.COMPACTION, pb.CompactionRequest(revision=3)),
        _entry(12, RequestKind.PUT, pb.PutRequest(key=b"a", value=b"again")),
        Entry(1, 13, data=b""),
    ]
    a.apply_entries(entries[:5])
    a.apply_entries(entries[5:])
    got = {i: a.digest.digest_at(i).hex() for i in (1, 3, 5, 8, 9, 12, 13)}  # type: ignore[union-attr]
    assert (a.store.current_revision, a.applied_index()) == EXPECTED_APPLIED
    assert got == EXPECTED_APPLIER
    a.close()


EXPECTED_EFFECTS = {
    1: "1a786a4c07ac2ea0313449a16ea0df4b",
    2: "7e084e24af977d8c073e24bac9c5186d",
    3: "8f7c83bfa6e8044ac7c4f104b79a83a7",
    4: "4984f16b5f24fde8c47c1c05f50a9445",
}
EXPECTED_HEAD = "524b41440100000000000000044984f16b5f24fde8c47c1c05f50a9445ff249de9"
EXPECTED_APPLIED = (9, 13)
EXPECTED_APPLIER = {
    1: "ad0425758d3fa7937434d0549a5e0c21",
    3: "29e7d14646b52c7d4dfa4453ab748b8b",
    5: "a8564a07cdd3f0550dc05c00c8657e06",
    8: "535036ef82e977f0071a4ba9f182c6c7",
    9: "6fc2d027327d1c7801a08ee48b96fd38",
    12: "24d00ab9ca5296fe97507548260b5b8d",
    13: "c59f7e9868f8ac9f7583cd105807e729",
}
