"""Backups and restores: etcd-format (bbolt) snapshots, restore, the backup agent.

Layers inside the package: ``bbolt``, ``etcd_schema`` and ``snapshot_file`` are file formats
(they import ``mvcc``, ``lease`` and ``guard``'s hashes, never ``server``), so the member's
``Maintenance.Snapshot`` uses them; ``restore`` drives the member's own applier and bootstrap
(``server``) and is used only by the command line and tools above it.
"""
