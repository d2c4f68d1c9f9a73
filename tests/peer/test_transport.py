"""PeerTransport over real loopback sockets: delivery, ordering, batching, reconnects,
refusals (cluster ID, removed member), corrupt frames, requests."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import pytest

from raftkv.peer import PeerRequestError, framing
from raftkv.peer.framing import FrameKind, StreamKind
from raftkv.raft.codec import encode_message
from raftkv.raft.types import Message, MessageType, Snapshot, SnapshotMetadata
from tests.peer.harness import Node, app, free_port, mesh, raw_connect, wait_until


def run(coro: Coroutine[Any, Any, None]) -> None:
    asyncio.run(asyncio.wait_for(coro, 60))


async def start(*nodes: Node) -> None:
    for n in nodes:
        await n.t.start()


async def stop(*nodes: Node) -> None:
    for n in nodes:
        await n.t.stop()


def test_three_transports_deliver_everything_in_order(tmp_path: Path) -> None:
    n_msgs = 3000

    async def main() -> None:
        nodes = [Node(i, str(tmp_path / str(i))) for i in (1, 2, 3)]
        await start(*nodes)
        try:
            await mesh(nodes)
            for base in range(0, n_msgs, 100):
                for a in nodes:
                    a.t.send(
                        [
                            app(a.id, b.id, i)
                            for b in nodes
                            if b is not a
                            for i in range(base, base + 100)
                        ]
                    )
                await asyncio.sleep(0)
            await wait_until(lambda: all(len(n.received) == 2 * n_msgs for n in nodes))
            for n in nodes:
                for a in nodes:
                    if a is n:
                        continue
                    got = [m.index for m in n.received if m.frm == a.id]
                    assert got == list(range(n_msgs))
                    assert all(m.to == n.id and m.entries[0].data == b"x" * 16 for m in n.received)
                assert n.unreachable == []
        finally:
            await stop(*nodes)

    run(main())


def test_queued_messages_are_coalesced_into_few_writes(tmp_path: Path) -> None:
    async def main() -> None:
        a, b = Node(1, str(tmp_path)), Node(2, str(tmp_path))
        await start(a, b)
        try:
            await mesh([a, b])
            before = a.t.peer_stats(2).writes
            a.t.send([app(1, 2, i) for i in range(2000)])
            await wait_until(lambda: len(b.received) == 2000)
            stats = a.t.peer_stats(2)
            assert stats.messages_sent == 2000
            assert 1 <= stats.writes - before <= 20
            assert [m.index for m in b.received] == list(range(2000))
        finally:
            await stop(a, b)

    run(main())


def test_full_queue_drops_and_reports_unreachable_once(tmp_path: Path) -> None:
    async def main() -> None:
        a = Node(1, str(tmp_path), queue_size=10, unreachable_interval=30.0)
        b = Node(2, str(tmp_path))
        await start(a, b)
        try:
            await mesh([a, b])
            a.t.send([app(1, 2, i) for i in range(100)])
            await wait_until(lambda: len(b.received) == 10 and a.unreachable == [2])
            assert [m.index for m in b.received] == list(range(10))
            assert a.t.peer_stats(2).messages_dropped == 90
            await asyncio.sleep(0.05)
            assert a.unreachable == [2]  # rate-limited: one report for 90 drops
        finally:
            await stop(a, b)

    run(main())


def test_reconnects_after_peer_restart(tmp_path: Path) -> None:
    async def main() -> None:
        a, b = Node(1, str(tmp_path)), Node(2, str(tmp_path))
        await start(a, b)
        b2: Node | None = None
        try:
            await mesh([a, b])
            a.t.send([app(1, 2, i) for i in range(10)])
            await wait_until(lambda: len(b.received) == 10)
            port = b.port
            await b.t.stop()
            await wait_until(lambda: not a.t.is_connected(2), what="a notices b is down")
            a.t.send([app(1, 2, 99)])
            await wait_until(lambda: 2 in a.unreachable, what="unreachable report")
            b2 = Node(2, str(tmp_path), port=port)
            b2.t.add_peer(1, a.t.urls)
            await b2.t.start()
            assert await a.t.wait_connected([2], 10)
            a.t.send([app(1, 2, i) for i in range(100, 110)])
            await wait_until(lambda: len(b2.received) == 10)
            assert [m.index for m in b2.received] == list(range(100, 110))
            assert a.t.peer_stats(2).connects == 2
        finally:
            await stop(a, b, *([b2] if b2 else []))

    run(main())


def test_cluster_id_mismatch_is_refused(tmp_path: Path) -> None:
    async def main() -> None:
        a = Node(1, str(tmp_path), cluster_id=0xAAAA)
        b = Node(2, str(tmp_path), cluster_id=0xBBBB)
        await start(a, b)
        try:
            a.t.add_peer(2, b.t.urls)
            await wait_until(lambda: b.t.stats.refused_handshakes >= 1)
            await wait_until(lambda: "cluster ID mismatch" in a.t.peer_stats(2).last_error)
            assert not a.t.is_connected(2)
            assert "local-member-cluster-id=bbbb" in b.log.text()
            assert "remote-peer-cluster-id=aaaa" in b.log.text()
            assert "refused our stream: cluster ID mismatch" in a.log.text()
            a.t.send([app(1, 2, 0)])
            await wait_until(lambda: a.unreachable == [2])
            assert b.received == []
            assert a.removed_calls == 0
        finally:
            await stop(a, b)

    run(main())


def test_removed_member_is_refused_and_told(tmp_path: Path) -> None:
    async def main() -> None:
        a, b = Node(1, str(tmp_path)), Node(2, str(tmp_path))
        await start(a, b)
        try:
            await mesh([a, b])
            a.t.send([app(1, 2, 0)])
            await wait_until(lambda: len(b.received) == 1)
            b.t.set_removed({1})  # drops the open stream; redials are refused
            await wait_until(lambda: a.removed_calls >= 1, what="a learns it was removed")
            assert not a.t.is_connected(2)
            assert "permanently removed" in a.t.peer_stats(2).last_error
            assert b.t.stats.refused_handshakes >= 1
            # b's stream to a is unaffected: removal only refuses the removed member's streams.
            b.t.send([app(2, 1, 7)])
            await wait_until(lambda: len(a.received) == 1)
        finally:
            await stop(a, b)

    run(main())


def test_corrupt_frame_drops_the_connection_and_is_never_delivered(tmp_path: Path) -> None:
    async def main() -> None:
        b = Node(2, str(tmp_path))
        await start(b)
        try:
            b.know(7)
            reader, writer = await raw_connect(b.port, StreamKind.MESSAGES, frm=7, to=2)

            def frame(index: int) -> bytes:
                payload = framing.encode_batch_payload([encode_message(app(7, 2, index))])
                return framing.encode_frame(FrameKind.MESSAGES, payload)

            bad = bytearray(frame(2))
            bad[-3] ^= 0x40  # inside the message, after the CRC was computed
            writer.write(frame(1) + bytes(bad) + frame(3))
            assert await asyncio.wait_for(reader.read(), 5) == b""  # receiver hung up
            writer.close()
            assert [m.index for m in b.received] == [1]
            assert b.t.stats.corrupt_frames == 1
        finally:
            await stop(b)

    run(main())


def test_undecodable_message_with_valid_crc_is_rejected(tmp_path: Path) -> None:
    async def main() -> None:
        b = Node(2, str(tmp_path))
        await start(b)
        try:
            b.know(7)
            reader, writer = await raw_connect(b.port, StreamKind.MESSAGES, frm=7, to=2)
            good = encode_message(app(7, 2, 1))
            payload = framing.encode_batch_payload([good, b"\xff" * 10])
            writer.write(framing.encode_frame(FrameKind.MESSAGES, payload))
            assert await asyncio.wait_for(reader.read(), 5) == b""
            writer.close()
            assert b.received == []  # a batch is delivered whole or not at all
            assert b.t.stats.corrupt_frames == 1
        finally:
            await stop(b)

    run(main())


def test_handshake_for_another_member_is_refused(tmp_path: Path) -> None:
    async def main() -> None:
        a, b = Node(1, str(tmp_path)), Node(2, str(tmp_path))
        await start(a, b)
        try:
            a.t.add_peer(3, b.t.urls)  # wrong address book: member 3 is not at b's URL
            await wait_until(lambda: "to member ID mismatch" in a.t.peer_stats(3).last_error)
            assert not a.t.is_connected(3)
        finally:
            await stop(a, b)

    run(main())


def test_update_peer_and_url_rotation(tmp_path: Path) -> None:
    async def main() -> None:
        a, b = Node(1, str(tmp_path)), Node(2, str(tmp_path))
        await start(a, b)
        dead = f"http://127.0.0.1:{free_port()}"
        try:
            a.t.add_peer(2, [dead])
            b.t.add_peer(1, a.t.urls)
            assert not await a.t.wait_connected([2], 0.3)
            a.t.update_peer(2, [dead, *b.t.urls])  # the stream rotates to the live URL
            assert await a.t.wait_connected([2], 10)
            a.t.send([app(1, 2, 5)])
            await wait_until(lambda: len(b.received) == 1)
            a.t.remove_peer(2)
            assert not a.t.is_connected(2)
            a.t.send([app(1, 2, 6)])  # unknown peer now: silently dropped
            await asyncio.sleep(0.05)
            assert len(b.received) == 1
        finally:
            await stop(a, b)

    run(main())


def test_msgsnap_through_send_fails_its_status(tmp_path: Path) -> None:
    async def main() -> None:
        a, b = Node(1, str(tmp_path)), Node(2, str(tmp_path))
        await start(a, b)
        try:
            await mesh([a, b])
            snap = Snapshot(SnapshotMetadata(index=10, term=2))
            a.t.send([Message(MessageType.MSG_SNAP, to=2, frm=1, term=2, snapshot=snap)])
            assert a.snap_status == []  # scheduled, never re-entrant
            await wait_until(lambda: a.snap_status == [(2, False)])
            with pytest.raises(ValueError):
                a.t.send([Message(MessageType.MSG_HUP, to=2, frm=1)])
        finally:
            await stop(a, b)

    run(main())


def test_request_response_errors_and_timeout(tmp_path: Path) -> None:
    async def main() -> None:
        a, b = Node(1, str(tmp_path)), Node(2, str(tmp_path))

        async def echo(frm: int, body: bytes) -> bytes:
            return body.upper() + b":" + str(frm).encode()

        async def slow(frm: int, body: bytes) -> bytes:
            await asyncio.sleep(30)
            return body

        async def broken(frm: int, body: bytes) -> bytes:
            raise RuntimeError("hash unavailable")

        b.t.register_handler("echo", echo)
        b.t.register_handler("slow", slow)
        b.t.register_handler("broken", broken)
        await start(a, b)
        try:
            a.t.add_peer(2, b.t.urls)  # request waits for the stream to come up
            b.t.add_peer(1, a.t.urls)
            assert await a.t.request(2, "echo", b"abc", timeout=10) == b"ABC:1"
            replies = await asyncio.gather(
                *(a.t.request(2, "echo", str(i).encode(), timeout=10) for i in range(50))
            )
            assert replies == [f"{i}:1".encode() for i in range(50)]
            with pytest.raises(PeerRequestError, match="timed out"):
                await a.t.request(2, "slow", b"", timeout=0.2)
            with pytest.raises(PeerRequestError, match="no handler"):
                await a.t.request(2, "nope", b"", timeout=10)
            with pytest.raises(PeerRequestError, match="hash unavailable"):
                await a.t.request(2, "broken", b"", timeout=10)
            with pytest.raises(PeerRequestError, match="unknown peer"):
                await a.t.request(9, "echo", b"", timeout=10)
            # Raft traffic and requests share the stream without disturbing each other.
            a.t.send([app(1, 2, i) for i in range(10)])
            assert await a.t.request(2, "echo", b"z", timeout=10) == b"Z:1"
            await wait_until(lambda: len(b.received) == 10)
        finally:
            await stop(a, b)

    run(main())


def test_request_fails_when_the_peer_goes_away(tmp_path: Path) -> None:
    async def main() -> None:
        a, b = Node(1, str(tmp_path)), Node(2, str(tmp_path))
        started: list[int] = []

        async def slow(frm: int, body: bytes) -> bytes:
            started.append(frm)
            await asyncio.sleep(30)
            return body

        b.t.register_handler("slow", slow)
        await start(a, b)
        try:
            await mesh([a, b])
            pending = asyncio.ensure_future(a.t.request(2, "slow", b"", timeout=20))
            await wait_until(lambda: started == [1], what="handler running on b")
            await b.t.stop()
            with pytest.raises(PeerRequestError, match="connection lost"):
                await pending
        finally:
            await stop(a, b)

    run(main())
