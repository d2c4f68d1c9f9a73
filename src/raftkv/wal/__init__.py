"""Write-ahead log: segmented, preallocated files of CRC32C-chained records.

Owns: the durable Raft log of one member (entries, hard state, snapshot
markers).  Public API: ``WAL``, ``WalSnapshot``, ``valid_snapshot_entries``,
``encode_metadata``/``decode_metadata`` and the errors.
"""

from __future__ import annotations

from raftkv.wal.errors import (
    WALClosedError,
    WALCorruptionError,
    WALError,
    WALExistsError,
    WALGapError,
    WALLockedError,
    WALNotFoundError,
    WALSnapshotMismatchError,
    WALSnapshotNotFoundError,
)
from raftkv.wal.metadata import decode_metadata, encode_metadata
from raftkv.wal.replay import WalSnapshot
from raftkv.wal.wal import DEFAULT_SEGMENT_SIZE, WAL, valid_snapshot_entries

__all__ = [
    "DEFAULT_SEGMENT_SIZE",
    "WAL",
    "WALClosedError",
    "WALCorruptionError",
    "WALError",
    "WALExistsError",
    "WALGapError",
    "WALLockedError",
    "WALNotFoundError",
    "WALSnapshotMismatchError",
    "WALSnapshotNotFoundError",
    "WalSnapshot",
    "decode_metadata",
    "encode_metadata",
    "valid_snapshot_entries",
]
