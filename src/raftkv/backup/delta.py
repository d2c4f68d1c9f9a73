"""Delta files: the changes between two cuts of the backup agent's watch stream, and their
merge with a full backup into an etcd-format snapshot.

Owns the delta format (``encode_delta`` / ``decode_delta`` on the raw bytes,
``write_delta_file`` / ``read_delta_file`` on zstd-compressed files) and ``merge_snapshot``.

Format (version 1), the raw bytes inside one zstd frame (with zstd's content checksum)::

    preamble  MAGIC (8 bytes, ``RKVDELTA``) | version u16 | flags u16 (0)
    record*   length u32 | crc32c u32 | type u8 | payload     (all integers big-endian)
              ``length`` counts type + payload; the CRC32C covers type + payload

    HEADER (1, first)  JSON {"base", "prev", "from_revision", "created"}
    EVENTS (2, *)      revision i64 | received f64 (agent's clock) | count u32 |
                       count x (type u8: 0 put, 1 delete | len u32 | mvccpb.KeyValue)
    LEASES (3, once)   count u32 | count x (lease ID i64 | granted TTL i64)
    END    (4, last)   to_revision i64 | cut_time f64 | events u64 | event records u32

Contracts: EVENTS records hold all the events of one revision, in the watch's order (a txn
stays together, its sub-revisions are the positions 0, 1, ...), with revisions strictly
increasing inside ``(from_revision, to_revision]``; the lease table is the cluster's at the
cut.  The decoder returns a ``Delta`` or raises ``DeltaFormatError(path, offset, reason)`` and
nothing else; ``offset`` is in the decompressed stream (0 for an error of the zstd frame).

``merge_snapshot`` writes a new etcd-format snapshot file (bbolt + SHA-256 trailer): the full
backup's buckets with the events up to a revision appended to its key bucket (puts as the
event's KeyValue under ``main_sub``; deletes as 18-byte tombstones holding ``KeyValue{key}``)
and as the lease bucket the given lease table plus every lease a live key is attached to.  The full's recorded state hash and apply
digest are dropped (they describe the full, not the merge).
"""

from __future__ import annotations

import io
import json
import os
import struct
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import BinaryIO

import crc32c
import zstandard
from google.protobuf.message import DecodeError

from raftkv.backup.bbolt import BoltReader, write_bolt
from raftkv.backup.bbolt.layout import FileFormatError
from raftkv.backup.etcd_schema import (
    B_KEY,
    B_LEASE,
    B_RAFTKV,
    K_APPLY_DIGEST,
    K_STATE_HASH,
    encode_etcd_lease,
)
from raftkv.backup.snapshot_file import sha256_prefix
from raftkv.mvcc.revision import REV_BYTES_LEN, bytes_to_rev, pack, rev_to_bytes
from raftkv.proto import kv_pb2

MAGIC = b"RKVDELTA"
VERSION = 1
PUT = 0
DELETE = 1

T_HEADER = 1
T_EVENTS = 2
T_LEASES = 3
T_END = 4

_PREAMBLE = struct.Struct(">8sHH")
_RECORD = struct.Struct(">IIB")  # length, crc, type
_EVENTS = struct.Struct(">qdI")
_EVENT = struct.Struct(">BI")
_COUNT = struct.Struct(">I")
_LEASE = struct.Struct(">qq")
_END = struct.Struct(">qdQI")
_I64 = struct.Struct(">q")
MAX_RECORD = 1 << 30


class DeltaFormatError(FileFormatError):
    """The one error of the delta decoder: the file is not a complete, intact delta."""


class MergeError(Exception):
    """A full backup and deltas that do not fit together (a gap or overlap of revisions)."""


@dataclass(frozen=True)
class RevisionEvents:
    """All the events of one revision, in order: (PUT or DELETE, mvccpb.KeyValue bytes)."""

    revision: int
    received: float
    events: tuple[tuple[int, bytes], ...]


@dataclass(frozen=True)
class Delta:
    base: str
    prev: str
    from_revision: int  # exclusive: the delta covers (from_revision, to_revision]
    to_revision: int
    created: float
    cut_time: float
    groups: tuple[RevisionEvents, ...]
    leases: tuple[tuple[int, int], ...]  # (lease ID, granted TTL), by ID

    @property
    def event_count(self) -> int:
        return sum(len(g.events) for g in self.groups)


def _record(kind: int, payload: bytes) -> bytes:
    body = bytes([kind]) + payload
    return _RECORD.pack(len(body), crc32c.crc32c(body), kind) + payload


def encode_delta(delta: Delta) -> bytes:
    """The raw (uncompressed) bytes of ``delta``; ValueError when its content breaks the
    format's contracts (so a writer never produces a file the reader refuses)."""
    out = io.BytesIO()
    out.write(_PREAMBLE.pack(MAGIC, VERSION, 0))
    header = {
        "base": delta.base,
        "prev": delta.prev,
        "from_revision": delta.from_revision,
        "created": delta.created,
    }
    out.write(_record(T_HEADER, json.dumps(header, sort_keys=True).encode()))
    last = delta.from_revision
    for group in delta.groups:
        if not last < group.revision <= delta.to_revision:
            raise ValueError(f"revision {group.revision} out of order after {last}")
        last = group.revision
        parts = [_EVENTS.pack(group.revision, group.received, len(group.events))]
        for kind, kv in group.events:
            if kind not in (PUT, DELETE):
                raise ValueError(f"event type {kind}")
            parts.append(_EVENT.pack(kind, len(kv)) + kv)
        out.write(_record(T_EVENTS, b"".join(parts)))
    leases = b"".join(_LEASE.pack(i, ttl) for i, ttl in delta.leases)
    out.write(_record(T_LEASES, _COUNT.pack(len(delta.leases)) + leases))
    end = _END.pack(delta.to_revision, delta.cut_time, delta.event_count, len(delta.groups))
    out.write(_record(T_END, end))
    return out.getvalue()


def write_delta_file(f: BinaryIO, delta: Delta) -> int:
    """Write ``delta`` zstd-compressed to the binary file ``f``; returns the raw size.  The
    caller owns fsync and naming."""
    raw = encode_delta(delta)
    cctx = zstandard.ZstdCompressor(level=3, write_checksum=True)
    f.write(cctx.compress(raw))
    return len(raw)


def read_delta_file(path: str) -> Delta:
    """Decode the compressed delta file ``path`` (``DeltaFormatError`` on anything wrong)."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise DeltaFormatError(path, 0, f"cannot read: {exc.strerror}") from None
    return decode_delta(decompress_delta(data, path), path)


def decompress_delta(data: bytes, path: str) -> bytes:
    """The raw bytes of one complete zstd frame (``DeltaFormatError`` otherwise)."""
    if not data:
        raise DeltaFormatError(path, 0, "empty delta file")
    try:
        dobj = zstandard.ZstdDecompressor().decompressobj()
        raw = dobj.decompress(data)
    except zstandard.ZstdError as exc:
        raise DeltaFormatError(path, 0, f"not an intact zstd frame: {exc}") from None
    if not dobj.eof:
        raise DeltaFormatError(path, 0, "truncated zstd frame")
    if dobj.unused_data:
        raise DeltaFormatError(path, 0, "data after the zstd frame")
    return raw


def decode_delta(raw: bytes, path: str = "<delta>") -> Delta:
    """Decode the raw bytes of a delta (``DeltaFormatError`` on anything wrong)."""
    if len(raw) < _PREAMBLE.size:
        raise DeltaFormatError(path, 0, "too short for a delta preamble")
    magic, version, _flags = _PREAMBLE.unpack_from(raw)
    if magic != MAGIC:
        raise DeltaFormatError(path, 0, "bad magic: not a raftkv delta")
    if version != VERSION:
        raise DeltaFormatError(path, 8, f"delta format version {version}, want {VERSION}")
    header: dict[str, object] | None = None
    groups: list[RevisionEvents] = []
    leases: tuple[tuple[int, int], ...] | None = None
    pos = _PREAMBLE.size
    for offset, kind, payload in _records(raw, pos, path):
        if header is None:
            if kind != T_HEADER:
                raise DeltaFormatError(path, offset, f"first record has type {kind}, want header")
            header = _header(payload, path, offset)
            last = int(header["from_revision"])  # type: ignore[call-overload]
            continue
        if kind == T_EVENTS and leases is None:
            group = _events(payload, path, offset)
            if group.revision <= last:
                raise DeltaFormatError(path, offset, f"revision {group.revision} after {last}")
            last = group.revision
            groups.append(group)
        elif kind == T_LEASES and leases is None:
            leases = _leases(payload, path, offset)
        elif kind == T_END and leases is not None:
            if offset + _RECORD.size + len(payload) != len(raw):
                raise DeltaFormatError(path, offset, "data after the end record")
            if len(payload) != _END.size:
                raise DeltaFormatError(path, offset, "end record of the wrong size")
            to_rev, cut, events, records = _END.unpack(payload)
            if to_rev < last or records != len(groups):
                raise DeltaFormatError(path, offset, "end record disagrees with the records")
            delta = Delta(
                base=str(header["base"]),
                prev=str(header["prev"]),
                from_revision=int(header["from_revision"]),  # type: ignore[call-overload]
                to_revision=to_rev,
                created=float(header["created"]),  # type: ignore[arg-type]
                cut_time=cut,
                groups=tuple(groups),
                leases=leases,
            )
            if delta.event_count != events:
                raise DeltaFormatError(path, offset, "end record's event count disagrees")
            return delta
        else:
            raise DeltaFormatError(path, offset, f"unexpected record type {kind}")
    raise DeltaFormatError(path, len(raw), "truncated: no end record")


def _records(raw: bytes, pos: int, path: str) -> Iterator[tuple[int, int, bytes]]:
    while pos < len(raw):
        if pos + _RECORD.size > len(raw):
            raise DeltaFormatError(path, pos, "truncated record header")
        length, crc, kind = _RECORD.unpack_from(raw, pos)
        if not 1 <= length <= MAX_RECORD or pos + 8 + length > len(raw):
            raise DeltaFormatError(path, pos, f"record length {length} runs past the end")
        body = raw[pos + 8 : pos + 8 + length]
        if crc32c.crc32c(body) != crc:
            raise DeltaFormatError(path, pos, "record CRC32C mismatch")
        yield pos, kind, body[1:]
        pos += 8 + length


def _header(payload: bytes, path: str, offset: int) -> dict[str, object]:
    try:
        obj = json.loads(payload.decode())
        if not isinstance(obj, dict):
            raise ValueError("not an object")
        int(obj["from_revision"])
        float(obj["created"])
        str(obj["base"]), str(obj["prev"])
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
        raise DeltaFormatError(path, offset, f"bad header: {exc}") from None
    return obj


def _events(payload: bytes, path: str, offset: int) -> RevisionEvents:
    try:
        revision, received, count = _EVENTS.unpack_from(payload)
        pos = _EVENTS.size
        events = []
        for _ in range(count):
            kind, size = _EVENT.unpack_from(payload, pos)
            pos += _EVENT.size
            kv = payload[pos : pos + size]
            if len(kv) != size or kind not in (PUT, DELETE):
                raise ValueError("bad event")
            if not kv_pb2.KeyValue.FromString(kv).key:
                raise ValueError("event without a key")
            pos += size
            events.append((kind, kv))
        if pos != len(payload) or count == 0 or revision <= 0:
            raise ValueError("bad events record")
    except (struct.error, ValueError, DecodeError) as exc:
        raise DeltaFormatError(path, offset, f"bad events record: {exc}") from None
    return RevisionEvents(revision, received, tuple(events))


def _leases(payload: bytes, path: str, offset: int) -> tuple[tuple[int, int], ...]:
    try:
        (count,) = _COUNT.unpack_from(payload)
        if len(payload) != _COUNT.size + count * _LEASE.size:
            raise ValueError("size disagrees with the count")
        out = tuple(
            _LEASE.unpack_from(payload, _COUNT.size + i * _LEASE.size) for i in range(count)
        )
    except (struct.error, ValueError) as exc:
        raise DeltaFormatError(path, offset, f"bad lease table: {exc}") from None
    return tuple((int(i), int(t)) for i, t in out)


# -- merging into a snapshot ----------------------------------------------------------------


def event_records(
    groups: Iterable[RevisionEvents], to_revision: int
) -> Iterator[tuple[bytes, bytes]]:
    """Key-bucket records (etcd's encoding) of the events up to ``to_revision``."""
    for group in groups:
        if group.revision > to_revision:
            return
        for sub, (kind, kv) in enumerate(group.events):
            packed = pack(group.revision, sub)
            if kind == PUT:
                yield rev_to_bytes(packed), kv
            else:
                key = kv_pb2.KeyValue.FromString(kv).key
                tomb = kv_pb2.KeyValue(key=key).SerializeToString()
                yield rev_to_bytes(packed, tombstone=True), tomb


@dataclass(frozen=True)
class MergeSummary:
    path: str
    db_size: int
    revision: int  # the last revision of the key bucket written
    events: int


def merge_snapshot(
    full: BoltReader,
    full_revision: int,
    deltas: Sequence[Delta],
    to_revision: int,
    leases: Sequence[tuple[int, int]],
    out_path: str,
    fallback_ttls: Mapping[int, int] | None = None,
) -> MergeSummary:
    """Write ``out_path`` (new, 0600, fsynced): the snapshot ``full`` at ``full_revision``
    with the events of ``deltas`` up to ``to_revision`` replayed (see the module docstring).

    The lease bucket holds ``leases`` (lease ID, granted TTL) plus every lease a key live at
    ``to_revision`` is attached to, with its TTL from ``fallback_ttls`` or 0 (raised to the
    minimum TTL by the restore): a lease granted and revoked between two cuts is in no lease
    table, but its keys may be live at the point.  ``deltas`` must continue each other from
    ``full_revision``; MergeError otherwise."""
    at = full_revision
    for d in deltas:
        if d.from_revision != at:
            raise MergeError(f"delta from revision {d.from_revision} does not continue {at}")
        at = d.to_revision
    if not full_revision <= to_revision <= at:
        raise MergeError(f"revision {to_revision} is outside {full_revision}..{at}")
    counted = [0, full_revision]
    names = set(full.buckets()) | {B_KEY, B_LEASE}
    attached: dict[bytes, int] = {}  # live key -> its lease, for leased keys

    def track(raw: bytes, value: bytes) -> None:
        try:
            kv = kv_pb2.KeyValue.FromString(value)
        except DecodeError:
            return  # the restore names the bad record
        if kv.lease and len(raw) == REV_BYTES_LEN:
            attached[kv.key] = kv.lease
        else:
            attached.pop(kv.key, None)

    def keys() -> Iterator[tuple[bytes, bytes]]:
        last = b""
        if B_KEY in names:
            for raw, value in full.items(B_KEY):
                last = raw
                track(raw, value)
                yield raw, value
        if last and bytes_to_rev(last) >> 32 > full_revision:
            raise MergeError(f"the full backup holds revisions after {full_revision}")
        for d in deltas:
            for raw, value in event_records(d.groups, to_revision):
                counted[0] += 1
                counted[1] = bytes_to_rev(raw) >> 32
                track(raw, value)
                yield raw, value

    def lease_items() -> Iterator[tuple[bytes, bytes]]:
        # consumed after the key bucket (bucket names are written in order: key < lease)
        table = dict(leases)
        for lease_id in set(attached.values()) - set(table):
            table[lease_id] = (fallback_ttls or {}).get(lease_id, 0)
        for lease_id, ttl in sorted(table.items(), key=lambda item: _I64.pack(item[0])):
            yield _I64.pack(lease_id), encode_etcd_lease(lease_id, ttl, 0)

    buckets: list[tuple[bytes, Iterable[tuple[bytes, bytes]]]] = []
    for name in sorted(names):
        if name == B_KEY:
            buckets.append((name, keys()))
        elif name == B_LEASE:
            buckets.append((name, lease_items()))
        elif name == B_RAFTKV:
            drop = (K_STATE_HASH, K_APPLY_DIGEST)
            buckets.append((name, [(k, v) for k, v in full.items(name) if k not in drop]))
        else:
            buckets.append((name, full.items(name)))
    fd = os.open(out_path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w+b") as f:
        size = write_bolt(f, buckets)
        f.flush()
        f.seek(0)
        f.write(sha256_prefix(f, size))  # the trailer, right after the database
        f.flush()
        os.fsync(f.fileno())
    return MergeSummary(out_path, size, counted[1], counted[0])
