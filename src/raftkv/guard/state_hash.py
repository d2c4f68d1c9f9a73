"""The state hash: one value over ALL replicated state of a member, with its parts kept.

Owns: the canonical encodings of the member list and the alarm list, the combination of the
parts (etcd's HashKV of the key bucket, the lessor's state digest, members, alarms, plus the
revision and compacted revision) into one BLAKE2b-128 value, and naming which parts differ.

Contract: a state hash is taken at one applied Raft index, between two apply batches, with
``KVStore.hash_kv(0)`` (the current revision), ``Lessor.state_digest()`` and the applier's
member and alarm lists read without any entry applied in between.  Two hashes are comparable
only when taken at the same applied index; every part — the revision included — is then equal
on members that applied the same entries.

Wiring: a deterministic point where every member hashes at the same index is the apply of a
given entry (a compaction, or a no-op hash-check request the leader proposes every
``--corrupt-check-time``): right after that entry's batch commits, the applier calls
``compute_state_hash(applied_index=entry.index, ...)`` and keeps the result by index for peers
to query; the leader gathers them and runs ``digest.judge`` on ``StateHash.value``, then
``diff`` against the truth to say which parts an outlier has wrong.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from raftkv.mvcc.types import KeyValueHash

PARTS = ("revision", "compact_revision", "keys", "leases", "members", "alarms", "auth")
"""The parts of a state hash, in the order ``diff`` reports them."""

_PERSON_MEMBERS = b"raftkv/members"
_PERSON_ALARMS = b"raftkv/alarms"
_PERSON_STATE = b"raftkv/state/v1"
_U32 = struct.Struct(">I")
_MEMBER = struct.Struct(">Q?")
_ALARM = struct.Struct(">QI")
_HEAD = struct.Struct(">QqqI")


class NotComparableError(ValueError):
    """The two state hashes were taken at different applied indexes."""


class MemberLike(Protocol):
    """What the member list holds per member (``server.bootstrap.MemberInfo`` fits)."""

    @property
    def id(self) -> int: ...

    @property
    def name(self) -> str: ...

    @property
    def peer_urls(self) -> Sequence[str]: ...

    @property
    def client_urls(self) -> Sequence[str]: ...

    @property
    def is_learner(self) -> bool: ...

    @property
    def version(self) -> str: ...


def _put_str(h: Any, text: str) -> None:
    data = text.encode()
    h.update(_U32.pack(len(data)))
    h.update(data)


def members_digest(
    members: Iterable[MemberLike], cluster: Sequence[tuple[bytes, bytes]] = ()
) -> bytes:
    """BLAKE2b-128 of the member list by ID: id, learner flag, name, peer URLs, client URLs,
    published version; then the cluster records (removed IDs, cluster version, downgrade:
    ``ClusterInfo.records()``, sorted by key).

    URL lists keep their stored order (it is replicated as is).  Duplicate IDs raise
    ``ValueError``.  An unknown version and an empty cluster record list add nothing, so
    the digest of a raftkv 0.1 member list is unchanged.
    """
    ordered = sorted(members, key=lambda m: m.id)
    if len({m.id for m in ordered}) != len(ordered):
        raise ValueError("member list holds an ID twice")
    h = hashlib.blake2b(_U32.pack(len(ordered)), digest_size=16, person=_PERSON_MEMBERS)
    for m in ordered:
        h.update(_MEMBER.pack(m.id, m.is_learner))
        _put_str(h, m.name)
        for urls in (m.peer_urls, m.client_urls):
            h.update(_U32.pack(len(urls)))
            for url in urls:
                _put_str(h, url)
        if m.version:
            _put_str(h, "version:" + m.version)
    if cluster:
        h.update(b"cluster" + _U32.pack(len(cluster)))
        for key, value in cluster:
            h.update(_U32.pack(len(key)) + key + _U32.pack(len(value)) + value)
    return h.digest()


def alarms_digest(alarms: Iterable[tuple[int, int]]) -> bytes:
    """BLAKE2b-128 of the set of active (member ID, alarm type) pairs, sorted."""
    ordered = sorted(set(alarms))
    h = hashlib.blake2b(_U32.pack(len(ordered)), digest_size=16, person=_PERSON_ALARMS)
    for member_id, alarm_type in ordered:
        h.update(_ALARM.pack(member_id, alarm_type))
    return h.digest()


@dataclass(frozen=True, slots=True)
class StateHash:
    """The parts of one member's state at ``applied_index``; ``value`` combines them all."""

    applied_index: int
    revision: int
    compact_revision: int  # -1 when never compacted, as KVStore reports it
    keys: int  # etcd's HashKV (CRC32C of the key bucket up to ``revision``)
    leases: bytes  # Lessor.state_digest()
    members: bytes  # members_digest()
    alarms: bytes  # alarms_digest()
    auth: bytes = b""  # AuthStore.hash_part(): empty while auth was never touched

    @property
    def value(self) -> bytes:
        """BLAKE2b-128 over every part (the applied index included)."""
        h = hashlib.blake2b(
            _HEAD.pack(self.applied_index, self.revision, self.compact_revision, self.keys),
            digest_size=16,
            person=_PERSON_STATE,
        )
        for part in (self.leases, self.members, self.alarms):
            h.update(_U32.pack(len(part)))
            h.update(part)
        if self.auth:  # absent until auth is first used: older hashes keep their value
            h.update(_U32.pack(len(self.auth)))
            h.update(self.auth)
        return h.digest()

    def diff(self, other: StateHash) -> tuple[str, ...]:
        """Names of the parts (``PARTS`` order) that differ; empty when the states agree.

        Raises ``NotComparableError`` when the applied indexes differ.
        """
        if self.applied_index != other.applied_index:
            raise NotComparableError(
                f"state hashes at applied index {self.applied_index} and {other.applied_index}"
            )
        return tuple(p for p in PARTS if getattr(self, p) != getattr(other, p))

    def to_dict(self) -> dict[str, int | str]:
        """JSON-ready form (byte parts in hex) for peers, logs and ``raftkv check``."""
        return {
            "applied_index": self.applied_index,
            "revision": self.revision,
            "compact_revision": self.compact_revision,
            "keys": self.keys,
            "leases": self.leases.hex(),
            "members": self.members.hex(),
            "alarms": self.alarms.hex(),
            "auth": self.auth.hex(),
            "value": self.value.hex(),
        }

    @classmethod
    def from_dict(cls, obj: dict[str, Any]) -> StateHash:
        """Inverse of ``to_dict``; ``ValueError`` on a missing or malformed field or a
        ``value`` that does not match the parts."""
        try:
            sh = cls(
                applied_index=int(obj["applied_index"]),
                revision=int(obj["revision"]),
                compact_revision=int(obj["compact_revision"]),
                keys=int(obj["keys"]),
                leases=bytes.fromhex(obj["leases"]),
                members=bytes.fromhex(obj["members"]),
                alarms=bytes.fromhex(obj["alarms"]),
                auth=bytes.fromhex(obj.get("auth", "")),
            )
            claimed = bytes.fromhex(obj["value"])
        except (KeyError, TypeError) as exc:
            raise ValueError(f"malformed state hash: {exc!r}") from None
        if claimed != sh.value:
            raise ValueError("state hash value does not match its parts")
        return sh


def compute_state_hash(
    *,
    applied_index: int,
    kv_hash: KeyValueHash,
    lease_digest: bytes,
    members: Iterable[MemberLike],
    alarms: Iterable[tuple[int, int]],
    cluster: Sequence[tuple[bytes, bytes]] = (),
    auth: bytes = b"",
) -> StateHash:
    """The state hash from its inputs (see the module contract for when to take them)."""
    return StateHash(
        applied_index=applied_index,
        revision=kv_hash.revision,
        compact_revision=kv_hash.compact_revision,
        keys=kv_hash.hash,
        leases=lease_digest,
        members=members_digest(members, cluster),
        alarms=alarms_digest(alarms),
        auth=auth,
    )
