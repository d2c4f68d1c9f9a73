"""Segment files of the WAL: names, listing, preallocation and durable renames.

Owns: the ``%016x-%016x.wal`` naming (sequence, first raft index the segment
may hold), the check that sequences are contiguous, and the small fsync
helpers every durable file operation goes through.

Contracts:
- a segment named with index ``i`` holds no entry older than ``i`` that is
  still live, so replay from a snapshot at index ``s`` may start at the last
  segment whose index is ``<= s``;
- new files become visible only through ``rename`` of a fully written and
  fsynced temporary file, followed by an fsync of the directory.
"""

from __future__ import annotations

import errno
import itertools
import os
import re
from dataclasses import dataclass

from raftkv.wal.errors import WALCorruptionError

SEGMENT_SUFFIX = ".wal"
TMP_SUFFIX = ".tmp"
BROKEN_SUFFIX = ".broken"
_SEGMENT_RE = re.compile(r"^([0-9a-f]{16})-([0-9a-f]{16})\.wal$")


@dataclass(frozen=True, slots=True)
class Segment:
    seq: int
    index: int
    path: str


def segment_name(seq: int, index: int) -> str:
    return f"{seq:016x}-{index:016x}{SEGMENT_SUFFIX}"


def parse_segment_name(name: str) -> tuple[int, int] | None:
    m = _SEGMENT_RE.match(name)
    if m is None:
        return None
    return int(m.group(1), 16), int(m.group(2), 16)


def list_segments(dirpath: str) -> list[Segment]:
    """The directory's segments in sequence order; raises on a sequence gap.

    Returns an empty list when the directory does not exist.
    """
    try:
        names = os.listdir(dirpath)
    except FileNotFoundError:
        return []
    segments: list[Segment] = []
    for name in names:
        parsed = parse_segment_name(name)
        if parsed is not None:
            segments.append(Segment(parsed[0], parsed[1], os.path.join(dirpath, name)))
    segments.sort(key=lambda s: s.seq)
    for prev, cur in itertools.pairwise(segments):
        if cur.seq != prev.seq + 1:
            raise WALCorruptionError(
                cur.path, None, f"segment sequence gap: {prev.seq:#x} is followed by {cur.seq:#x}"
            )
        if cur.index < prev.index:
            raise WALCorruptionError(
                cur.path, None, f"segment index {cur.index} is below its predecessor's {prev.index}"
            )
    return segments


def search_index(segments: list[Segment], index: int) -> int | None:
    """Position of the last segment whose first index is ``<= index``, or None."""
    for pos in range(len(segments) - 1, -1, -1):
        if segments[pos].index <= index:
            return pos
    return None


def fsync_dir(dirpath: str) -> None:
    fd = os.open(dirpath, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def preallocate(fd: int, size: int) -> None:
    """Make the file at least ``size`` bytes long, zero-filled, blocks reserved
    when the filesystem supports it."""
    if os.fstat(fd).st_size >= size:
        return
    try:
        os.posix_fallocate(fd, 0, size)
    except OSError as exc:
        if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
            raise
        os.ftruncate(fd, size)


def write_all(fd: int, data: bytes | bytearray | memoryview, offset: int) -> None:
    """Write every byte of ``data`` at ``offset`` (pwrite may write less than asked)."""
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view = view[written:]
        offset += written


def read_file(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def remove_stale_temporaries(dirpath: str) -> list[str]:
    """Delete ``*.wal.tmp`` files left by a crash during segment creation."""
    removed: list[str] = []
    for name in os.listdir(dirpath):
        if name.endswith(SEGMENT_SUFFIX + TMP_SUFFIX):
            path = os.path.join(dirpath, name)
            os.remove(path)
            removed.append(path)
    return removed
