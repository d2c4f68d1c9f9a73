"""The layout of a member's data directory (etcd's, with LMDB in place of bbolt), with no import
that has side effects: configuration checks read it before anything else of the server is
loaded (loading ``raftkv.failpoints`` parses ``RAFTKV_FAILPOINTS``).

    <data-dir>/member/wal/    WAL segments (or --wal-dir)
    <data-dir>/member/snap/   raft snapshot files and backend files (*.snap.db: received, or
                              a restore's; the last installed is ``raftkv check data``'s base)
    <data-dir>/member/db/     the LMDB environment (data.mdb)
"""

from __future__ import annotations

import os

from raftkv.peer.snapshot import parse_snapshot_db_name, snapshot_db_name


class DataDir:
    """The paths of a member's data directory; ``wal_dir`` (etcd's ``--wal-dir``) keeps the
    WAL on another disk instead of ``member/wal``."""

    def __init__(self, root: str, wal_dir: str = "") -> None:
        self.root = root
        self.member = os.path.join(root, "member")
        self.wal = wal_dir or os.path.join(self.member, "wal")
        self.snap = os.path.join(self.member, "snap")
        self.db = os.path.join(self.member, "db")

    def has_wal(self) -> bool:
        return os.path.isdir(self.wal) and any(n.endswith(".wal") for n in os.listdir(self.wal))

    def received_backend_path(self, index: int, term: int) -> str:
        """Where the backend file of the snapshot at (index, term) is kept."""
        return os.path.join(self.snap, snapshot_db_name(index, term))

    def received_backend(self, index: int, term: int) -> str | None:
        """A backend file received with the snapshot at (index, term), if it is there."""
        path = self.received_backend_path(index, term)
        return path if os.path.exists(path) else None

    def received_backends(self) -> list[tuple[int, str]]:
        """(snapshot index, path) of every backend file kept in the snapshot directory (the
        received ones, and the copy a restore writes at index 1), lowest index first."""
        try:
            names = os.listdir(self.snap)
        except FileNotFoundError:
            return []
        found = []
        for name in names:
            parsed = parse_snapshot_db_name(name)
            if parsed is not None:
                found.append((parsed[0], os.path.join(self.snap, name)))
        return sorted(found)
