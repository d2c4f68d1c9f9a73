"""The replicated cluster record: members, removed member IDs, the cluster version and the
downgrade state (etcd's ``RaftCluster``), as applied from committed entries.

Owns: the ``members`` and ``cluster`` buckets of the backend and the apply-time rules of
membership changes.  Every change goes into the current apply batch's transaction and into the
apply digest, so members that applied the same entries hold byte-identical records.

Contracts:
- ``validate_change`` is etcd's ``ValidateConfigurationChange``: the same answer on every
  member for the same entry (it reads only replicated state); a change it refuses is applied
  to Raft as a no-op and its index is recorded (``rejected``), so a restart that replays the
  entry into the Raft core without applying it again (it is at or below the consistent index)
  knows to skip it;
- a removed member's ID is kept forever: it can never be added again;
- ``cluster_version`` is None until the leader first sets it (a data dir written by raftkv 0.1).
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

from raftkv import errors
from raftkv.guard.digest import EffectRecorder
from raftkv.mvcc.backend import BUCKET_CLUSTER, BUCKET_MEMBERS, CLUSTER_REMOVED_PREFIX, Backend
from raftkv.raft.types import ConfChange, ConfChangeType
from raftkv.server.bootstrap import MemberInfo, encode_members
from raftkv.version import Version

_U64 = struct.Struct(">Q")
K_CLUSTER_VERSION = b"clusterVersion"
K_DOWNGRADE = b"downgrade"
_REMOVED = CLUSTER_REMOVED_PREFIX
_REJECTED = b"rejectedConfChange/"

DEFAULT_MAX_LEARNERS = 1
"""etcd's ``--max-learners`` default."""


@dataclass(frozen=True)
class DowngradeInfo:
    """An enabled downgrade: the cluster version is held at ``target``."""

    target: Version

    def encode(self) -> bytes:
        return json.dumps({"target-version": self.target.short(), "enabled": True}).encode()

    @classmethod
    def decode(cls, data: bytes) -> DowngradeInfo:
        return cls(Version.parse(json.loads(data.decode())["target-version"]))


@dataclass(frozen=True)
class MemberChange:
    """The context of a conf change entry: the member it is about and whether it promotes."""

    member: MemberInfo
    promote: bool = False

    def encode(self) -> bytes:
        return json.dumps({"member": self.member.to_json(), "promote": self.promote}).encode()

    @classmethod
    def decode(cls, data: bytes) -> MemberChange:
        obj = json.loads(data.decode())
        if "member" not in obj:  # raftkv 0.1: the context was the member record itself
            return cls(MemberInfo.from_json(obj))
        return cls(MemberInfo.from_json(obj["member"]), bool(obj.get("promote", False)))


class ClusterInfo:
    """The cluster record of one member's backend (reload with ``load`` after a swap)."""

    def __init__(self, backend: Backend) -> None:
        self.members: dict[int, MemberInfo] = {}
        self.removed: frozenset[int] = frozenset()
        self.rejected: frozenset[int] = frozenset()
        self.cluster_version: Version | None = None
        self.downgrade: DowngradeInfo | None = None
        self.load(backend)

    def load(self, backend: Backend) -> None:
        self.members = {
            info.id: info
            for info in (
                MemberInfo.from_json(_json_obj(v)) for _k, v in backend.items(BUCKET_MEMBERS)
            )
        }
        removed, rejected = set(), set()
        self.cluster_version = self.downgrade = None
        for key, value in backend.items(BUCKET_CLUSTER):
            if key.startswith(_REMOVED):
                removed.add(_U64.unpack(key[len(_REMOVED) :])[0])
            elif key.startswith(_REJECTED):
                rejected.add(_U64.unpack(key[len(_REJECTED) :])[0])
            elif key == K_CLUSTER_VERSION:
                self.cluster_version = Version.parse(value.decode())
            elif key == K_DOWNGRADE:
                self.downgrade = DowngradeInfo.decode(value)
        self.removed, self.rejected = frozenset(removed), frozenset(rejected)

    # -- reading ----------------------------------------------------------------------------

    def voters(self) -> list[MemberInfo]:
        return [m for m in self.members.values() if not m.is_learner]

    def records(self) -> list[tuple[bytes, bytes]]:
        """The ``cluster`` bucket's records as stored (for the state hash), sorted by key."""
        out = [(_REMOVED + _U64.pack(i), b"") for i in self.removed]
        out += [(_REJECTED + _U64.pack(i), b"") for i in self.rejected]
        if self.cluster_version is not None:
            out.append((K_CLUSTER_VERSION, self.cluster_version.short().encode()))
        if self.downgrade is not None:
            out.append((K_DOWNGRADE, self.downgrade.encode()))
        return sorted(out)

    def is_removed(self, member_id: int) -> bool:
        return member_id in self.removed

    # -- validating -------------------------------------------------------------------------

    def validate_change(
        self, cc: ConfChange, change: MemberChange | None, max_learners: int
    ) -> errors.EtcdError | None:
        """etcd's error for a conf change that must not take effect; None when it may."""
        mid = cc.node_id
        if mid in self.removed:
            return errors.ERR_MEMBER_NOT_FOUND()
        current = self.members.get(mid)
        if cc.type in (ConfChangeType.ADD_NODE, ConfChangeType.ADD_LEARNER_NODE):
            if change is not None and change.promote:
                if current is None:
                    return errors.ERR_MEMBER_NOT_FOUND()
                if not current.is_learner:
                    return errors.ERR_MEMBER_NOT_LEARNER()
                return None
            if current is not None:
                return errors.ERR_MEMBER_EXIST()
            if change is not None and self._urls_taken(change.member.peer_urls, exclude=0):
                return errors.ERR_PEER_URL_EXIST()
            if cc.type == ConfChangeType.ADD_LEARNER_NODE:
                learners = sum(1 for m in self.members.values() if m.is_learner)
                if learners + 1 > max_learners:
                    return errors.ERR_TOO_MANY_LEARNERS()
            return None
        if current is None:
            return errors.ERR_MEMBER_NOT_FOUND()
        if (
            cc.type == ConfChangeType.UPDATE_NODE
            and change is not None
            and self._urls_taken(change.member.peer_urls, exclude=mid)
        ):
            return errors.ERR_PEER_URL_EXIST()
        return None

    def _urls_taken(self, urls: Iterable[str], exclude: int) -> bool:
        taken = {u for m in self.members.values() if m.id != exclude for u in m.peer_urls}
        return any(u in taken for u in urls)

    # -- applying (inside an apply batch; ``tx`` is its write transaction) -----------------

    def apply_change(
        self, tx: Any, rec: EffectRecorder, cc: ConfChange, change: MemberChange | None
    ) -> None:
        """A validated conf change takes effect on the member list."""
        mid = cc.node_id
        if cc.type == ConfChangeType.REMOVE_NODE:
            self.members = {k: v for k, v in self.members.items() if k != mid}
            tx.delete(BUCKET_MEMBERS, _U64.pack(mid))
            rec.member_remove(mid)
            self._put_cluster(tx, rec, _REMOVED + _U64.pack(mid), b"")
            self.removed = self.removed | {mid}
            return
        if change is None:
            return
        current = self.members.get(mid)
        if change.promote and current is not None:
            self.put_member(tx, rec, replace(current, is_learner=False))
        elif cc.type == ConfChangeType.UPDATE_NODE and current is not None:
            self.put_member(tx, rec, replace(current, peer_urls=change.member.peer_urls))
        else:
            learner = cc.type == ConfChangeType.ADD_LEARNER_NODE
            self.put_member(tx, rec, replace(change.member, id=mid, is_learner=learner))

    def reject_change(self, tx: Any, rec: EffectRecorder, index: int) -> None:
        """Record that the conf change at ``index`` was refused (applied to Raft as a no-op)."""
        self._put_cluster(tx, rec, _REJECTED + _U64.pack(index), b"")
        self.rejected = self.rejected | {index}

    def put_member(self, tx: Any, rec: EffectRecorder, info: MemberInfo) -> None:
        record = encode_members([info])[1:-1]
        self.members = {**self.members, info.id: info}
        tx.put(BUCKET_MEMBERS, _U64.pack(info.id), record)
        rec.member_set(info.id, record)

    def set_cluster_version(self, tx: Any, rec: EffectRecorder, version: Version) -> None:
        self._put_cluster(tx, rec, K_CLUSTER_VERSION, version.short().encode())
        self.cluster_version = version.minor_version

    def set_downgrade(self, tx: Any, rec: EffectRecorder, info: DowngradeInfo | None) -> None:
        if info is None:
            tx.delete(BUCKET_CLUSTER, K_DOWNGRADE)
            rec.cluster(K_DOWNGRADE, None)
        else:
            self._put_cluster(tx, rec, K_DOWNGRADE, info.encode())
        self.downgrade = info

    def _put_cluster(self, tx: Any, rec: EffectRecorder, key: bytes, value: bytes) -> None:
        tx.put(BUCKET_CLUSTER, key, value)
        rec.cluster(key, value)


def _json_obj(data: bytes) -> dict[str, Any]:
    obj = json.loads(data.decode())
    if not isinstance(obj, dict):
        raise ValueError("member record is not a JSON object")
    return obj
