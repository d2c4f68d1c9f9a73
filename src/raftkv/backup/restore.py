"""Restore: a member's data directory for a new cluster, built from a snapshot file.

Owns ``restore_snapshot`` (``raftkv snapshot restore``, etcdutl's flags): it accepts raftkv's
snapshots and real etcd's (both are etcd-format bbolt files) and builds, for the member named
``--name`` of ``--initial-cluster``, the same data directory a new cluster's member starts
from, with the snapshot's keys, revisions, versions, leases and compaction in its backend.

Steps, all inside a temporary directory beside the target that is renamed into place only at
the end (a failed restore leaves nothing behind, never a half-restored data dir):

1. the SHA-256 trailer is checked (unless ``--skip-hash-check``) and the bbolt structure
   walked (``open_snapshot``);
2. keys, leases and compaction are imported into a new LMDB backend (``import_snapshot``);
   members and alarms of the old cluster are dropped, as they name members this cluster does
   not have; auth (the enabled flag, the auth revision, users and roles) is kept;
3. the imported state is hashed (revision, compacted revision, etcd's HashKV of the keys, the
   leases) and, for a raftkv snapshot, compared with the state hash the snapshot recorded:
   a difference refuses the restore;
4. the Raft side is written as a new cluster's member writes it (bootstrap snapshot at index
   1 listing the new members, WAL) and the member list is applied at index 1.  The apply
   digest chain starts from a digest of the imported state instead of the genesis value, so
   members restored from different snapshots diverge at index 1 and the guard names them;
   a copy of the backend at index 1 is kept as ``member/snap/<1>-<1>.snap.db``, the base
   ``raftkv check data`` rebuilds this member from;
5. everything is fsynced, the WAL directory (``--wal-dir``, when given) and then the data
   directory renamed into place and their parents fsynced.

The result is private, as a member keeps its data dir (``raftkv.fileutil``): the data and WAL
directories (``tempfile.mkdtemp``'s 0700, kept by the rename), every directory under them and
every missing parent created 0700, every file 0600.

Member and cluster IDs come from ``--initial-cluster`` and ``--initial-cluster-token`` as at
bootstrap, so every member restored with the same flags agrees without talking.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass

from raftkv.backup.bbolt import BoltReader
from raftkv.backup.etcd_schema import ImportSummary, import_snapshot
from raftkv.backup.snapshot_file import open_snapshot
from raftkv.fileutil import mkdir_all
from raftkv.guard.state_hash import StateHash
from raftkv.lease.lessor import min_lease_ttl
from raftkv.mvcc.backend import (
    BUCKET_META,
    DEFAULT_MAP_SIZE,
    META_SCHEDULED_COMPACT,
    Backend,
    BackendConfig,
)
from raftkv.mvcc.revision import pack, rev_to_bytes
from raftkv.server.applier import Applier
from raftkv.server.bootstrap import open_raft_side
from raftkv.server.config import ServerConfig, build_config
from raftkv.server.data_dir import DataDir
from raftkv.wal.files import fsync_dir

_PERSON_RESTORE = b"raftkv/restore"
_COMPARED_PARTS = ("revision", "compact_revision", "keys", "leases")


class RestoreError(Exception):
    """The snapshot cannot be restored as asked; the message says why."""


@dataclass(frozen=True)
class RestoreOptions:
    """etcdutl ``snapshot restore``'s flags (defaults as ``raftkv serve``'s)."""

    snapshot: str
    name: str = "default"
    data_dir: str = ""  # default: <name>.raftkv, as `raftkv serve`
    wal_dir: str = ""  # default: <data-dir>/member/wal; else a dedicated WAL directory
    initial_cluster: str = ""  # default: <name>=<initial advertise peer URLs>
    initial_cluster_token: str = "etcd-cluster"
    initial_advertise_peer_urls: tuple[str, ...] = ("http://127.0.0.1:2380",)
    skip_hash_check: bool = False
    # etcdutl's --bump-revision with --mark-compacted: the restored store's revision moves
    # this far past the snapshot's latest, and everything up to there counts as compacted, so
    # clients watching from an older revision are told to start over (Kubernetes' restores).
    bump_revision: int = 0


@dataclass(frozen=True)
class RestoreResult:
    data_dir: str
    member_id: int
    cluster_id: int
    imported: ImportSummary
    state: StateHash  # of the restored member at index 1 (new members included)
    verified: bool  # the imported state equals the state hash the snapshot recorded


def restore_snapshot(
    opts: RestoreOptions, log: Callable[[str], None] = lambda _m: None
) -> RestoreResult:
    """Restore ``opts.snapshot`` into a new data directory (see the module docstring)."""
    raw: dict[str, object] = {
        "name": opts.name,
        "initial-cluster-token": opts.initial_cluster_token,
        "initial-advertise-peer-urls": ",".join(opts.initial_advertise_peer_urls),
    }
    if opts.initial_cluster:
        raw["initial-cluster"] = opts.initial_cluster
    cfg = build_config(raw)  # ConfigError names the bad flag
    target = os.path.abspath(opts.data_dir or cfg.resolved_data_dir)
    if os.path.exists(target) and (not os.path.isdir(target) or os.listdir(target)):
        raise RestoreError(f"data-dir {json.dumps(target)} not empty or could not be read")
    wal_target = os.path.abspath(opts.wal_dir) if opts.wal_dir else ""
    if wal_target and os.path.exists(wal_target):
        raise RestoreError(f"wal-dir {json.dumps(wal_target)} exists")
    parent = os.path.dirname(target)
    mkdir_all(parent)
    if wal_target:
        mkdir_all(os.path.dirname(wal_target))
    log(f"restoring snapshot {opts.snapshot} into {target}")
    with open_snapshot(opts.snapshot, opts.skip_hash_check) as reader:
        size = reader.size
        tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(target)}.restore-", dir=parent)
        tmp_wal = (
            tempfile.mkdtemp(
                prefix=f".{os.path.basename(wal_target)}.restore-",
                dir=os.path.dirname(wal_target),
            )
            if wal_target
            else ""
        )
        try:
            cfg = dataclasses.replace(cfg, data_dir=tmp, wal_dir=tmp_wal)
            result = _build(reader, cfg, size, opts.bump_revision, log)
            _fsync_tree(tmp)
            if tmp_wal:  # the WAL first: a data dir in place always has its WAL
                _fsync_tree(tmp_wal)
                os.rename(tmp_wal, wal_target)
                tmp_wal = wal_target  # removed too if the data dir cannot be put in place
                fsync_dir(os.path.dirname(wal_target))
            if os.path.isdir(target):
                os.rmdir(target)  # empty, checked above
            os.rename(tmp, target)
            fsync_dir(parent)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            if tmp_wal:
                shutil.rmtree(tmp_wal, ignore_errors=True)
            raise
    log(f"restored snapshot {opts.snapshot} into {target}")
    return dataclasses.replace(result, data_dir=target)


def _build(
    reader: BoltReader,
    cfg: ServerConfig,
    db_size: int,
    bump_revision: int,
    log: Callable[[str], None],
) -> RestoreResult:
    dd = DataDir(cfg.resolved_data_dir)
    map_size = max(DEFAULT_MAP_SIZE, 4 * db_size)
    backend = Backend(dd.db, BackendConfig(map_size=map_size, sync_mode="nosync"))
    try:
        summary = import_snapshot(reader, backend.write)
        backend.force_commit()
    finally:
        backend.close()
    log(
        f"imported {summary.revisions} revisions up to {summary.latest_revision} and "
        f"{summary.leases} leases"
    )
    ticks = cfg.election_timeout_ms // cfg.heartbeat_interval_ms
    ttl = min_lease_ttl(ticks, cfg.heartbeat_interval_ms)
    applier = Applier.detached(cfg.resolved_data_dir, BackendConfig(map_size=map_size), ttl)
    try:
        imported = applier.state_hash_deferred()()
        verified = _verify(summary.recorded_state_hash, imported)
        if bump_revision:
            applier = _bump(applier, imported.revision + bump_revision, map_size, ttl, log)
            imported = applier.state_hash_deferred()()
        seed = hashlib.blake2b(imported.value, digest_size=16, person=_PERSON_RESTORE).digest()
        applier.digest.reset(0, seed)
        rec = open_raft_side(cfg)
        rec.wal.close()
        applier.write_initial_members(rec.initial_members)
        # The state at index 1 is not the empty one a new member starts from: keep a copy
        # where `raftkv check data` finds its rebuild base (a backend copy at index 1).
        base = dd.received_backend_path(1, 1)
        applier.copy_backend(base)
        state = applier.state_hash_deferred()()
    finally:
        applier.close()
    return RestoreResult(
        data_dir=cfg.resolved_data_dir,
        member_id=rec.member_id,
        cluster_id=rec.cluster_id,
        imported=summary,
        state=state,
        verified=verified,
    )


def _bump(
    applier: Applier, revision: int, map_size: int, ttl: int, log: Callable[[str], None]
) -> Applier:
    """Schedule a compaction at ``revision`` (past every record), reopen the store so its
    revision is ``revision``, and run the compaction to its end; returns the new applier."""
    root = applier.data_dir.root
    applier.close()
    backend = Backend(DataDir(root).db, BackendConfig(map_size=map_size))
    try:
        backend.put(BUCKET_META, META_SCHEDULED_COMPACT, rev_to_bytes(pack(revision)))
    finally:
        backend.close()
    log(f"bumped the revision to {revision} and marked it compacted")
    applier = Applier.detached(root, BackendConfig(map_size=map_size), ttl)
    while not applier.compact_some():
        pass
    return applier


def _verify(recorded: StateHash | None, imported: StateHash) -> bool:
    """Compare the imported state with the one the snapshot recorded (raftkv snapshots)."""
    if recorded is None:
        return False
    differ = [p for p in _COMPARED_PARTS if getattr(recorded, p) != getattr(imported, p)]
    if differ:
        detail = ", ".join(
            f"{p} {_show(getattr(recorded, p))} recorded, {_show(getattr(imported, p))} restored"
            for p in differ
        )
        raise RestoreError(f"the restored state differs from the snapshot's state hash: {detail}")
    return True


def _show(value: object) -> str:
    return value.hex() if isinstance(value, bytes) else str(value)


def _fsync_tree(root: str) -> None:
    """fsync every file and directory under ``root`` (deepest first), then ``root``."""
    for dirpath, _dirs, files in os.walk(root, topdown=False):
        for name in files:
            fd = os.open(os.path.join(dirpath, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fsync_dir(dirpath)
