"""Streaming a snapshot's backend file between members.

Owns: both halves of a snapshot transfer on an already-handshaken connection.

Sender: ``SNAP_BEGIN`` (file size + encoded MsgSnap), then ``SNAP_CHUNK`` frames
of at most ``chunk_size`` file bytes, each carrying the CRC32C of its file
bytes (computed before the bytes enter a frame, so corruption between the
disk read and the socket is caught too), then ``SNAP_END`` (total size +
CRC32C of the whole file).  The receiver answers ``SNAP_ACK`` or ``ERROR``.

Receiver: writes into a temp file in ``snapshot_dir``, checks every chunk CRC,
the size and the whole-file CRC, fsyncs the file, runs the caller's ``check`` of
its content, renames it to ``snapshot_db_name(index, term)`` and fsyncs the
directory.  The stream CRCs prove the file arrived as the sender read it, not
that the sender's disk kept it intact: the member's ``check`` opens the file and
unseals every stored value.  On any failure the temp file is removed and
nothing is renamed: a partial or refused file is never visible under a final
name.  The file is private (0600, ``tempfile.mkstemp``'s mode, kept by the
rename) and a missing ``snapshot_dir`` is created 0700 (``raftkv.fileutil``).

File reads, writes, fsyncs and the content check run in the default executor
so a file of tens of megabytes never blocks the event loop; the socket side
awaits ``drain()`` after every chunk, so memory stays bounded by one chunk.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import tempfile
from collections.abc import Callable
from typing import BinaryIO

import crc32c

from raftkv.fileutil import mkdir_all
from raftkv.peer import framing
from raftkv.peer.framing import FrameError, FrameKind

DEFAULT_CHUNK_SIZE = 1024 * 1024
TEMP_SUFFIX = ".snap.db.tmp"
_DB_NAME_RE = re.compile(r"^([0-9a-f]{16})-([0-9a-f]{16})\.snap\.db$")

ChunkHook = Callable[[int, bytearray], None]
"""Test fault hook: ``(chunk_number, data)``; may mutate ``data`` after its CRC was taken."""

FileCheck = Callable[[str], None]
"""Checks the content of a received file at a path; raises (any ``Exception``) to refuse it.
Blocking: it is run in the executor."""


class SnapshotTransferError(Exception):
    """The transfer failed verification (CRC, size, order) or was refused."""


def snapshot_db_name(index: int, term: int) -> str:
    """File name of a received backend file: ``<index>-<term>.snap.db`` in 16-digit hex."""
    return f"{index:016x}-{term:016x}.snap.db"


def parse_snapshot_db_name(name: str) -> tuple[int, int] | None:
    """``(index, term)`` of a ``snapshot_db_name``, or None for any other name."""
    m = _DB_NAME_RE.match(name)
    if m is None:
        return None
    return int(m.group(1), 16), int(m.group(2), 16)


def _progress_logger(
    logger: logging.Logger, what: str, peer_id: int, total: int
) -> Callable[[int], None]:
    """Log at 25 % steps; returns a callback taking the byte count done so far."""
    state = {"next": 25}

    def report(done: int) -> None:
        pct = 100 if total == 0 else done * 100 // total
        while pct >= state["next"] and state["next"] <= 100:
            logger.info(
                "snapshot %s peer=%x progress=%d%% bytes=%d/%d",
                what,
                peer_id,
                state["next"],
                done,
                total,
            )
            state["next"] += 25

    return report


async def send_file(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    *,
    peer_id: int,
    message: bytes,
    db_path: str,
    logger: logging.Logger,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    chunk_hook: ChunkHook | None = None,
    ack_timeout: float = 60.0,
) -> int:
    """Stream ``db_path`` after the encoded MsgSnap; return the file size once acknowledged.

    Raises ``SnapshotTransferError`` if the receiver refuses, ``FrameError`` or
    ``ConnectionError``/``OSError`` on transport failure.
    """
    loop = asyncio.get_running_loop()
    f: BinaryIO = await loop.run_in_executor(None, open, db_path, "rb")
    try:
        size = os.fstat(f.fileno()).st_size
        report = _progress_logger(logger, "send", peer_id, size)
        logger.info("snapshot send start peer=%x bytes=%d path=%s", peer_id, size, db_path)
        writer.write(framing.encode_snap_begin(size, message))
        sent, total_crc, number = 0, 0, 0
        while True:
            data = await loop.run_in_executor(None, f.read, chunk_size)
            if not data:
                break
            chunk_crc = crc32c.crc32c(data)
            total_crc = crc32c.crc32c(data, total_crc)
            chunk: bytes | bytearray = data
            if chunk_hook is not None:
                chunk = bytearray(data)
                chunk_hook(number, chunk)
            writer.write(framing.encode_snap_chunk(chunk_crc, chunk))
            await writer.drain()
            sent += len(data)
            number += 1
            report(sent)
        writer.write(framing.encode_snap_end(sent, total_crc))
        await writer.drain()
    finally:
        await loop.run_in_executor(None, f.close)
    async with asyncio.timeout(ack_timeout):
        kind, payload = await framing.read_frame(reader)
    if kind is FrameKind.SNAP_ACK:
        return sent
    if kind is FrameKind.ERROR:
        _, text = framing.decode_error(payload)
        raise SnapshotTransferError(f"receiver refused snapshot: {text}")
    raise FrameError(f"unexpected {kind.name} frame after snapshot")


def _open_temp(snapshot_dir: str) -> tuple[str, BinaryIO]:
    mkdir_all(snapshot_dir)
    fd, path = tempfile.mkstemp(dir=snapshot_dir, suffix=TEMP_SUFFIX)  # created 0600
    return path, os.fdopen(fd, "wb")


def _sync(f: BinaryIO) -> None:
    f.flush()
    os.fsync(f.fileno())
    f.close()


def _publish(temp: str, final: str, snapshot_dir: str) -> None:
    os.replace(temp, final)
    dfd = os.open(snapshot_dir, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def _discard(f: BinaryIO, temp: str) -> None:
    f.close()
    with contextlib.suppress(FileNotFoundError):
        os.unlink(temp)


async def receive_file(
    reader: asyncio.StreamReader,
    *,
    peer_id: int,
    snapshot_dir: str,
    index: int,
    term: int,
    size: int,
    logger: logging.Logger,
    check: FileCheck | None = None,
) -> str:
    """Receive the chunks announced by a ``SNAP_BEGIN`` of ``size`` bytes; return the final path.

    ``check``, when given, is run in the executor on the complete, fsynced temp file before
    it is renamed; whatever it raises refuses the file.  Raises ``SnapshotTransferError`` on
    a CRC/size mismatch or a refusal by ``check`` (its text included), ``FrameError`` on a
    corrupt frame, ``ConnectionClosedError`` on truncation.  On any exception the temp file
    is gone.
    """
    loop = asyncio.get_running_loop()
    temp, f = await loop.run_in_executor(None, _open_temp, snapshot_dir)
    report = _progress_logger(logger, "receive", peer_id, size)
    done = False
    try:
        received, total_crc = 0, 0
        while True:
            kind, payload = await framing.read_frame(reader)
            if kind is FrameKind.SNAP_CHUNK:
                chunk_crc, data = framing.decode_snap_chunk(payload)
                if crc32c.crc32c(data) != chunk_crc:
                    raise SnapshotTransferError(f"chunk CRC mismatch at offset {received}")
                received += len(data)
                if received > size:
                    raise SnapshotTransferError(f"more than the announced {size} bytes")
                total_crc = crc32c.crc32c(data, total_crc)
                await loop.run_in_executor(None, f.write, data)
                report(received)
            elif kind is FrameKind.SNAP_END:
                end_size, end_crc = framing.decode_snap_end(payload)
                if end_size != size or received != size:
                    raise SnapshotTransferError(
                        f"size mismatch: announced {size}, trailer {end_size}, received {received}"
                    )
                if end_crc != total_crc:
                    raise SnapshotTransferError("whole-file CRC mismatch")
                break
            else:
                raise FrameError(f"unexpected {kind.name} frame in snapshot stream")
        await loop.run_in_executor(None, _sync, f)
        if check is not None:
            try:
                await loop.run_in_executor(None, check, temp)
            except Exception as exc:
                raise SnapshotTransferError(f"received file refused: {exc}") from exc
        final = os.path.join(snapshot_dir, snapshot_db_name(index, term))
        await loop.run_in_executor(None, _publish, temp, final, snapshot_dir)
        done = True
        logger.info("snapshot receive done peer=%x bytes=%d path=%s", peer_id, size, final)
        return final
    finally:
        if not done:
            # Runs on cancellation too, so it must not await.
            _discard(f, temp)
