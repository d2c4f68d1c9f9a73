"""Errors raised by the write-ahead log.

Owns: the WAL's error hierarchy.  ``WALCorruptionError`` is the one error a
decoder raises for bytes it cannot accept; it always names the file and the
byte offset of the first bad record so an operator can inspect it (for example
with ``python -m raftkv.wal dump``).
"""

from __future__ import annotations


class WALError(Exception):
    """Base class of every WAL error."""


class WALCorruptionError(WALError):
    """Data that was durably written can no longer be read back intact.

    ``path`` is the segment file, ``offset`` the byte offset of the first bad
    record in it (``None`` only when the problem is not tied to one record,
    such as a missing segment in the sequence).
    """

    def __init__(self, path: str, offset: int | None, reason: str) -> None:
        where = path if offset is None else f"{path} at offset {offset}"
        super().__init__(f"wal: corrupt segment {where}: {reason}")
        self.path = path
        self.offset = offset
        self.reason = reason


class WALExistsError(WALError):
    """``WAL.create`` was asked to create a WAL where one already exists."""


class WALNotFoundError(WALError):
    """No WAL segment exists (or none covers the requested snapshot index)."""


class WALLockedError(WALError):
    """Another process (or another WAL object) holds the WAL directory lock."""


class WALSnapshotNotFoundError(WALError):
    """The WAL holds no snapshot marker for the snapshot it was opened at."""


class WALSnapshotMismatchError(WALError):
    """The WAL's snapshot marker at the requested index has a different term."""


class WALClosedError(WALError):
    """The WAL was closed, or failed on an earlier write and must be reopened."""


class WALGapError(WALError):
    """Replay from an older snapshot reached entries that follow a newer
    snapshot marker with no entries in between: the newer snapshot is needed."""
