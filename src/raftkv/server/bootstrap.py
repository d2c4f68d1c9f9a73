"""Opening a member's data directory: a new cluster member, or a restart.

Owns: the recovery of the Raft side (snapshot file + WAL) into a ``MemoryStorage`` and a
``RawNode`` configuration; the layout is ``raftkv.server.data_dir``'s.

Private, as etcd 3.5's (``raftkv.fileutil``): the data, member and snapshot directories are
created 0700 (etcd's ``TouchDirAll``), and everything under them 0600 by the parts that create
it.  An existing directory with another permission is left as it is, with etcd's warning
(``check file permission: directory "<dir>" exist, but the permission is "drwxr-xr-x". The
recommended permission is "-rwx------" to prevent possible unprivileged access to the data``);
one that cannot be created or written to stops the member (``BootstrapError``: ``cannot access
data directory: ...``).

Bootstrap contract: every initial member computes the same member IDs, the same cluster ID and
the same bootstrap snapshot (index 1, term 1, all initial members voters, the member list as
its data) from the flags alone, so they agree without talking.  The snapshot file and the WAL
are durable before the member serves anything; the member list is written to the backend by
the caller at consistent index 1.

Joining (``--initial-cluster-state existing``): the member was added with ``member add`` first;
``join_existing`` asks the running members (over their peer URLs) for the member list, finds
this member by its peer URLs, and the new WAL records the cluster's IDs.  The member starts
with an empty log and no configuration: the leader sends it a snapshot (its backend) and the
log after it.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass

from raftkv.fileutil import touch_dir_all
from raftkv.raft.storage import MemoryStorage
from raftkv.raft.types import ConfState, Entry, HardState, Snapshot, SnapshotMetadata
from raftkv.server.config import ServerConfig
from raftkv.server.data_dir import DataDir
from raftkv.server.ids import cluster_id as make_cluster_id
from raftkv.server.ids import member_id as make_member_id
from raftkv.snap import Snapshotter
from raftkv.wal import WAL, WalSnapshot, decode_metadata, encode_metadata, valid_snapshot_entries

log = logging.getLogger("raftkv.bootstrap")


class BootstrapError(RuntimeError):
    """The data directory cannot be used as configured; the message says why."""


class NotAMemberError(BootstrapError):
    """The running cluster's member list (as one member knows it) lacks this member."""


@dataclass(frozen=True)
class MemberInfo:
    """One member of the cluster as the member list stores it."""

    id: int
    name: str
    peer_urls: tuple[str, ...]
    client_urls: tuple[str, ...] = ()
    is_learner: bool = False
    version: str = ""  # the raftkv server version the member last published ("": unknown)

    def to_json(self) -> dict[str, object]:
        obj: dict[str, object] = {
            "id": self.id,
            "name": self.name,
            "peerURLs": list(self.peer_urls),
            "clientURLs": list(self.client_urls),
            "isLearner": self.is_learner,
        }
        if self.version:
            obj["raftkvVersion"] = self.version
        return obj

    @classmethod
    def from_json(cls, obj: dict[str, object]) -> MemberInfo:
        return cls(
            id=int(obj["id"]),  # type: ignore[call-overload]
            name=str(obj["name"]),
            peer_urls=tuple(obj["peerURLs"]),  # type: ignore[arg-type]
            client_urls=tuple(obj.get("clientURLs") or ()),  # type: ignore[arg-type]
            is_learner=bool(obj.get("isLearner", False)),
            version=str(obj.get("raftkvVersion") or ""),
        )


def encode_members(members: list[MemberInfo]) -> bytes:
    return json.dumps([m.to_json() for m in sorted(members, key=lambda m: m.id)]).encode()


def decode_members(data: bytes) -> list[MemberInfo]:
    return [MemberInfo.from_json(obj) for obj in json.loads(data.decode())] if data else []


@dataclass
class RaftRecovery:
    """What the Raft side of a member starts from."""

    member_id: int
    cluster_id: int
    wal: WAL
    snapshotter: Snapshotter
    storage: MemoryStorage
    snapshot: Snapshot
    hard_state: HardState
    entries: list[Entry]
    new_cluster: bool
    initial_members: list[MemberInfo]  # a new cluster's; a joining member's first peers

    @property
    def conf_state(self) -> ConfState:
        return self.snapshot.metadata.conf_state


def touch_dirs(dd: DataDir) -> None:
    """etcd's ``TouchDirAll`` of the data, member and snapshot directories, with its messages:
    each is created 0700 when missing, warned about when it exists with another permission,
    and must be writable (``BootstrapError`` otherwise)."""
    for path, failure in (
        (dd.root, "cannot access data directory"),
        (dd.member, "cannot access member directory"),
        (dd.snap, f"failed to create snapshot directory {dd.snap}"),
    ):
        try:
            touch_dir_all(path, log)
        except OSError as exc:
            raise BootstrapError(f"{failure}: {exc}") from None


def initial_members(cfg: ServerConfig) -> list[MemberInfo]:
    # Client URLs are not known for the other members; every member must write the same list
    # at index 1, so none has them yet: each member publishes its own through Raft.
    members = []
    for name, urls in cfg.initial_cluster_map().items():
        mid = make_member_id(urls, cfg.initial_cluster_token)
        members.append(MemberInfo(mid, name, tuple(sorted(urls))))
    ids = [m.id for m in members]
    if len(set(ids)) != len(ids):
        raise BootstrapError("--initial-cluster: two members share the same peer URLs")
    return members


@dataclass(frozen=True)
class ExistingCluster:
    """What a joining member learnt from the running cluster."""

    cluster_id: int
    member_id: int
    members: tuple[MemberInfo, ...] = ()  # the running members: this member's first peers


def open_raft_side(cfg: ServerConfig, existing: ExistingCluster | None = None) -> RaftRecovery:
    """The Raft side of this member: restarted from its WAL, or created (a new cluster's
    bootstrap; or, with ``existing``, an empty log to join a running cluster with)."""
    dd = DataDir(cfg.resolved_data_dir, cfg.wal_dir)
    touch_dirs(dd)
    snapshotter = Snapshotter(dd.snap)
    if dd.has_wal():
        return _restart(dd, snapshotter)
    if cfg.initial_cluster_state != "new":
        if existing is None:
            raise BootstrapError(
                "--initial-cluster-state existing: the running cluster was not asked"
            )
        return _join(existing, dd, snapshotter)
    return _bootstrap_new(cfg, dd, snapshotter)


def _join(existing: ExistingCluster, dd: DataDir, snapshotter: Snapshotter) -> RaftRecovery:
    wal = WAL.create(dd.wal, encode_metadata(existing.member_id, existing.cluster_id))
    storage = MemoryStorage()
    hard_state = HardState()
    return RaftRecovery(
        existing.member_id,
        existing.cluster_id,
        wal,
        snapshotter,
        storage,
        Snapshot(),
        hard_state,
        [],
        False,
        list(existing.members),
    )


def find_joining_member(cfg: ServerConfig, members: list[MemberInfo], removed: set[int]) -> int:
    """This member's ID in the running cluster's member list: the member whose peer URLs are
    this member's advertised ones (``BootstrapError`` with the remedy otherwise)."""
    mine = sorted(cfg.initial_advertise_peer_urls)
    for info in members:
        if sorted(info.peer_urls) == mine:
            if info.id in removed:
                raise BootstrapError(
                    f"member {info.id:x}: the member has been permanently removed from the cluster"
                )
            return info.id
    raise NotAMemberError(
        f"--initial-cluster-state existing: no member of the running cluster has the peer "
        f"URLs {','.join(mine)}; add it first: raftkv member add {cfg.name} "
        f"--peer-urls={','.join(mine)}"
    )


def _bootstrap_new(cfg: ServerConfig, dd: DataDir, snapshotter: Snapshotter) -> RaftRecovery:
    members = initial_members(cfg)
    me = next(m for m in members if m.name == cfg.name)
    cid = make_cluster_id(m.id for m in members)
    voters = tuple(sorted(m.id for m in members))
    snap = Snapshot(
        SnapshotMetadata(index=1, term=1, conf_state=ConfState(voters=voters)),
        encode_members(members),
    )
    snapshotter.save(snap)
    wal = WAL.create(dd.wal, encode_metadata(me.id, cid))
    wal.save_snapshot(WalSnapshot(1, 1, snap.metadata.conf_state))
    # The bootstrap snapshot is committed by definition; raft requires commit >= snapshot index.
    hard_state = HardState(term=1, vote=0, commit=1)
    wal.save(hard_state, [])
    storage = MemoryStorage()
    storage.apply_snapshot(snap)
    storage.set_hard_state(hard_state)
    return RaftRecovery(me.id, cid, wal, snapshotter, storage, snap, hard_state, [], True, members)


def _restart(dd: DataDir, snapshotter: Snapshotter) -> RaftRecovery:
    walsnaps = valid_snapshot_entries(dd.wal)
    snap = snapshotter.load_newest_available(walsnaps)
    if snap is None and walsnaps and all(ws.index == 0 for ws in walsnaps):
        # A member that joined and has no committed snapshot yet.  A snapshot file may be
        # there, received while the hard state committing it was not yet durable: as etcd,
        # a snapshot without a committed marker is not used (the leader sends it again).
        snap = Snapshot()
    if snap is None:
        raise BootstrapError(f"no usable raft snapshot in {dd.snap} matches the WAL in {dd.wal}")
    md = snap.metadata
    wal = WAL.open(dd.wal, WalSnapshot(md.index, md.term, md.conf_state))
    try:
        metadata, hard_state, entries = wal.read_all()
        ids = decode_metadata(metadata)
        if ids is None:
            raise BootstrapError(f"the WAL in {dd.wal} has no member metadata")
        storage = MemoryStorage()
        if md.index:  # index 0: nothing to install (MemoryStorage starts there)
            storage.apply_snapshot(snap)
        storage.set_hard_state(hard_state)
        storage.append(entries)
    except BaseException:
        wal.close()  # release the WAL's lock: the caller may try again in this process
        raise
    return RaftRecovery(
        ids[0], ids[1], wal, snapshotter, storage, snap, hard_state, entries, False, []
    )
