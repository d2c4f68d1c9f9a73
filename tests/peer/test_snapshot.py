"""Snapshot streaming between real transports: a ~20 MB file arrives intact, a
corrupted or truncated transfer is discarded and reported as failed, and so is a
backend that arrived intact but holds a value failing its CRC."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import crc32c

from raftkv.mvcc.backend import BUCKET_KEY, BUCKET_META, Backend, BackendConfig, verify_file
from raftkv.peer import framing, snapshot_db_name
from raftkv.peer.framing import FrameKind, StreamKind
from raftkv.raft.codec import encode_message
from raftkv.raft.types import ConfState, Message, MessageType, Snapshot, SnapshotMetadata
from tests.peer.harness import Node, mesh, raw_connect, wait_until

SIZE = 20 * 1024 * 1024 + 12345  # not a multiple of the chunk size


def snap_message(frm: int, to: int, index: int = 1234, term: int = 7) -> Message:
    meta = SnapshotMetadata(index=index, term=term, conf_state=ConfState(voters=(1, 2)))
    return Message(
        MessageType.MSG_SNAP, to=to, frm=frm, term=term, snapshot=Snapshot(meta, b"members")
    )


def make_file(path: Path, size: int) -> int:
    data = os.urandom(size)
    path.write_bytes(data)
    return crc32c.crc32c(data)


def file_crc(path: str) -> int:
    crc = 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            crc = crc32c.crc32c(chunk, crc)
    return crc


MARKER = b"MARKER-" + b"q" * 40


def backend_file(root: Path, name: str, *, flip: bool) -> Path:
    """A backend as a leader sends it (``Applier.copy_backend``: one compacted LMDB file)
    holding ``MARKER`` under key ``k1`` of the key bucket.  With ``flip``, one bit of that
    stored value is flipped in the file, as a disk does at rest: the file stays a valid LMDB
    file, and the stream's CRCs, taken on the file as sent, match."""
    backend = Backend(root / f"{name}.env", BackendConfig(map_size=64 << 20))
    path = root / name
    try:
        backend.put(BUCKET_META, b"consistent_index", (1234).to_bytes(8, "big"))
        backend.put(BUCKET_KEY, b"k1", MARKER)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            backend.env.copyfd(fd, compact=True)
        finally:
            os.close(fd)
    finally:
        backend.close()
    if flip:
        raw = bytearray(path.read_bytes())
        assert raw.count(MARKER) == 1
        raw[raw.find(MARKER) + 10] ^= 0x04
        path.write_bytes(bytes(raw))
    return path


def run(coro: Coroutine[Any, Any, None]) -> None:
    asyncio.run(asyncio.wait_for(coro, 120))


def test_large_snapshot_is_delivered_intact(tmp_path: Path) -> None:
    src = tmp_path / "db"
    want = make_file(src, SIZE)
    recv_dir = tmp_path / "recv"

    async def main() -> None:
        a, b = Node(1, str(tmp_path / "a")), Node(2, str(recv_dir))
        await a.t.start()
        await b.t.start()
        try:
            await mesh([a, b])
            ticks = 0

            async def ticker() -> None:  # the loop keeps running during the transfer
                nonlocal ticks
                while True:
                    await asyncio.sleep(0.005)
                    ticks += 1

            tick_task = asyncio.ensure_future(ticker())
            m = snap_message(1, 2)
            a.t.send_snapshot(m, str(src))
            a.t.send([Message(MessageType.MSG_HEARTBEAT, to=2, frm=1, term=7)])
            await wait_until(lambda: a.snap_status != [], timeout=90, what="snapshot status")
            tick_task.cancel()
            assert a.snap_status == [(2, True)]
            assert len(b.snapshots) == 1
            got, path = b.snapshots[0]
            assert got == m
            assert os.path.basename(path) == snapshot_db_name(1234, 7)
            assert os.path.getsize(path) == SIZE
            assert file_crc(path) == want
            assert sorted(os.listdir(recv_dir)) == [snapshot_db_name(1234, 7)]
            assert b.t.stats.snapshots_received == 1
            assert [x.type for x in b.received] == [MessageType.MSG_HEARTBEAT]
            assert ticks > 0
            assert "progress=50%" in a.log.text() and "progress=100%" in b.log.text()
        finally:
            await a.t.stop()
            await b.t.stop()

    run(main())


def test_corrupted_chunk_is_rejected_and_reported(tmp_path: Path) -> None:
    src = tmp_path / "db"
    make_file(src, 3 * 1024 * 1024 + 7)
    recv_dir = tmp_path / "recv"

    def flip(number: int, data: bytearray) -> None:
        if number == 2:
            data[100] ^= 0x01

    async def main() -> None:
        a, b = Node(1, str(tmp_path / "a")), Node(2, str(recv_dir))
        await a.t.start()
        await b.t.start()
        try:
            await mesh([a, b])
            a.t.hooks.snapshot_chunk = flip
            a.t.send_snapshot(snap_message(1, 2), str(src))
            await wait_until(lambda: a.snap_status != [], timeout=30)
            assert a.snap_status == [(2, False)]
            assert 2 in a.unreachable
            assert b.snapshots == []
            assert b.t.stats.snapshots_failed == 1
            assert os.listdir(recv_dir) == []
            assert "chunk CRC mismatch" in a.log.text()
            # The same file without the fault goes through afterwards.
            a.t.hooks.snapshot_chunk = None
            a.t.send_snapshot(snap_message(1, 2), str(src))
            await wait_until(lambda: len(a.snap_status) == 2, timeout=30)
            assert a.snap_status[1] == (2, True)
            assert os.listdir(recv_dir) == [snapshot_db_name(1234, 7)]
        finally:
            await a.t.stop()
            await b.t.stop()

    run(main())


def test_truncated_transfer_is_discarded(tmp_path: Path) -> None:
    recv_dir = tmp_path / "recv"

    async def main() -> None:
        b = Node(2, str(recv_dir))
        await b.t.start()
        try:
            b.know(1)
            _, writer = await raw_connect(b.port, StreamKind.SNAPSHOT, frm=1, to=2)
            writer.write(framing.encode_snap_begin(1000, encode_message(snap_message(1, 2))))
            data = os.urandom(500)
            writer.write(framing.encode_snap_chunk(crc32c.crc32c(data), data))
            await writer.drain()
            await wait_until(
                lambda: recv_dir.is_dir() and any(n.endswith(".tmp") for n in os.listdir(recv_dir))
            )
            writer.close()
            await wait_until(lambda: b.t.stats.snapshots_failed == 1)
            assert os.listdir(recv_dir) == []
            assert b.snapshots == []
        finally:
            await b.t.stop()

    run(main())


def test_wrong_whole_file_crc_is_refused_with_an_error_frame(tmp_path: Path) -> None:
    recv_dir = tmp_path / "recv"

    async def main() -> None:
        b = Node(2, str(recv_dir))
        await b.t.start()
        try:
            b.know(1)
            reader, writer = await raw_connect(b.port, StreamKind.SNAPSHOT, frm=1, to=2)
            data = os.urandom(2048)
            writer.write(framing.encode_snap_begin(2048, encode_message(snap_message(1, 2))))
            writer.write(framing.encode_snap_chunk(crc32c.crc32c(data), data))
            writer.write(framing.encode_snap_end(2048, crc32c.crc32c(data) ^ 1))
            kind, payload = await asyncio.wait_for(framing.read_frame(reader), 10)
            writer.close()
            assert kind is FrameKind.ERROR
            assert "whole-file CRC mismatch" in framing.decode_error(payload)[1]
            assert os.listdir(recv_dir) == []
            assert b.snapshots == []
        finally:
            await b.t.stop()

    run(main())


def test_snapshot_to_unreachable_or_unknown_peer_fails(tmp_path: Path) -> None:
    src = tmp_path / "db"
    make_file(src, 10)

    async def main() -> None:
        a, b = Node(1, str(tmp_path / "a")), Node(2, str(tmp_path / "b"))
        await a.t.start()
        await b.t.start()
        a.t.add_peer(2, b.t.urls)
        await b.t.stop()
        try:
            a.t.send_snapshot(snap_message(1, 2), str(src))
            a.t.send_snapshot(snap_message(1, 5), str(src))
            await wait_until(lambda: len(a.snap_status) == 2, timeout=30)
            assert sorted(a.snap_status) == [(2, False), (5, False)]
        finally:
            await a.t.stop()

    run(main())


def test_a_backend_holding_a_corrupt_value_is_refused_and_deleted(tmp_path: Path) -> None:
    bad = backend_file(tmp_path, "bad.db", flip=True)
    good = backend_file(tmp_path, "good.db", flip=False)
    recv_dir = tmp_path / "recv"
    checked_in: list[int] = []  # the threads the check ran in

    def check(path: str) -> None:
        checked_in.append(threading.get_ident())
        verify_file(path)

    async def main() -> None:
        a, b = Node(1, str(tmp_path / "a")), Node(2, str(recv_dir), check_snapshot=check)
        await a.t.start()
        await b.t.start()
        try:
            await mesh([a, b])
            a.t.send_snapshot(snap_message(1, 2), str(bad))
            await wait_until(lambda: a.snap_status != [], timeout=30)
            assert a.snap_status == [(2, False)]
            assert 2 in a.unreachable
            assert b.snapshots == []
            assert os.listdir(recv_dir) == []
            assert (b.t.stats.snapshots_failed, b.t.stats.snapshots_received) == (1, 0)
            # The sender got the receiver's ERROR frame, with the check's reason.
            assert "receiver refused snapshot" in a.log.text()
            assert "bucket 'key' at key 6b31" in a.log.text()
            assert b.log.warnings == [
                "snapshot 1234 from 1 rejected: received file refused: mvcc: backend "
                "corruption in bucket 'key' at key 6b31: checksum mismatch"
            ]
            # The same backend intact passes the check and is acknowledged.
            a.t.send_snapshot(snap_message(1, 2), str(good))
            await wait_until(lambda: len(a.snap_status) == 2, timeout=30)
            assert a.snap_status[1] == (2, True)
            assert [path for _m, path in b.snapshots] == [str(recv_dir / snapshot_db_name(1234, 7))]
            assert os.listdir(recv_dir) == [snapshot_db_name(1234, 7)]
            assert len(checked_in) == 2
            assert threading.get_ident() not in checked_in  # never on the event loop's thread
        finally:
            await a.t.stop()
            await b.t.stop()

    run(main())
