"""The backend quota as etcd 3.5 has it (real Applier, real LMDB in a temporary dir): the cost
of a request, the soft quota check, the capped applier while a NOSPACE alarm is active (the same
answers and state on every member), the quota check at apply (only the answer differs, never
the state), and LMDB's map growing under a batch instead of stopping the member."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import pytest

from raftkv import errors
from raftkv.mvcc.backend import (
    DEFAULT_QUOTA_BYTES,
    MAP_HEADROOM_MIN,
    UNLIMITED_MAP_SIZE,
    Backend,
    BackendConfig,
    map_size_for,
    quota_limit,
)
from raftkv.mvcc.types import RangeRequest
from raftkv.proto import rpc_pb2 as pb
from raftkv.raft.types import Entry
from raftkv.server.applier import Applier
from raftkv.server.bootstrap import MemberInfo
from raftkv.server.quota import (
    KV_OVERHEAD,
    LEASE_OVERHEAD,
    MAX_QUOTA_BYTES,
    cost_put,
    cost_txn,
    fits,
    humanize_bytes,
    log_quota,
)
from raftkv.server.requests import RequestKind, encode_request

MiB = 1024 * 1024
M1 = MemberInfo(1, "m1", ("http://127.0.0.1:1",))


def put(key: bytes, value: bytes = b"v") -> pb.RequestOp:
    return pb.RequestOp(request_put=pb.PutRequest(key=key, value=value))


def delete(key: bytes) -> pb.RequestOp:
    return pb.RequestOp(request_delete_range=pb.DeleteRangeRequest(key=key))


def get(key: bytes) -> pb.RequestOp:
    return pb.RequestOp(request_range=pb.RangeRequest(key=key))


# -- cost and the soft quota ----------------------------------------------------------------


def test_costs_are_etcds() -> None:
    assert cost_put(pb.PutRequest(key=b"abc", value=b"12345")) == KV_OVERHEAD + 8 == 264
    assert LEASE_OVERHEAD == 64
    assert cost_txn(pb.TxnRequest()) == 0
    assert cost_txn(pb.TxnRequest(success=[get(b"a"), delete(b"b")], failure=[get(b"c")])) == 0
    # a branch costs the sum of its puts; the txn the larger branch
    two = pb.TxnRequest(success=[put(b"a"), put(b"b", b"xx")], failure=[put(b"c", b"y" * 100)])
    assert cost_txn(two) == max(2 * KV_OVERHEAD + 5, KV_OVERHEAD + 101) == 517
    # nested txns are charged like their own cost; a put only in a nested txn counts
    nested = pb.TxnRequest(success=[delete(b"d"), pb.RequestOp(request_txn=two)])
    assert cost_txn(nested) == 517
    deep = pb.TxnRequest(failure=[pb.RequestOp(request_txn=pb.TxnRequest(failure=[put(b"k")]))])
    assert cost_txn(deep) == KV_OVERHEAD + 2


def test_quota_values_as_etcds_flag() -> None:
    assert quota_limit(0) == DEFAULT_QUOTA_BYTES == 2 * 1024**3
    assert quota_limit(-1) is None
    assert quota_limit(5 * MiB) == 5 * MiB
    # the LMDB map leaves room above the soft quota; without a quota it is large
    assert map_size_for(4 * MiB) == 4 * MiB + MAP_HEADROOM_MIN
    assert map_size_for(0) == 2 * DEFAULT_QUOTA_BYTES
    assert map_size_for(8 * 1024**3) == 16 * 1024**3
    assert map_size_for(-1) == UNLIMITED_MAP_SIZE
    assert MAX_QUOTA_BYTES == 8 * 1024**3


def test_fits_is_size_plus_cost_below_the_quota(tmp_path: Path) -> None:
    b = Backend(tmp_path / "q", BackendConfig(quota_bytes=1 * MiB, sync_mode="nosync"))
    try:
        size = b.committed_size
        assert size > 0 and b.quota_limit == MiB and b.quota == MiB
        assert fits(b, MiB - size - 1)
        assert not fits(b, MiB - size)  # etcd: Size() + cost < quota
        assert fits(b, 0)  # a request without a put always fits
        # the size the check reads is refreshed at each commit, and only then
        with b.write() as tx:
            tx.put("meta", b"big", b"x" * 200_000)
        assert b.committed_size > size + 200_000
        assert b.committed_size == b.size()
        assert not fits(b, MiB - size - 1)
    finally:
        b.close()
    off = Backend(tmp_path / "off", BackendConfig(quota_bytes=-5, sync_mode="nosync"))
    try:
        assert off.quota_limit is None and off.quota == -5
        assert fits(off, 10 * 1024**4)
    finally:
        off.close()
    default = Backend(tmp_path / "default", BackendConfig(sync_mode="nosync"))
    try:
        assert default.quota == DEFAULT_QUOTA_BYTES
    finally:
        default.close()


def test_the_lmdb_map_is_address_space_not_disk(tmp_path: Path) -> None:
    b = Backend(tmp_path / "m", BackendConfig(quota_bytes=-1))
    try:
        assert b.map_size == UNLIMITED_MAP_SIZE
        assert b.file_size() < MiB  # the file holds the pages written, not the map
    finally:
        b.close()
    # a file larger than half the map reopens with a map twice its size
    b = Backend(tmp_path / "m", BackendConfig(map_size=MiB))
    try:
        for i in range(4):
            with b.write() as tx:
                tx.put("meta", bytes([i]), b"x" * 150_000)
        b.grow_map()
        assert b.map_size == 2 * MiB and b.get("meta", b"\x00") == b"x" * 150_000
    finally:
        b.close()
    b = Backend(tmp_path / "m", BackendConfig(map_size=MiB))
    try:
        assert b.map_size == 2 * b.file_size() > MiB
    finally:
        b.close()


def test_log_lines_are_etcds(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="raftkv.quota")
    log_quota(-1, "kv")
    log_quota(0, "kv")
    log_quota(9 * 1024**3, "kv")
    text = caplog.text
    assert "disabled backend quota (quota-name=kv, quota-size-bytes=-1)" in text
    assert "enabled backend quota with default value (quota-name=kv, " in text
    assert "quota-size-bytes=2147483648, quota-size=2.1 GB" in text
    assert (
        "quota exceeds the maximum value (quota-name=kv, quota-size-bytes=9663676416, "
        "quota-size=9.7 GB, quota-maximum-size-bytes=8589934592, quota-maximum-size=8.6 GB)"
    ) in text
    assert [r.levelname for r in caplog.records] == ["INFO", "INFO", "WARNING", "INFO"]
    assert humanize_bytes(2 * MiB) == "2.1 MB" and humanize_bytes(5) == "5 B"


# -- the capped applier -----------------------------------------------------------------------


def applier(root: Path, **config: Any) -> Applier:
    a = Applier.detached(str(root), BackendConfig(sync_mode="nosync", **config), min_lease_ttl=1)
    a.write_initial_members([M1])
    return a


def entry(index: int, kind: RequestKind, msg: Any) -> Entry:
    return Entry(1, index, data=encode_request(kind, index, msg.SerializeToString()))


def alarm(index: int, action: Any, member: int = 1) -> Entry:
    req = pb.AlarmRequest(action=action, memberID=member, alarm=pb.NOSPACE)
    return entry(index, RequestKind.ALARM, req)


def apply_answering(a: Applier, batches: list[list[Entry]]) -> dict[int, Any]:
    """Apply each batch as if every entry was proposed here; request id -> answer or error."""

    async def main() -> dict[int, Any]:
        loop = asyncio.get_running_loop()
        futs = {e.index: loop.create_future() for batch in batches for e in batch}
        a.waiters.update(futs)
        for batch in batches:
            a.apply_entries(batch)
        await asyncio.sleep(0)
        return {i: (f.exception() or f.result()) for i, f in futs.items() if f.done()}

    return asyncio.run(main())


def keys(a: Applier) -> dict[bytes, bytes]:
    resp = a.store.range(RangeRequest(key=b"\x00", range_end=b"\x00"))
    return {kv.key: kv.value for kv in resp.kvs}


def test_a_nospace_alarm_caps_puts_txns_with_puts_and_lease_grants(tmp_path: Path) -> None:
    a = applier(tmp_path)
    try:
        answers = apply_answering(
            a,
            [
                [
                    entry(2, RequestKind.PUT, pb.PutRequest(key=b"a", value=b"1")),
                    entry(3, RequestKind.PUT, pb.PutRequest(key=b"b", value=b"2")),
                    alarm(4, pb.AlarmRequest.ACTIVATE, member=7),
                ],
                [
                    entry(5, RequestKind.PUT, pb.PutRequest(key=b"c", value=b"3")),
                    entry(6, RequestKind.TXN, pb.TxnRequest(failure=[put(b"c")])),
                    entry(7, RequestKind.LEASE_GRANT, pb.LeaseGrantRequest(ID=99, TTL=60)),
                    entry(8, RequestKind.TXN, pb.TxnRequest(success=[delete(b"a"), get(b"b")])),
                    entry(9, RequestKind.DELETE_RANGE, pb.DeleteRangeRequest(key=b"b")),
                    entry(10, RequestKind.COMPACTION, pb.CompactionRequest(revision=3)),
                ],
            ],
        )
        for refused in (5, 6, 7):
            assert isinstance(answers[refused], errors.ERR_NO_SPACE), answers[refused]
            assert answers[refused].message == "etcdserver: mvcc: database space exceeded"
        assert isinstance(answers[8], pb.TxnResponse) and answers[8].succeeded
        assert answers[9].deleted == 1
        assert isinstance(answers[10], pb.CompactionResponse)
        assert keys(a) == {}  # a and b deleted, c never written
        assert a.lessor.lookup(99) is None
        assert a.store.current_revision == 5  # two puts, the txn's delete, the delete
        assert a.no_space_active()

        # any member's alarm caps the cluster; clearing the last one uncaps it
        answers = apply_answering(
            a,
            [
                [
                    alarm(11, pb.AlarmRequest.ACTIVATE, member=1),
                    alarm(12, pb.AlarmRequest.DEACTIVATE, member=7),
                    entry(13, RequestKind.PUT, pb.PutRequest(key=b"d")),
                    alarm(14, pb.AlarmRequest.DEACTIVATE, member=1),
                    entry(15, RequestKind.PUT, pb.PutRequest(key=b"e")),
                    entry(16, RequestKind.LEASE_GRANT, pb.LeaseGrantRequest(ID=99, TTL=60)),
                ]
            ],
        )
        assert isinstance(answers[13], errors.ERR_NO_SPACE)
        assert isinstance(answers[15], pb.PutResponse)
        assert answers[16].ID == 99
        assert set(keys(a)) == {b"e"} and not a.no_space_active()
    finally:
        a.close()


def test_capping_is_the_same_whatever_the_batches(tmp_path: Path) -> None:
    """An alarm in the middle of a batch caps the entries after it in that batch: members that
    batch the same entries differently hold the same state and digests."""
    entries = [
        entry(2, RequestKind.PUT, pb.PutRequest(key=b"a")),
        alarm(3, pb.AlarmRequest.ACTIVATE),
        entry(4, RequestKind.PUT, pb.PutRequest(key=b"b")),
        entry(5, RequestKind.TXN, pb.TxnRequest(success=[put(b"c")])),
        alarm(6, pb.AlarmRequest.DEACTIVATE),
        entry(7, RequestKind.PUT, pb.PutRequest(key=b"d")),
    ]
    one = applier(tmp_path / "one")
    each = applier(tmp_path / "each")
    try:
        a1 = apply_answering(one, [entries])
        a2 = apply_answering(each, [[e] for e in entries])
        for i in (4, 5):
            assert isinstance(a1[i], errors.ERR_NO_SPACE) and isinstance(a2[i], errors.ERR_NO_SPACE)
        assert keys(one) == keys(each) == {b"a": b"", b"d": b""}
        assert one.digest.latest() == each.digest.latest()
    finally:
        one.close()
        each.close()


def test_the_cap_survives_a_restart(tmp_path: Path) -> None:
    a = applier(tmp_path)
    apply_answering(a, [[alarm(2, pb.AlarmRequest.ACTIVATE)]])
    a.close()
    a = Applier.detached(str(tmp_path), BackendConfig(sync_mode="nosync"), min_lease_ttl=1)
    try:
        assert a.no_space_active()
        answers = apply_answering(a, [[entry(3, RequestKind.PUT, pb.PutRequest(key=b"k"))]])
        assert isinstance(answers[3], errors.ERR_NO_SPACE)
    finally:
        a.close()


# -- the quota at apply ------------------------------------------------------------------------


def test_a_member_over_quota_at_apply_applies_but_answers_nospace(tmp_path: Path) -> None:
    """etcd's quota applier: the member whose own backend is over the quota applies the write
    like every other member (state and digest stay equal) but answers NOSPACE, after raising
    its alarm; a member under the quota answers normally."""
    small = applier(tmp_path / "small", quota_bytes=256 * 1024)
    large = applier(tmp_path / "large", quota_bytes=64 * MiB)
    raised: list[list[asyncio.Future[Any]]] = []
    small.on_no_space = raised.append
    entries = [
        entry(2, RequestKind.PUT, pb.PutRequest(key=b"big", value=b"x" * 200_000)),
        entry(3, RequestKind.PUT, pb.PutRequest(key=b"next", value=b"y" * 40_000)),
        entry(4, RequestKind.TXN, pb.TxnRequest(success=[put(b"t", b"z" * 40_000)])),
        entry(5, RequestKind.TXN, pb.TxnRequest(success=[delete(b"t")])),
        entry(6, RequestKind.LEASE_GRANT, pb.LeaseGrantRequest(ID=5, TTL=60)),
    ]
    batches = [entries[:1], entries[1:4], entries[4:]]
    try:
        on_large = apply_answering(large, batches)

        async def on_small() -> dict[int, Any]:
            loop = asyncio.get_running_loop()
            futs = {e.index: loop.create_future() for e in entries}
            small.waiters.update(futs)
            small.apply_entries(batches[0])
            assert raised == []  # the big put fits the empty backend
            # the size checked is the one at the last commit: the two 40 kB writes do not fit
            # beside the big value, the delete-only txn costs nothing
            small.apply_entries(batches[1])
            assert [len(w) for w in raised] == [2]  # one alarm for the batch
            assert all(not f.done() for f in raised[0])  # they wait for the alarm
            # the batch committed: now even a lease grant does not fit
            small.apply_entries(batches[2])
            assert [len(w) for w in raised] == [2, 1]
            return {i: (f.exception() or f.result()) for i, f in futs.items() if f.done()}

        answers = asyncio.run(on_small())
        assert set(answers) == {2, 5}
        assert isinstance(on_large[3], pb.PutResponse) and on_large[6].ID == 5
        assert keys(small) == keys(large) == {b"big": b"x" * 200_000, b"next": b"y" * 40_000}
        assert small.lessor.lookup(5) is not None
        assert small.store.current_revision == large.store.current_revision == 5
        assert small.digest.latest() == large.digest.latest()

        # without the hook (no member to raise the alarm) the waiters fail at once
        small.on_no_space = None
        answers = apply_answering(
            small, [[entry(7, RequestKind.PUT, pb.PutRequest(key=b"k", value=b"v"))]]
        )
        assert isinstance(answers[7], errors.ERR_NO_SPACE)
        assert keys(small)[b"k"] == b"v"
    finally:
        small.close()
        large.close()


def test_a_disabled_quota_never_refuses(tmp_path: Path) -> None:
    a = applier(tmp_path, quota_bytes=-1, map_size=4 * MiB)
    try:
        batches = [
            [entry(i, RequestKind.PUT, pb.PutRequest(key=b"k%d" % i, value=b"x" * 100_000))]
            for i in range(2, 12)
        ]
        answers = apply_answering(a, batches)
        assert all(isinstance(r, pb.PutResponse) for r in answers.values())
    finally:
        a.close()


# -- LMDB's map filling at apply ---------------------------------------------------------------


def test_a_full_lmdb_map_grows_and_the_batch_is_applied_again(tmp_path: Path) -> None:
    """Writes beyond the map do not stop the member nor change what it applies: the batch is
    aborted, the map doubled (twice here), the in-memory state reloaded and the batch applied
    again."""
    grown = applier(tmp_path / "grown", quota_bytes=-1, map_size=MiB)
    roomy = applier(tmp_path / "roomy", quota_bytes=-1, map_size=64 * MiB)
    reloaded: list[bool] = []
    grown.on_state_reloaded = lambda: reloaded.append(True)
    batch = [
        entry(2, RequestKind.LEASE_GRANT, pb.LeaseGrantRequest(ID=9, TTL=60)),
        alarm(3, pb.AlarmRequest.ACTIVATE, member=4),
        alarm(4, pb.AlarmRequest.DEACTIVATE, member=4),
    ] + [
        entry(i, RequestKind.PUT, pb.PutRequest(key=b"k%d" % i, value=b"x" * 200_000, lease=9))
        for i in range(5, 19)
    ]
    try:
        answers = apply_answering(grown, [batch])
        reference = apply_answering(roomy, [batch])
        assert len(reloaded) == 2 and grown.backend.map_size == 4 * MiB
        assert answers[2].ID == 9 and reference[2].ID == 9  # not "lease already exists"
        assert [answers[i].header.revision for i in range(5, 19)] == list(range(2, 16))
        assert keys(grown) == keys(roomy) and len(keys(grown)) == 14
        assert grown.digest.latest() == roomy.digest.latest()
        assert grown.applied_index() == 18
        assert len(grown.lessor.lookup(9).keys()) == 14  # type: ignore[union-attr]
    finally:
        grown.close()
        roomy.close()
