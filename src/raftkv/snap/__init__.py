"""Raft snapshot files of one member (``Snapshotter``) and their errors."""

from __future__ import annotations

from raftkv.snap.snapshotter import (
    DEFAULT_RETENTION,
    SnapshotCorruptionError,
    SnapshotError,
    Snapshotter,
    decode_snapshot_file,
    encode_snapshot_file,
    parse_snapshot_name,
    snapshot_name,
)

__all__ = [
    "DEFAULT_RETENTION",
    "SnapshotCorruptionError",
    "SnapshotError",
    "Snapshotter",
    "decode_snapshot_file",
    "encode_snapshot_file",
    "parse_snapshot_name",
    "snapshot_name",
]
