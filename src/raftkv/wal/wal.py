"""The write-ahead log: durable Raft entries, hard state and snapshot markers.

Owns: creating, opening (with torn-tail repair), appending to, cutting and
releasing the segment files of one member's WAL directory.  Modelled on etcd's
``wal`` package.

Contracts:
- ``save`` is one ``pwrite`` of all records of the call and, when ``sync`` is
  true, one ``fdatasync``: the group commit of a Raft ``Ready``.  When ``save``
  returns with ``sync=True``, everything written so far survives a crash;
- ``write`` and ``sync`` are the same split in two, so the caller can run
  ``sync`` in a worker thread; they must not run concurrently with each other
  or with any other method of the same WAL;
- a segment is cut (after its fsync) once its written size reaches
  ``segment_size``; a new segment starts with a CRC record linking to the last
  CRC of the previous one, a metadata record and the latest hard state, and
  appears under its final name only once fully written and fsynced;
- one process at a time: the directory is locked with ``flock`` while open;
- private, as etcd's: the directory a ``create`` makes (and its missing parents) is 0700,
  every segment, temporary segment and ``.broken`` copy 0600 (``raftkv.fileutil``);
- after an I/O error the WAL refuses further writes (``WALClosedError``): the
  caller must reopen it, which repairs a torn tail.

Failpoints (``raftkv.failpoints``): ``walBeforeFsync`` is hit just before
the fdatasync of ``sync`` (``sleep(MS)``: a slow disk; ``panic``: die with the
batch written but not synced); ``walTornWrite``, when it fires on a write,
writes the batch only up to the middle of its last record, fsyncs that prefix
and kills the process with SIGKILL (power lost mid-write: the next ``open``
finds a torn tail and repairs it).  Nothing of such a batch was acknowledged.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import shutil
import signal
import time
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import NoReturn

from raftkv import failpoints
from raftkv.fileutil import PRIVATE_FILE_MODE, copy_file, mkdir_all
from raftkv.raft.codec import (
    ENTRY_HEADER_SIZE,
    CodecError,
    decode_hard_state,
    decode_snapshot_metadata,
    encode_hard_state,
    encode_snapshot_metadata,
)
from raftkv.raft.types import Entry, HardState, SnapshotMetadata
from raftkv.wal.errors import (
    WALClosedError,
    WALCorruptionError,
    WALError,
    WALExistsError,
    WALLockedError,
    WALNotFoundError,
)
from raftkv.wal.files import (
    BROKEN_SUFFIX,
    TMP_SUFFIX,
    Segment,
    fsync_dir,
    list_segments,
    preallocate,
    remove_stale_temporaries,
    search_index,
    segment_name,
    write_all,
)
from raftkv.wal.record import (
    RecordType,
    append_entries,
    append_record,
    encode_u32,
    frame_size,
)
from raftkv.wal.replay import Replay, WalSnapshot, read_segments, replay

log = logging.getLogger("raftkv.wal")

DEFAULT_SEGMENT_SIZE = 64 * 1024 * 1024
"""Bytes of a segment (etcd's ``SegmentSizeBytes``), read when a WAL is created or opened
without a size; tests and the simulator set it smaller, as etcd's tests set theirs."""


def _lock_dir(dirpath: str) -> int:
    fd = os.open(dirpath, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise WALLockedError(f"wal: directory {dirpath} is locked by another user") from None
    return fd


def _segment_header(metadata: bytes, prev: int, hard_state: HardState) -> tuple[bytearray, int]:
    buf = bytearray()
    crc = append_record(buf, RecordType.CRC, encode_u32(prev), prev)
    crc = append_record(buf, RecordType.METADATA, metadata, crc)
    if not hard_state.is_empty():
        crc = append_record(buf, RecordType.HARD_STATE, encode_hard_state(hard_state), crc)
    return buf, crc


class WAL:
    """An open WAL directory, positioned for appending after its last record."""

    def __init__(self, dirpath: str, dir_fd: int, segment_size: int, rp: Replay) -> None:
        self._dir = dirpath
        self._dir_fd = dir_fd
        self._segment_size = segment_size
        self._metadata = rp.metadata
        self._segments = list_segments(dirpath)
        self._tail = rp.tail
        self._tail_fd = os.open(rp.tail.path, os.O_RDWR)
        self._offset = rp.tail_end
        self._synced = rp.tail_end  # bytes of the tail known durable (found there at open)
        self._last_crc = rp.last_crc
        self._last_index = rp.last_index
        self._hard_state = rp.hard_state
        self._replay: Replay | None = rp
        self._dirty = False
        self._closed = False
        self._failed = False
        # Told the seconds each fdatasync of ``sync`` took (from the syncing thread).
        self.on_fsync: Callable[[float], None] | None = None

    # -- construction -------------------------------------------------------

    @classmethod
    def create(cls, dirpath: str, metadata: bytes, segment_size: int | None = None) -> WAL:
        """Create a new WAL holding ``metadata`` and an empty snapshot marker.

        The first segment is written in ``<dirpath>.tmp`` and the directory is
        renamed into place, so a crash leaves either no WAL or a complete one.
        Raises ``WALExistsError`` if ``dirpath`` already holds segments.
        """
        segment_size = segment_size or DEFAULT_SEGMENT_SIZE
        dirpath = os.path.abspath(dirpath)
        if list_segments(dirpath):
            raise WALExistsError(f"wal: {dirpath} already holds a WAL")
        tmpdir = dirpath + TMP_SUFFIX
        if os.path.exists(tmpdir):
            shutil.rmtree(tmpdir)
        mkdir_all(tmpdir)  # 0700, missing parents too (a new --wal-dir's)
        buf, crc = _segment_header(metadata, 0, HardState())
        append_record(buf, RecordType.SNAPSHOT, encode_snapshot_metadata(SnapshotMetadata()), crc)
        path = os.path.join(tmpdir, segment_name(0, 0))
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, PRIVATE_FILE_MODE)
        try:
            preallocate(fd, segment_size)
            write_all(fd, buf, 0)
            os.fsync(fd)
        finally:
            os.close(fd)
        fsync_dir(tmpdir)
        if os.path.isdir(dirpath):
            os.rmdir(dirpath)  # empty (checked above); rename cannot replace it atomically
        os.rename(tmpdir, dirpath)
        fsync_dir(os.path.dirname(dirpath))
        return cls.open(dirpath, None, segment_size=segment_size)

    @classmethod
    def open(
        cls,
        dirpath: str,
        snap: WalSnapshot | None = None,
        *,
        segment_size: int | None = None,
    ) -> WAL:
        """Open the WAL for appending, replaying from the marker ``snap``.

        A torn tail of the last segment is repaired (the segment is first copied
        to ``<segment>.broken``); any other damage raises ``WALCorruptionError``
        before anything is modified.  ``None`` means the initial empty marker.
        """
        segment_size = segment_size or DEFAULT_SEGMENT_SIZE
        dirpath = os.path.abspath(dirpath)
        snap = snap if snap is not None else WalSnapshot()
        segments = list_segments(dirpath)
        if not segments:
            raise WALNotFoundError(f"wal: no segment in {dirpath}")
        dir_fd = _lock_dir(dirpath)
        try:
            for path in remove_stale_temporaries(dirpath):
                log.warning("wal: removed unfinished segment %s", path)
            start = search_index(segments, snap.index)
            if start is None:
                raise WALNotFoundError(
                    f"wal: no segment in {dirpath} covers snapshot index {snap.index}"
                )
            rp = replay(segments[start:], snap)
            if rp.torn is not None:
                _repair_tail(rp, segment_size)
                fsync_dir(dirpath)
            return cls(dirpath, dir_fd, segment_size, rp)
        except BaseException:
            os.close(dir_fd)
            raise

    # -- reading --------------------------------------------------------------

    def read_all(self) -> tuple[bytes, HardState, list[Entry]]:
        """(metadata, latest hard state, entries after the snapshot marker).

        May be called once; the replayed entries are not kept afterwards.
        """
        if self._replay is None:
            raise WALError("wal: read_all may be called only once")
        rp, self._replay = self._replay, None
        return rp.metadata, rp.hard_state, rp.entries

    @property
    def dir(self) -> str:
        return self._dir

    @property
    def last_index(self) -> int:
        """Index of the last entry (or snapshot marker) written."""
        return self._last_index

    @property
    def segments(self) -> list[str]:
        return [s.path for s in self._segments]

    # -- writing --------------------------------------------------------------

    def write(self, hard_state: HardState | None, entries: Sequence[Entry]) -> None:
        """Append ``entries`` then ``hard_state`` (skipped when None or empty)
        with one write, without syncing."""
        self._check_writable()
        hs = hard_state if hard_state is not None and not hard_state.is_empty() else None
        if not entries and hs is None:
            return
        if entries:
            self._check_contiguous(entries)
        buf = bytearray()
        crc = self._last_crc
        last_start = 0
        if entries:
            crc = append_entries(buf, entries, crc)
            last_start = len(buf) - frame_size(ENTRY_HEADER_SIZE + len(entries[-1].data))
        if hs is not None:
            last_start = len(buf)
            crc = append_record(buf, RecordType.HARD_STATE, encode_hard_state(hs), crc)
        self._append(buf, crc, last_start)
        if entries:
            self._last_index = entries[-1].index
        if hs is not None:
            self._hard_state = hs

    def sync(self) -> None:
        """Make everything written durable (one fdatasync); cut the segment if full."""
        self._check_writable()
        if self._dirty:
            if failpoints.ENABLED:
                failpoints.hit("walBeforeFsync")  # sleep and panic act inside hit()
            started = time.perf_counter()
            try:
                os.fdatasync(self._tail_fd)
            except BaseException:
                self._failed = True
                raise
            self._dirty = False
            self._synced = self._offset
            if self.on_fsync is not None:
                self.on_fsync(time.perf_counter() - started)
        if self._offset >= self._segment_size:
            self._cut()

    def save(
        self, hard_state: HardState | None, entries: Sequence[Entry], *, sync: bool = True
    ) -> None:
        """``write`` then, if ``sync``, ``sync``: one write and one fdatasync."""
        self.write(hard_state, entries)
        if sync:
            self.sync()
        elif self._offset >= self._segment_size:
            self._cut()

    def save_snapshot(self, snap: WalSnapshot) -> None:
        """Durably record that a raft snapshot at ``snap.index`` exists.

        The snapshot file itself must be saved (``Snapshotter.save``) first.
        """
        self._check_writable()
        meta = SnapshotMetadata(snap.index, snap.term, snap.conf_state)
        buf = bytearray()
        crc = append_record(
            buf, RecordType.SNAPSHOT, encode_snapshot_metadata(meta), self._last_crc
        )
        self._append(buf, crc, 0)
        self._last_index = max(self._last_index, snap.index)
        self.sync()

    def release_lock_to(self, index: int) -> None:
        """Delete the segments wholly older than ``index``.

        Keeps the last segment whose first index is ``<= index`` and everything
        after it, so the WAL can still be opened at a snapshot marker at
        ``index``; never deletes the segment being written.
        """
        self._check_writable()
        pos = search_index(self._segments, index)
        if not pos:
            return
        for seg in self._segments[:pos]:
            os.remove(seg.path)
            log.info("wal: released segment %s", seg.path)
        self._segments = self._segments[pos:]
        fsync_dir(self._dir)

    def close(self) -> None:
        """Sync what was written (unless the WAL failed) and release the lock."""
        if self._closed:
            return
        self._closed = True
        try:
            if self._dirty and not self._failed:
                os.fdatasync(self._tail_fd)
        finally:
            os.close(self._tail_fd)
            os.close(self._dir_fd)  # closing the descriptor releases the flock

    def abandon(self) -> tuple[str, int, int]:
        """Close as a crash would (simulations): nothing more is written or synced, and the
        WAL refuses further use.  Returns (tail segment path, bytes of it known durable, bytes
        written to it): the bytes between the two may or may not survive the crash."""
        tail = (self._tail.path, self._synced, self._offset)
        if not self._closed:
            self._closed = True
            os.close(self._tail_fd)
            os.close(self._dir_fd)
        return tail

    def __enter__(self) -> WAL:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- internals ------------------------------------------------------------

    def _check_writable(self) -> None:
        if self._closed:
            raise WALClosedError("wal: closed")
        if self._failed:
            raise WALClosedError("wal: an earlier write failed; reopen the WAL")

    def _check_contiguous(self, entries: Sequence[Entry]) -> None:
        """Entries must be consecutive and may not leave a gap after the log
        (a gap would make the WAL unreadable at restart).  Entries following a
        snapshot need its marker first: ``save_snapshot`` then ``save``."""
        first = entries[0].index
        if first > self._last_index + 1:
            raise ValueError(
                f"wal: entry {first} would leave a gap after index {self._last_index}"
                " (save the snapshot marker first)"
            )
        for k, e in enumerate(entries):
            if e.index != first + k:
                raise ValueError(f"wal: entries not consecutive: {e.index} after {first + k - 1}")

    def _append(self, buf: bytearray, crc: int, last_start: int) -> None:
        """Write ``buf`` (records whose last one starts at ``last_start``) at the tail."""
        if failpoints.ENABLED and failpoints.hit("walTornWrite"):
            self._tear(buf, last_start)
        try:
            if failpoints.ENABLED and failpoints.hit("walNoSpace"):
                write_all(self._tail_fd, memoryview(buf)[: len(buf) // 2], self._offset)
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), self._tail.path)
            write_all(self._tail_fd, buf, self._offset)
        except BaseException:
            self._failed = True
            raise
        self._offset += len(buf)
        self._last_crc = crc
        self._dirty = True

    def _tear(self, buf: bytearray, last_start: int) -> NoReturn:
        """The ``walTornWrite`` failpoint: persist ``buf`` up to the middle of its last record,
        then die as ``kill -9`` would (the rest of the batch never reaches the disk)."""
        cut = last_start + (len(buf) - last_start) // 2
        write_all(self._tail_fd, memoryview(buf)[:cut], self._offset)
        os.fdatasync(self._tail_fd)
        with contextlib.suppress(OSError):
            os.write(
                2,
                f"raftkv: failpoint walTornWrite: wrote {cut} of {len(buf)} bytes at offset "
                f"{self._offset} of {self._tail.path}; killing the process\n".encode(),
            )
        os.kill(os.getpid(), signal.SIGKILL)
        os._exit(128 + signal.SIGKILL)  # not reached: SIGKILL to oneself is delivered at once

    def _cut(self) -> None:
        """Close the full tail segment and start the next one."""
        try:
            os.ftruncate(self._tail_fd, self._offset)
            os.fsync(self._tail_fd)
            seg = Segment(
                self._tail.seq + 1,
                self._last_index + 1,
                os.path.join(self._dir, segment_name(self._tail.seq + 1, self._last_index + 1)),
            )
            tmp = seg.path + TMP_SUFFIX
            buf, crc = _segment_header(self._metadata, self._last_crc, self._hard_state)
            fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC, PRIVATE_FILE_MODE)
            try:
                preallocate(fd, self._segment_size)
                write_all(fd, buf, 0)
                os.fsync(fd)
                os.rename(tmp, seg.path)
                fsync_dir(self._dir)
            except BaseException:
                os.close(fd)
                raise
        except BaseException:
            self._failed = True
            raise
        os.close(self._tail_fd)
        self._tail_fd = fd
        self._tail = seg
        self._segments.append(seg)
        self._offset = self._synced = len(buf)
        self._last_crc = crc
        self._dirty = False
        log.info("wal: cut to segment %s", seg.path)


def _repair_tail(rp: Replay, segment_size: int) -> None:
    """Cut the torn tail off the last segment, keeping a ``.broken`` copy."""
    assert rp.torn is not None
    path = rp.tail.path
    broken = path + BROKEN_SUFFIX
    copy_file(path, broken)
    fd = os.open(broken, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    fd = os.open(path, os.O_RDWR)
    try:
        os.ftruncate(fd, rp.tail_end)
        preallocate(fd, segment_size)
        os.fsync(fd)
    finally:
        os.close(fd)
    log.warning(
        "wal: repaired torn tail of %s at offset %d (%s); original kept as %s",
        path,
        rp.torn.offset,
        rp.torn.reason,
        broken,
    )


def valid_snapshot_entries(dirpath: str) -> list[WalSnapshot]:
    """Snapshot markers of the WAL in ``dirpath`` whose index is committed.

    Reads every segment (read-only, no lock, a torn tail is tolerated), like
    etcd's ``ValidSnapshotEntries``; pass the result to
    ``Snapshotter.load_newest_available``.
    """
    segments = list_segments(dirpath)
    if not segments:
        raise WALNotFoundError(f"wal: no segment in {dirpath}")
    snaps: list[WalSnapshot] = []
    hard_state = HardState()
    for read in read_segments(segments):
        for rec in read.scan.records:
            try:
                if rec.type == RecordType.SNAPSHOT:
                    m = decode_snapshot_metadata(rec.data)
                    snaps.append(WalSnapshot(m.index, m.term, m.conf_state))
                elif rec.type == RecordType.HARD_STATE:
                    hard_state = decode_hard_state(rec.data)
            except CodecError as exc:
                raise WALCorruptionError(read.segment.path, rec.offset, str(exc)) from None
    return [s for s in snaps if s.index <= hard_state.commit]
