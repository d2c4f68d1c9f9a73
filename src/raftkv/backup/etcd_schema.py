"""etcd's backend schema: the buckets of an etcd snapshot and how raftkv's state maps to them.

Owns the translation, both ways, between raftkv's backend records (``mvcc.backend``'s buckets,
each value in raftkv's own encoding) and the buckets etcd 3.4/3.5 keep in bbolt:

===================  =====================================================================
bucket               key -> value (etcd's encoding)
===================  =====================================================================
``key``              17-byte revision (``main _ sub``, big-endian; 18 with ``t`` for a
                     tombstone; the same bytes as raftkv's) -> ``mvccpb.KeyValue`` protobuf
``meta``             ``consistent_index``, ``term`` -> u64 big-endian;
                     ``scheduledCompactRev``, ``finishedCompactRev`` -> 17-byte revision;
                     ``confState`` -> JSON ``{"voters":[...],"learners":[...],...}`` (etcd 3.5)
``lease``            lease ID (int64 big-endian) -> ``leasepb.Lease{ID=1, TTL=2,
                     RemainingTTL=3}`` protobuf
``members``          member ID in hex -> JSON ``{"id","peerURLs","name","clientURLs",
                     "isLearner"}`` (Go's ``membership.Member``; empty fields omitted)
``members_removed``  removed member ID in hex -> ``"removed"``
``cluster``          ``clusterVersion`` -> ``"3.5.0"``
``alarm``            ``etcdserverpb.AlarmMember`` protobuf -> empty
``auth``             ``authEnabled`` -> one byte, ``authRevision`` -> u64 big-endian
``authUsers``        user name -> ``authpb.User`` (bcrypt hash, roles, options)
``authRoles``        role name -> ``authpb.Role`` (permissions)
``raftkv``           raftkv's own, which etcd ignores: ``formatVersion``, ``raftkvVersion``,
                     ``applyDigest`` (the chain head record), ``stateHash`` (JSON of the
                     state hash at the snapshot's consistent index)
===================  =====================================================================

Contracts: ``export_buckets`` streams from one LMDB read transaction, in bucket-name order and
key order, as ``write_bolt`` consumes them; ``import_snapshot`` reads only what a new member
keeps (keys, leases, compaction) and raises ``SnapshotContentError`` naming the bucket and key
of the first value it cannot decode.  Members and alarms of the old cluster are not imported:
they name members that the restored cluster does not have.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from google.protobuf.message import DecodeError

from raftkv import __version__
from raftkv.auth.store import K_ENABLED, K_REVISION, ROLES_PREFIX, USERS_PREFIX
from raftkv.backup.bbolt import BoltReader
from raftkv.guard.digest import META_APPLY_DIGEST
from raftkv.guard.state_hash import StateHash
from raftkv.lease.errors import LeaseCorruptError
from raftkv.lease.lease import decode_lease, encode_lease
from raftkv.mvcc.backend import (
    BUCKET_ALARM,
    BUCKET_AUTH,
    BUCKET_CLUSTER,
    BUCKET_KEY,
    BUCKET_LEASE,
    BUCKET_MEMBERS,
    BUCKET_META,
    CLUSTER_REMOVED_PREFIX,
    META_CONSISTENT_INDEX,
    META_FINISHED_COMPACT,
    META_SCHEDULED_COMPACT,
    META_TERM,
    ReadTxn,
    WriteTxn,
)
from raftkv.mvcc.revision import (
    REV_BYTES_LEN,
    TOMBSTONE_MARK,
    bytes_to_rev,
    encode_kv_fields,
    payload_to_proto,
)
from raftkv.proto import auth_pb2, kv_pb2
from raftkv.proto import rpc_pb2 as pb

FORMAT_VERSION = 1
"""Version of raftkv's etcd-format snapshot (the ``raftkv`` bucket's ``formatVersion``)."""

CLUSTER_VERSION = b"3.5.0"
"""The cluster version written to the ``cluster`` bucket: the etcd API level raftkv serves."""

B_KEY = b"key"
B_META = b"meta"
B_LEASE = b"lease"
B_MEMBERS = b"members"
B_MEMBERS_REMOVED = b"members_removed"
B_CLUSTER = b"cluster"
B_ALARM = b"alarm"
B_AUTH = b"auth"
B_AUTH_USERS = b"authUsers"
B_AUTH_ROLES = b"authRoles"
B_RAFTKV = b"raftkv"

K_CONF_STATE = b"confState"
K_CLUSTER_VERSION = b"clusterVersion"
K_AUTH_ENABLED = b"authEnabled"
K_AUTH_REVISION = b"authRevision"
K_FORMAT_VERSION = b"formatVersion"
K_RAFTKV_VERSION = b"raftkvVersion"
K_APPLY_DIGEST = b"applyDigest"
K_STATE_HASH = b"stateHash"

_U64 = struct.Struct(">Q")
_I64 = struct.Struct(">q")
_ALARM_KEY = struct.Struct(">QI")  # raftkv's alarm bucket key: member ID, alarm type

Items = Iterable[tuple[bytes, bytes]]


class SnapshotContentError(ValueError):
    """A snapshot's bucket holds a value that is not etcd's encoding; names bucket and key."""

    def __init__(self, path: str, bucket: bytes, key: bytes, reason: str) -> None:
        super().__init__(
            f"{path}: bucket {bucket.decode(errors='replace')!r} key {key.hex()}: {reason}"
        )


# -- protobuf pieces etcd stores (three int64 or two varint fields) -------------------------


def encode_etcd_lease(lease_id: int, ttl: int, remaining_ttl: int) -> bytes:
    """``leasepb.Lease`` as etcd marshals it (proto3: zero fields omitted)."""
    out = bytearray()
    for tag, value in ((0x08, lease_id), (0x10, ttl), (0x18, remaining_ttl)):
        if value:
            out.append(tag)
            out += encode_varint(value)
    return bytes(out)


def encode_varint(n: int) -> bytes:
    """Protobuf varint of ``n`` (a negative int64 as its 64-bit two's complement)."""
    if n < 0:
        n += 1 << 64
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def decode_varint_fields(data: bytes) -> dict[int, int]:
    """Field number -> value of a message whose fields are all varints (ValueError otherwise);
    values are read as int64 (two's complement)."""
    fields: dict[int, int] = {}
    pos = 0
    while pos < len(data):
        tag, pos = _read_varint(data, pos)
        if tag & 7 != 0:
            raise ValueError(f"field {tag >> 3} has wire type {tag & 7}, want varint")
        value, pos = _read_varint(data, pos)
        fields[tag >> 3] = value - (1 << 64) if value >= 1 << 63 else value
    return fields


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise ValueError("truncated or overlong varint")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7


def member_json(raw: dict[str, Any]) -> bytes:
    """etcd's JSON of one member, from raftkv's member record (``MemberInfo.to_json``)."""
    obj: dict[str, Any] = {"id": int(raw["id"]), "peerURLs": list(raw.get("peerURLs") or [])}
    if raw.get("isLearner"):
        obj["isLearner"] = True
    if raw.get("name"):
        obj["name"] = raw["name"]
    if raw.get("clientURLs"):
        obj["clientURLs"] = list(raw["clientURLs"])
    return json.dumps(obj, separators=(",", ":")).encode()


# -- raftkv -> etcd ------------------------------------------------------------------------


def export_buckets(tx: ReadTxn, state_hash: StateHash | None) -> list[tuple[bytes, Items]]:
    """Every bucket of an etcd snapshot of the state ``tx`` reads, in name order; values are
    produced lazily from ``tx``, which must stay open until they are consumed."""
    members = [json.loads(v.decode()) for _k, v in tx.iterate(BUCKET_MEMBERS)]
    buckets: dict[bytes, Items] = {
        B_ALARM: _alarms(tx),
        B_AUTH: _auth_flags(tx),
        B_AUTH_ROLES: _auth_records(tx, ROLES_PREFIX),
        B_AUTH_USERS: _auth_records(tx, USERS_PREFIX),
        B_CLUSTER: [(K_CLUSTER_VERSION, CLUSTER_VERSION)],
        B_KEY: ((raw, payload_to_proto(payload)) for raw, payload in tx.iterate(BUCKET_KEY)),
        B_LEASE: _leases(tx),
        B_MEMBERS: sorted((f"{int(m['id']):x}".encode(), member_json(m)) for m in members),
        B_MEMBERS_REMOVED: _removed_members(tx),
        B_META: _meta(tx, members),
        B_RAFTKV: _raftkv(tx, state_hash),
    }
    return sorted(buckets.items())


def _auth_flags(tx: ReadTxn) -> list[tuple[bytes, bytes]]:
    """etcd's ``auth`` bucket: the enabled flag and the auth revision (1 when never changed,
    as etcd writes it when it first opens a backend)."""
    enabled = tx.get(BUCKET_AUTH, K_ENABLED) or b"\x00"
    revision = tx.get(BUCKET_AUTH, K_REVISION) or _U64.pack(1)
    return [(K_AUTH_ENABLED, enabled), (K_AUTH_REVISION, revision)]


def _auth_records(tx: ReadTxn, prefix: bytes) -> list[tuple[bytes, bytes]]:
    """etcd's ``authUsers`` or ``authRoles``: raftkv keeps etcd's own encodings under a
    prefix of its ``auth`` bucket."""
    return sorted(
        (key[len(prefix) :], value)
        for key, value in tx.iterate(BUCKET_AUTH)
        if key.startswith(prefix)
    )


def _removed_members(tx: ReadTxn) -> list[tuple[bytes, bytes]]:
    """etcd's record of a removed member: its ID in hex -> ``removed``."""
    prefix = CLUSTER_REMOVED_PREFIX
    return sorted(
        (f"{_U64.unpack(key[len(prefix) :])[0]:x}".encode(), b"removed")
        for key, _v in tx.iterate(BUCKET_CLUSTER)
        if key.startswith(prefix)
    )


def _alarms(tx: ReadTxn) -> list[tuple[bytes, bytes]]:
    out = []
    for key, _v in tx.iterate(BUCKET_ALARM):
        member_id, alarm = _ALARM_KEY.unpack(key)
        out.append((pb.AlarmMember(memberID=member_id, alarm=alarm).SerializeToString(), b""))
    return sorted(out)


def _leases(tx: ReadTxn) -> Iterator[tuple[bytes, bytes]]:
    for _key, record in tx.iterate(BUCKET_LEASE):
        lease = decode_lease(record)
        yield (
            _I64.pack(lease.id),
            encode_etcd_lease(lease.id, lease.ttl, lease.remaining_ttl),
        )


def _meta(tx: ReadTxn, members: list[dict[str, Any]]) -> list[tuple[bytes, bytes]]:
    out = {}
    for key in (META_CONSISTENT_INDEX, META_TERM, META_SCHEDULED_COMPACT, META_FINISHED_COMPACT):
        value = tx.get(BUCKET_META, key)
        if value is not None:
            out[key] = value
    voters = sorted(int(m["id"]) for m in members if not m.get("isLearner"))
    learners = sorted(int(m["id"]) for m in members if m.get("isLearner"))
    conf: dict[str, Any] = {"voters": voters, "auto_leave": False}
    if learners:
        conf["learners"] = learners
    out[K_CONF_STATE] = json.dumps(conf, separators=(",", ":")).encode()
    return sorted(out.items())


def _raftkv(tx: ReadTxn, state_hash: StateHash | None) -> list[tuple[bytes, bytes]]:
    out = {
        K_FORMAT_VERSION: str(FORMAT_VERSION).encode(),
        K_RAFTKV_VERSION: __version__.encode(),
    }
    digest = tx.get(BUCKET_META, META_APPLY_DIGEST)
    if digest is not None:
        out[K_APPLY_DIGEST] = digest
    if state_hash is not None:
        out[K_STATE_HASH] = json.dumps(state_hash.to_dict(), sort_keys=True).encode()
    return sorted(out.items())


# -- etcd -> raftkv ------------------------------------------------------------------------


@dataclass(frozen=True)
class ImportSummary:
    """What ``import_snapshot`` brought in."""

    revisions: int  # records of the key bucket (tombstones included)
    leases: int
    latest_revision: int  # the highest main revision in the key bucket (0 if empty)
    compact_revision: int  # finishedCompactRev, -1 if none
    recorded_state_hash: StateHash | None  # from a raftkv snapshot's own bucket
    raftkv_format: int | None  # formatVersion of a raftkv snapshot, None for etcd's


def _import_auth(reader: BoltReader, names: set[bytes]) -> list[tuple[bytes, bytes]]:
    """etcd's auth buckets as records of raftkv's ``auth`` bucket (each user and role checked
    to be the protobuf etcd writes)."""
    path = reader.path
    out: list[tuple[bytes, bytes]] = []
    if B_AUTH in names:
        enabled = reader.get(B_AUTH, K_AUTH_ENABLED)
        if enabled is not None:
            if enabled not in (b"\x00", b"\x01"):
                raise SnapshotContentError(path, B_AUTH, K_AUTH_ENABLED, "not 0 or 1")
            out.append((K_ENABLED, enabled))
        revision = reader.get(B_AUTH, K_AUTH_REVISION)
        if revision is not None:
            if len(revision) != _U64.size:
                raise SnapshotContentError(path, B_AUTH, K_AUTH_REVISION, "not 8 bytes")
            out.append((K_REVISION, revision))
    for bucket, prefix, message in (
        (B_AUTH_USERS, USERS_PREFIX, auth_pb2.User),
        (B_AUTH_ROLES, ROLES_PREFIX, auth_pb2.Role),
    ):
        if bucket not in names:
            continue
        for name, value in reader.items(bucket):
            try:
                record = message.FromString(value)
            except DecodeError as exc:
                raise SnapshotContentError(
                    path, bucket, name, f"not an authpb record: {exc}"
                ) from None
            if record.name != name:
                raise SnapshotContentError(path, bucket, name, "stored under another name")
            out.append((prefix + name, value))
    return out


def import_snapshot(reader: BoltReader, write: Any, batch: int = 10_000) -> ImportSummary:
    """Copy the key, lease, compaction and auth records of ``reader`` into a raftkv backend.

    ``write`` is ``Backend.write`` (a context manager yielding a ``WriteTxn``); records are
    written in transactions of ``batch`` records.  The consistent index is not copied: the
    restore writes the new cluster's first index itself."""
    path = reader.path
    names = set(reader.buckets())
    revisions = latest = 0
    pending: list[tuple[bytes, bytes]] = []

    def flush(bucket: str) -> None:
        with write() as tx:
            _put_all(tx, bucket, pending)
        pending.clear()

    if B_KEY in names:
        for raw, value in reader.items(B_KEY):
            pending.append((raw, _import_kv(path, raw, value)))
            latest = bytes_to_rev(raw) >> 32
            revisions += 1
            if len(pending) >= batch:
                flush(BUCKET_KEY)
        flush(BUCKET_KEY)
    leases = 0
    if B_LEASE in names:
        for raw, value in reader.items(B_LEASE):
            pending.append(_import_lease(path, raw, value))
            leases += 1
        flush(BUCKET_LEASE)
    compact = -1
    if B_META in names:
        for key in (META_SCHEDULED_COMPACT, META_FINISHED_COMPACT):
            rev_raw = reader.get(B_META, key)
            if rev_raw is None:
                continue
            if len(rev_raw) != REV_BYTES_LEN:
                raise SnapshotContentError(path, B_META, key, f"{len(rev_raw)}-byte revision")
            pending.append((key, rev_raw))
            if key == META_FINISHED_COMPACT:
                compact = bytes_to_rev(rev_raw) >> 32
        flush(BUCKET_META)
    pending.extend(_import_auth(reader, names))
    flush(BUCKET_AUTH)
    recorded, fmt = _recorded(reader, names)
    return ImportSummary(revisions, leases, latest, compact, recorded, fmt)


def _put_all(tx: WriteTxn, bucket: str, items: list[tuple[bytes, bytes]]) -> None:
    for key, value in items:
        tx.put(bucket, key, value)


def _import_kv(path: str, raw: bytes, value: bytes) -> bytes:
    if (
        not (
            len(raw) == REV_BYTES_LEN
            or (len(raw) == REV_BYTES_LEN + 1 and raw[REV_BYTES_LEN:] == TOMBSTONE_MARK)
        )
        or raw[8:9] != b"_"
    ):
        raise SnapshotContentError(path, B_KEY, raw, "not a revision key")
    try:
        kv = kv_pb2.KeyValue.FromString(value)
    except DecodeError as exc:
        raise SnapshotContentError(path, B_KEY, raw, f"not a mvccpb.KeyValue: {exc}") from None
    if not kv.key:
        raise SnapshotContentError(path, B_KEY, raw, "KeyValue without a key")
    if len(raw) > REV_BYTES_LEN:  # a tombstone: etcd keeps only the key
        return encode_kv_fields(kv.key, b"", 0, 0, 0, 0)
    return encode_kv_fields(
        kv.key, kv.value, kv.create_revision, kv.mod_revision, kv.version, kv.lease
    )


def _import_lease(path: str, raw: bytes, value: bytes) -> tuple[bytes, bytes]:
    if len(raw) != _I64.size:
        raise SnapshotContentError(path, B_LEASE, raw, "lease key is not 8 bytes")
    try:
        fields = decode_varint_fields(value)
        lease_id = fields.get(1, 0)
        if lease_id != _I64.unpack(raw)[0]:
            raise ValueError(f"lease {lease_id} stored under {_I64.unpack(raw)[0]}")
        record = encode_lease(lease_id, fields.get(2, 0), fields.get(3, 0))
        decode_lease(record)  # refuses lease ID 0
    except (ValueError, LeaseCorruptError) as exc:
        raise SnapshotContentError(path, B_LEASE, raw, f"not a leasepb.Lease: {exc}") from None
    return _U64.pack(lease_id), record


def _recorded(reader: BoltReader, names: set[bytes]) -> tuple[StateHash | None, int | None]:
    if B_RAFTKV not in names:
        return None, None
    path = reader.path
    fmt_raw = reader.get(B_RAFTKV, K_FORMAT_VERSION) or b""
    try:
        fmt = int(fmt_raw.decode())
    except ValueError:
        raise SnapshotContentError(path, B_RAFTKV, K_FORMAT_VERSION, "not a number") from None
    if fmt > FORMAT_VERSION:
        raise SnapshotContentError(
            path,
            B_RAFTKV,
            K_FORMAT_VERSION,
            f"snapshot format {fmt} is newer than this raftkv's ({FORMAT_VERSION})",
        )
    raw = reader.get(B_RAFTKV, K_STATE_HASH)
    if raw is None:
        return None, fmt
    try:
        return StateHash.from_dict(json.loads(raw.decode())), fmt
    except ValueError as exc:
        raise SnapshotContentError(path, B_RAFTKV, K_STATE_HASH, str(exc)) from None
