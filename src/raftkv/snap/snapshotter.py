"""Raft snapshot files: saving, loading, choosing the newest usable one, purging.

Owns: the ``%016x-%016x.snap`` files (term, index) of one member's snapshot
directory.  Modelled on etcd's ``snap.Snapshotter``.

File layout (little-endian)::

    magic:8 = b"RKVSNAP\\x00"  crc:u32  version:u16  reserved:u16  length:u64  body
    body = raftkv.raft.codec.encode_snapshot(snapshot)

``crc`` is the CRC32C of every byte after it (version, reserved, length, body).

Contracts:
- ``save`` writes a temporary file, fsyncs it, renames it into place and
  fsyncs the directory: a snapshot file is either complete or absent;
- ``load`` returns a snapshot or raises ``SnapshotCorruptionError`` naming the
  path (bad magic, version, length, CRC, body, or a name that disagrees with
  the metadata);
- ``load_newest_available`` only considers snapshots that have a marker in the
  WAL, renames corrupt ones to ``*.broken`` (logged) and tries the next one;
- after each ``save`` the oldest snapshots beyond ``retention`` are deleted;
- private: the directory, when the snapshotter creates it, is 0700 and every snapshot file
  0600 (``raftkv.fileutil``; etcd writes its ``.snap`` files 0666 less the umask, raftkv
  keeps them private with the rest of the data dir).
"""

from __future__ import annotations

import logging
import os
import re
import struct
from collections.abc import Iterable

import crc32c

from raftkv.fileutil import PRIVATE_FILE_MODE, mkdir_all
from raftkv.raft.codec import CodecError, decode_snapshot, encode_snapshot
from raftkv.raft.types import Snapshot
from raftkv.wal.replay import WalSnapshot

log = logging.getLogger("raftkv.snap")

MAGIC = b"RKVSNAP\x00"
VERSION = 1
_HEADER = struct.Struct("<8sIHHQ")  # magic, crc, version, reserved, body length
HEADER_SIZE = _HEADER.size
_CRC_START = 12  # the CRC covers everything from the version field on
SNAP_SUFFIX = ".snap"
TMP_SUFFIX = ".tmp"
BROKEN_SUFFIX = ".broken"
DEFAULT_RETENTION = 5
_NAME_RE = re.compile(r"^([0-9a-f]{16})-([0-9a-f]{16})\.snap$")


class SnapshotError(Exception):
    """Base class of the snapshotter's errors."""


class SnapshotCorruptionError(SnapshotError):
    """A snapshot file cannot be read back intact; ``path`` names it."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"snap: corrupt snapshot file {path}: {reason}")
        self.path = path
        self.reason = reason


def snapshot_name(term: int, index: int) -> str:
    return f"{term:016x}-{index:016x}{SNAP_SUFFIX}"


def parse_snapshot_name(name: str) -> tuple[int, int] | None:
    """``(term, index)`` of a snapshot file name, or None."""
    m = _NAME_RE.match(name)
    if m is None:
        return None
    return int(m.group(1), 16), int(m.group(2), 16)


def encode_snapshot_file(snapshot: Snapshot) -> bytes:
    """The complete bytes of a snapshot file."""
    body = encode_snapshot(snapshot)
    tail = struct.pack("<HHQ", VERSION, 0, len(body))
    crc = crc32c.crc32c(body, crc32c.crc32c(tail))
    return MAGIC + struct.pack("<I", crc) + tail + body


def decode_snapshot_file(path: str, data: bytes) -> Snapshot:
    """Decode a snapshot file's bytes; raises ``SnapshotCorruptionError``."""
    if len(data) < HEADER_SIZE:
        raise SnapshotCorruptionError(path, f"file too short ({len(data)} bytes)")
    magic, crc, version, _reserved, length = _HEADER.unpack_from(data, 0)
    if magic != MAGIC:
        raise SnapshotCorruptionError(path, f"bad magic {magic!r}")
    mv = memoryview(data)
    if crc32c.crc32c(mv[_CRC_START:]) != crc:
        raise SnapshotCorruptionError(path, "crc mismatch")
    if version != VERSION:
        raise SnapshotCorruptionError(path, f"unsupported version {version}")
    if length != len(data) - HEADER_SIZE:
        raise SnapshotCorruptionError(
            path, f"body length {length} disagrees with file size {len(data)}"
        )
    try:
        return decode_snapshot(mv[HEADER_SIZE:])
    except CodecError as exc:
        raise SnapshotCorruptionError(path, f"undecodable body: {exc}") from None


def _fsync_path(path: str, flags: int = os.O_RDONLY) -> None:
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Snapshotter:
    """The snapshot directory of one member."""

    def __init__(self, dirpath: str, *, retention: int = DEFAULT_RETENTION) -> None:
        """``retention`` is how many snapshot files ``save`` keeps (0 = all)."""
        if retention < 0:
            raise ValueError("retention must be >= 0")
        self._dir = os.path.abspath(dirpath)
        self._retention = retention
        mkdir_all(self._dir)
        for name in os.listdir(self._dir):
            if name.endswith(SNAP_SUFFIX + TMP_SUFFIX):
                os.remove(os.path.join(self._dir, name))
                log.warning("snap: removed unfinished snapshot %s", name)

    @property
    def dir(self) -> str:
        return self._dir

    def names(self) -> list[str]:
        """Snapshot file names, newest (highest term, then index) first."""
        found = [n for n in os.listdir(self._dir) if parse_snapshot_name(n) is not None]
        # Fixed-width hex: lexicographic order is (term, index) order.
        return sorted(found, reverse=True)

    def save(self, snapshot: Snapshot) -> str | None:
        """Durably write ``snapshot``; returns its path (None for an empty snapshot)."""
        if snapshot.is_empty():
            return None
        meta = snapshot.metadata
        path = os.path.join(self._dir, snapshot_name(meta.term, meta.index))
        tmp = path + TMP_SUFFIX
        data = encode_snapshot_file(snapshot)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PRIVATE_FILE_MODE)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, path)
        _fsync_path(self._dir, os.O_RDONLY | os.O_DIRECTORY)
        self.purge()
        return path

    def load(self, path: str) -> Snapshot:
        """Read and verify one snapshot file; raises ``SnapshotCorruptionError``."""
        with open(path, "rb") as f:
            data = f.read()
        snap = decode_snapshot_file(path, data)
        parsed = parse_snapshot_name(os.path.basename(path))
        meta = snap.metadata
        if parsed is not None and parsed != (meta.term, meta.index):
            raise SnapshotCorruptionError(
                path, f"file name disagrees with metadata term {meta.term} index {meta.index}"
            )
        return snap

    def load_newest(self) -> Snapshot | None:
        """The newest valid snapshot regardless of the WAL (corrupt ones are skipped)."""
        return self._load_matching(None)

    def load_newest_available(self, walsnaps: Iterable[WalSnapshot]) -> Snapshot | None:
        """The newest valid snapshot that also has a marker in the WAL, or None."""
        wanted = {(ws.term, ws.index) for ws in walsnaps}
        return self._load_matching(wanted)

    def _load_matching(self, wanted: set[tuple[int, int]] | None) -> Snapshot | None:
        for name in self.names():
            parsed = parse_snapshot_name(name)
            if parsed is None or (wanted is not None and parsed not in wanted):
                continue
            path = os.path.join(self._dir, name)
            try:
                return self.load(path)
            except SnapshotCorruptionError as exc:
                broken = path + BROKEN_SUFFIX
                os.rename(path, broken)
                _fsync_path(self._dir, os.O_RDONLY | os.O_DIRECTORY)
                log.error("snap: %s; renamed to %s", exc, broken)
        return None

    def purge(self) -> list[str]:
        """Delete the snapshot files older than the newest ``retention``; returns them."""
        if self._retention == 0:
            return []
        removed = [os.path.join(self._dir, n) for n in self.names()[self._retention :]]
        for path in removed:
            os.remove(path)
            log.info("snap: purged %s", path)
        if removed:
            _fsync_path(self._dir, os.O_RDONLY | os.O_DIRECTORY)
        return removed
