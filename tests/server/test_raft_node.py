"""The Ready loop's proposal path (``RaftNode.propose``), on a real RawNode, WAL and Applier in
temporary dirs: proposals queued between two loop iterations are stepped as one batch (a
follower forwards them to the leader as few MsgProp messages, split by size), every proposal
is applied in order with its answer given to its waiter, and a proposal the core refuses is
reported to its waiter, never lost."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from raftkv.mvcc.backend import BackendConfig
from raftkv.proto import rpc_pb2 as pb
from raftkv.raft import RawNode
from raftkv.raft.config import Config as RaftConfig
from raftkv.raft.errors import ProposalDroppedError
from raftkv.raft.storage import MemoryStorage
from raftkv.raft.types import (
    ConfState,
    Entry,
    HardState,
    Message,
    MessageType,
    Snapshot,
    SnapshotMetadata,
)
from raftkv.server import raft_node as rn
from raftkv.server.applier import Applier
from raftkv.server.bootstrap import MemberInfo
from raftkv.server.data_dir import DataDir
from raftkv.server.requests import RequestKind, encode_request
from raftkv.snap import Snapshotter
from raftkv.wal import WAL, WalSnapshot


class RecordingTransport:
    """Keeps what the Ready loop sends (the peers are not running)."""

    def __init__(self) -> None:
        self.sent: list[Message] = []
        self.changed = asyncio.Event()

    def send(self, messages: Sequence[Message]) -> None:
        self.sent.extend(messages)
        self.changed.set()

    def send_snapshot(self, m: Message, db_path: str) -> None:
        raise AssertionError("no snapshot is sent in these tests")


def make_node(root: Path, voters: tuple[int, ...], **raft: Any) -> rn.RaftNode:
    conf = ConfState(voters=voters)
    snap = Snapshot(SnapshotMetadata(index=1, term=1, conf_state=conf), b"")
    storage = MemoryStorage()
    storage.apply_snapshot(snap)
    storage.set_hard_state(HardState(term=1, vote=0, commit=1))
    wal = WAL.create(str(root / "wal"), b"test")
    wal.save_snapshot(WalSnapshot(1, 1, conf))
    node = RawNode(
        RaftConfig(id=1, storage=storage, election_tick=10, heartbeat_tick=1, applied=1, **raft)
    )
    return rn.RaftNode(
        node=node,
        storage=storage,
        wal=wal,
        snapshotter=Snapshotter(str(root / "snap")),
        snap_dir=str(root / "snap"),
        conf_state=conf,
        snapshot_index=1,
        tick_interval=3600.0,  # no tick during a test: no election, no heartbeat
        snapshot_count=1_000_000,
        snapshot_catchup_entries=100,
    )


def make_applier(root: Path) -> Applier:
    applier = Applier(
        data_dir=DataDir(str(root / "member")),
        backend_config=BackendConfig(map_size=64 << 20),
        min_lease_ttl=1,
        header=lambda rev: pb.ResponseHeader(revision=rev),
        apply_conf_change=lambda cc: None,
        on_members_changed=lambda members: None,
    )
    applier.write_initial_members([MemberInfo(1, "m1", ("http://127.0.0.1:2380",))])
    return applier


def put_data(request_id: int, key: bytes, value: bytes) -> bytes:
    body = pb.PutRequest(key=key, value=value).SerializeToString()
    return encode_request(RequestKind.PUT, request_id, body)


def follow_leader_2(node: rn.RaftNode) -> None:
    node.step(Message(type=MessageType.MSG_HEARTBEAT, to=1, frm=2, term=1, commit=1))
    assert node.node.lead == 2


def test_proposals_of_one_iteration_are_applied_in_order_and_answered(tmp_path: Path) -> None:
    async def main() -> None:
        node = make_node(tmp_path, (1,))
        applier = make_applier(tmp_path)
        node.start(RecordingTransport(), applier)
        node.node.campaign()
        node._wake.set()
        try:
            await asyncio.wait_for(node.wait_leader(), 10)
            loop = asyncio.get_running_loop()
            waiters: list[asyncio.Future[Any]] = []
            for i in range(1, 51):  # queued before the loop runs again: one batch
                fut = loop.create_future()
                applier.waiters[i] = fut
                node.propose(put_data(i, b"k%02d" % i, b"v%d" % i), fut)
                waiters.append(fut)
            answers = await asyncio.wait_for(asyncio.gather(*waiters), 10)
        finally:
            await node.stop()
            applier.close()
        revisions = [a.header.revision for a in answers]
        assert revisions == list(range(2, 52))  # one revision each, in proposal order

    asyncio.run(main())


def test_follower_forwards_queued_proposals_in_batches_split_by_size(tmp_path: Path) -> None:
    async def main() -> None:
        node = make_node(tmp_path, (1, 2, 3))
        follow_leader_2(node)
        transport = RecordingTransport()
        applier = make_applier(tmp_path)
        node.start(transport, applier)
        loop = asyncio.get_running_loop()
        big = b"x" * rn.PROPOSAL_BATCH_BYTES
        datas = [b"a", big, b"b", b"c"]
        try:
            for d in datas:
                node.propose(d, loop.create_future())

            def forwarded() -> list[Message]:
                return [m for m in transport.sent if m.type == MessageType.MSG_PROP]

            while sum(len(m.entries) for m in forwarded()) < len(datas):
                transport.changed.clear()
                await asyncio.wait_for(transport.changed.wait(), 10)
        finally:
            await node.stop()
            applier.close()
        props = forwarded()
        assert all(m.to == 2 for m in props)
        # The batch closes once it holds PROPOSAL_BATCH_BYTES: [a, big] then [b, c].
        assert [[e.data for e in m.entries] for m in props] == [[b"a", big], [b"b", b"c"]]

    asyncio.run(main())


def test_an_unanswered_read_index_request_is_sent_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A follower's read index request that its leader never answers (lost as the leader
    stepped down) is forwarded again, as etcd retries it, and the answer to the copy ends the
    wait."""
    monkeypatch.setattr(rn, "READ_INDEX_RETRY", 0.05)

    async def main() -> int:
        node = make_node(tmp_path, (1, 2, 3))
        follow_leader_2(node)
        transport = RecordingTransport()
        applier = make_applier(tmp_path)
        node.start(transport, applier)
        ctx = b"read-1"

        def forwarded() -> list[Message]:
            return [m for m in transport.sent if m.type == MessageType.MSG_READ_INDEX]

        try:
            reader = asyncio.create_task(node.read_index(ctx))
            while len(forwarded()) < 2:
                transport.changed.clear()
                await asyncio.wait_for(transport.changed.wait(), 10)
            assert not reader.done()
            assert all(m.to == 2 and m.context == ctx for m in forwarded())
            node.step(
                Message(
                    type=MessageType.MSG_READ_INDEX_RESP,
                    to=1,
                    frm=2,
                    term=1,
                    index=1,
                    context=ctx,
                )
            )
            return await asyncio.wait_for(reader, 10)
        finally:
            await node.stop()
            applier.close()

    assert asyncio.run(main()) == 1


def test_propose_without_a_leader_raises_at_once(tmp_path: Path) -> None:
    async def main() -> None:
        node = make_node(tmp_path, (1, 2, 3))
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        with pytest.raises(ProposalDroppedError):
            node.propose(b"data", fut)
        assert not fut.done()
        node.wal.close()

    asyncio.run(main())


def test_a_batch_the_core_refuses_fails_every_waiter_of_it(tmp_path: Path) -> None:
    async def main() -> None:
        node = make_node(tmp_path, (1,), max_uncommitted_entries_size=100)
        node.node.campaign()  # leader at once (sole voter); nothing is persisted or committed
        assert node.node.lead == 1
        loop = asyncio.get_running_loop()
        first = loop.create_future()
        node.propose(b"x" * 200, first)  # accepted: nothing was uncommitted before
        node._flush_proposals()
        refused = [loop.create_future() for _ in range(3)]
        for fut in refused:
            node.propose(b"y", fut)
        node._flush_proposals()  # over the uncommitted size limit: the whole batch drops
        assert not first.done()
        for fut in refused:
            assert isinstance(fut.exception(), ProposalDroppedError)
        node.wal.close()

    asyncio.run(main())


def test_a_commit_index_alone_is_written_but_not_synced(tmp_path: Path) -> None:
    """etcd's MustSync: entries, a term or a vote need an fdatasync before the Ready's messages
    leave; a Ready that only moves the commit index is written without one (the commit index
    is learnt again from the leader after a crash)."""

    async def main() -> None:
        node = make_node(tmp_path, (1, 2, 3))
        follow_leader_2(node)
        transport = RecordingTransport()
        applier = make_applier(tmp_path)
        real_sync = node.wal.sync
        syncs: list[int] = []

        def counting_sync() -> None:
            syncs.append(node.wal.last_index)
            real_sync()

        node.wal.sync = counting_sync  # type: ignore[method-assign]
        node.start(transport, applier)

        async def step_and_wait_reply(m: Message, reply: MessageType) -> None:
            transport.changed.clear()
            node.step(m)
            while not any(r.type == reply for r in transport.sent):
                await asyncio.wait_for(transport.changed.wait(), 10)
                transport.changed.clear()
            transport.sent.clear()

        entries = tuple(Entry(term=1, index=i, data=put_data(i, b"k%d" % i, b"v")) for i in (2, 3))
        try:
            app = Message(
                type=MessageType.MSG_APP,
                to=1,
                frm=2,
                term=1,
                log_term=1,
                index=1,
                entries=entries,
                commit=1,
            )
            await step_and_wait_reply(app, MessageType.MSG_APP_RESP)
            assert syncs == [3]  # the entries were synced before the acknowledgement
            beat = Message(type=MessageType.MSG_HEARTBEAT, to=1, frm=2, term=1, commit=3)
            await step_and_wait_reply(beat, MessageType.MSG_HEARTBEAT_RESP)
            await asyncio.wait_for(node.wait_applied(3), 10)
            assert syncs == [3]  # the commit index moved with no further fdatasync
        finally:
            await node.stop()
            applier.close()
        with WAL.open(str(tmp_path / "wal"), WalSnapshot(1, 1, ConfState(voters=(1, 2, 3)))) as w:
            _, hard_state, _ = w.read_all()
        assert hard_state.commit == 3  # written all the same

    asyncio.run(main())


def test_the_pipeline_is_busy_only_with_more_in_flight_than_a_lone_client_has(
    tmp_path: Path,
) -> None:
    node = make_node(tmp_path, (1, 2, 3))
    follow_leader_2(node)
    try:

        def receive(index: int) -> None:
            e = Entry(term=1, index=index, data=put_data(index, b"k", b"v"))
            node.step(
                Message(
                    type=MessageType.MSG_APP,
                    to=1,
                    frm=2,
                    term=1,
                    log_term=1,
                    index=index - 1,
                    entries=(e,),
                    commit=1,
                )
            )

        assert not node._pipeline_busy()
        receive(2)  # one entry not yet known committed: what a lone client has in flight
        assert not node._pipeline_busy()
        receive(3)  # two: Readies now wait for READY_BATCH_INTERVAL to gather more
        assert node._pipeline_busy()
    finally:
        node.wal.close()
