"""Read-only verification of one member's files: WAL segments, snapshot files, LMDB backends.

Owns: ``check_wal`` (every segment decodes, the CRC chain holds across records and segments,
the metadata agrees, torn tail vs corruption by the WAL's own rule), ``check_snapshots``
(``*.snap`` magic/version/CRC/body, ``*.snap.db`` backend copies verified like the backend) and
``read_lmdb`` (every value of every bucket passes its CRC32C envelope; key, lease, member and
meta records decode).  Each returns a ``CheckResult`` and what it read, for the rebuild.

Contract: nothing here writes to the data directory.  WAL segments and snapshot files are read
with plain ``open(..., "rb")``; LMDB environments are opened ``readonly=True, lock=False``
(the caller has made sure the member is stopped), so not even the lock file is touched.
"""

from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass, field
from typing import Any

import lmdb

from raftkv.guard.check_report import CheckResult, Finding, Severity
from raftkv.guard.digest import DIGEST_SIZE, META_APPLY_DIGEST, DigestRecordError, decode_head
from raftkv.lease.errors import LeaseCorruptError
from raftkv.lease.lease import decode_lease
from raftkv.mvcc.backend import (
    BUCKET_APPLY_DIGEST,
    BUCKET_KEY,
    BUCKET_LEASE,
    BUCKET_MEMBERS,
    BUCKET_META,
    META_CONSISTENT_INDEX,
    META_FINISHED_COMPACT,
    META_SCHEDULED_COMPACT,
    META_TERM,
    unseal,
)
from raftkv.mvcc.errors import BackendCorruptionError
from raftkv.mvcc.revision import REV_BYTES_LEN, SUB_BITS, bytes_to_rev, decode_kv, is_tombstone
from raftkv.raft.codec import CodecError, decode_entry, decode_hard_state, decode_snapshot_metadata
from raftkv.raft.types import Entry, HardState, Snapshot
from raftkv.snap import SnapshotCorruptionError, decode_snapshot_file, parse_snapshot_name
from raftkv.wal.errors import WALCorruptionError
from raftkv.wal.files import Segment, parse_segment_name
from raftkv.wal.metadata import decode_metadata
from raftkv.wal.record import RecordType, scan_segment
from raftkv.wal.replay import WalSnapshot, read_segments

MAX_FINDINGS_PER_BUCKET = 20
"""Bad values reported one by one per bucket; the rest are counted."""

_U64 = struct.Struct(">Q")
TORN_TAIL = "torn tail (repairable on start)"


# -- WAL ----------------------------------------------------------------------------------


@dataclass
class WalContents:
    """What the WAL holds.  ``entries`` is the contiguous run of entries that replay keeps
    (later entries replace earlier ones at the same index; a received snapshot's marker
    drops every entry before it); ``first_index`` its first index."""

    segments: int = 0
    records: int = 0
    member_id: int | None = None
    cluster_id: int | None = None
    hard_state: HardState = field(default_factory=HardState)
    entries: list[Entry] = field(default_factory=list)
    markers: list[WalSnapshot] = field(default_factory=list)
    corrupt: bool = False
    # Set after damage: the next entry starts a new run instead of being checked against the
    # entries before the damage (their continuity cannot be judged across it).
    resync: bool = False

    @property
    def first_index(self) -> int | None:
        return self.entries[0].index if self.entries else None

    @property
    def last_index(self) -> int | None:
        return self.entries[-1].index if self.entries else None

    def entry(self, index: int) -> Entry | None:
        first = self.first_index
        if first is None or not first <= index < first + len(self.entries):
            return None
        return self.entries[index - first]


def _list_segments(wal_dir: str, result: CheckResult) -> list[list[Segment]]:
    """Segments in sequence order, split into runs at every sequence gap (each gap reported)."""
    segments: list[Segment] = []
    for name in os.listdir(wal_dir):
        parsed = parse_segment_name(name)
        if parsed is not None:
            segments.append(Segment(parsed[0], parsed[1], os.path.join(wal_dir, name)))
    segments.sort(key=lambda s: s.seq)
    runs: list[list[Segment]] = []
    for seg in segments:
        if runs and seg.seq == runs[-1][-1].seq + 1:
            runs[-1].append(seg)
            continue
        if runs:
            result.add(
                Finding(
                    Severity.CORRUPT,
                    seg.path,
                    f"segment sequence gap: {runs[-1][-1].seq:#x} is followed by {seg.seq:#x}",
                )
            )
        runs.append([seg])
    return runs


def _add_entry(wal: WalContents, e: Entry, path: str, offset: int, result: CheckResult) -> None:
    entries = wal.entries
    first = wal.first_index
    if first is None or e.index < first or wal.resync:
        wal.entries = [e]
        wal.resync = False
        return
    expected = first + len(entries)
    if e.index > expected:
        result.add(Finding(Severity.CORRUPT, path, f"entry {e.index} skips {expected}", offset))
        wal.corrupt = wal.resync = True
        return
    del entries[e.index - first :]
    entries.append(e)


def _add_marker(wal: WalContents, ws: WalSnapshot) -> None:
    """A snapshot marker.  One at an entry the log holds with the same term is a snapshot the
    member took of its own log: nothing changes.  Any other is a snapshot received from the
    leader (Raft installs one only when its log lacks the snapshot's last entry): the log was
    replaced by it, so the entries before it are dropped, even those at indexes the log
    still held (stale, possibly from another term), and the log restarts after it."""
    wal.markers.append(ws)
    held = wal.entry(ws.index)
    if held is None or held.term != ws.term:
        wal.entries = []


def _read_run(run: list[Segment], wal: WalContents, result: CheckResult) -> None:
    """Decode one run of contiguous segments; stops a segment at its first corruption and
    carries on with the next segment (its chain link then cannot be checked)."""
    pos = 0
    while pos < len(run):
        part = run[pos:]
        try:
            for read in read_segments(part):
                pos += 1
                wal.segments += 1
                path = read.segment.path
                for rec in read.scan.records:
                    wal.records += 1
                    _decode_record(rec.type, rec.data, path, rec.offset, wal, result)
                if read.torn is not None:
                    result.add(
                        Finding(
                            Severity.WARNING,
                            path,
                            f"{TORN_TAIL}: {read.torn.reason}",
                            read.torn.offset,
                        )
                    )
        except WALCorruptionError as exc:
            wal.segments += 1
            if exc.offset:
                _read_valid_prefix(exc.path, exc.offset, wal, result)
            wal.corrupt = wal.resync = True
            result.add(Finding(Severity.CORRUPT, exc.path, exc.reason, exc.offset))
            pos = next((k + 1 for k, s in enumerate(run) if s.path == exc.path), len(run))


def _read_valid_prefix(path: str, end: int, wal: WalContents, result: CheckResult) -> None:
    """Decode the records of a corrupt segment that precede its damage at ``end``."""
    with open(path, "rb") as f:
        scan = scan_segment(f.read(), None)
    for rec in scan.records:
        if rec.offset >= end:
            break
        wal.records += 1
        _decode_record(rec.type, rec.data, path, rec.offset, wal, result)


def _decode_record(
    rtype: RecordType,
    data: memoryview,
    path: str,
    offset: int,
    wal: WalContents,
    result: CheckResult,
) -> None:
    try:
        if rtype == RecordType.ENTRY:
            _add_entry(wal, decode_entry(data), path, offset, result)
        elif rtype == RecordType.HARD_STATE:
            wal.hard_state = decode_hard_state(data)
        elif rtype == RecordType.SNAPSHOT:
            m = decode_snapshot_metadata(data)
            _add_marker(wal, WalSnapshot(m.index, m.term, m.conf_state))
        elif rtype == RecordType.METADATA:
            ids = decode_metadata(bytes(data))
            if ids is None:
                raise CodecError(f"metadata of {len(data)} bytes is not member/cluster IDs")
            if wal.member_id is None:
                wal.member_id, wal.cluster_id = ids
            elif ids != (wal.member_id, wal.cluster_id):
                wal.corrupt = True
                result.add(
                    Finding(
                        Severity.CORRUPT,
                        path,
                        f"metadata conflict: member {ids[0]:x} cluster {ids[1]:x}, earlier "
                        f"segments say member {wal.member_id:x} cluster {wal.cluster_id:x}",
                        offset,
                    )
                )
    except CodecError as exc:
        wal.corrupt = True
        result.add(Finding(Severity.CORRUPT, path, f"undecodable {rtype.name}: {exc}", offset))


def check_wal(wal_dir: str) -> tuple[CheckResult, WalContents]:
    """Verify every segment under ``wal_dir``."""
    result = CheckResult("wal")
    wal = WalContents()
    if not os.path.isdir(wal_dir):
        result.add(Finding(Severity.UNKNOWN, wal_dir, "no WAL directory"))
        return result, wal
    runs = _list_segments(wal_dir, result)
    if not runs:
        result.add(Finding(Severity.UNKNOWN, wal_dir, "no WAL segment"))
        return result, wal
    for run in runs:
        if run is not runs[0]:
            wal.corrupt = wal.resync = True
        _read_run(run, wal, result)
    ids = (
        f"member {wal.member_id:x} cluster {wal.cluster_id:x}"
        if wal.member_id is not None and wal.cluster_id is not None
        else "no metadata"
    )
    span = f"entries {wal.first_index}..{wal.last_index}" if wal.entries else "no entries"
    hs = wal.hard_state
    result.summary = (
        f"{wal.segments} segment(s), {wal.records} record(s), {span}, "
        f"commit {hs.commit} term {hs.term}, {ids}"
    )
    result.details = {
        "segments": wal.segments,
        "records": wal.records,
        "first_index": wal.first_index,
        "last_index": wal.last_index,
        "commit": hs.commit,
        "term": hs.term,
        "member_id": f"{wal.member_id:x}" if wal.member_id is not None else None,
        "cluster_id": f"{wal.cluster_id:x}" if wal.cluster_id is not None else None,
        "snapshot_markers": [m.index for m in wal.markers],
    }
    if wal.member_id is None and not wal.corrupt:
        wal.corrupt = True
        result.add(Finding(Severity.CORRUPT, wal_dir, "no metadata record in any segment"))
    return result, wal


# -- LMDB ---------------------------------------------------------------------------------


@dataclass
class BackendInfo:
    """What an LMDB backend's meta bucket says; ``readable`` is False when any value failed."""

    path: str
    readable: bool = False
    consistent_index: int | None = None
    term: int | None = None
    digest_head: tuple[int, bytes] | None = None
    values: dict[str, int] = field(default_factory=dict)


def _decode_meta(key: bytes, payload: bytes) -> str | None:
    """Why a meta record does not decode, or None."""
    if key in (META_CONSISTENT_INDEX, META_TERM):
        return None if len(payload) == _U64.size else f"{len(payload)} bytes, expected 8"
    if key in (META_SCHEDULED_COMPACT, META_FINISHED_COMPACT):
        return None if len(payload) == REV_BYTES_LEN else f"{len(payload)} bytes, expected 17"
    if key == META_APPLY_DIGEST:
        try:
            decode_head(payload)
        except DigestRecordError as exc:
            return str(exc)
    return None


def _decode_value(bucket: str, key: bytes, payload: bytes) -> str | None:
    """Why a value of the key, lease, members or apply-digest bucket does not decode, or None."""
    try:
        if bucket == BUCKET_APPLY_DIGEST:
            if len(key) != _U64.size or not payload or len(payload) % DIGEST_SIZE:
                return f"apply digest history chunk of {len(key)}+{len(payload)} bytes"
            return None
        if bucket == BUCKET_KEY:
            if len(key) != REV_BYTES_LEN and not is_tombstone(key):
                return f"revision key of {len(key)} bytes"
            kv = decode_kv(payload)
            if not is_tombstone(key) and kv.mod_revision != bytes_to_rev(key) >> SUB_BITS:
                return f"record says mod_revision {kv.mod_revision}"
        elif bucket == BUCKET_LEASE:
            lease = decode_lease(payload)
            if len(key) != _U64.size or lease.id != _U64.unpack(key)[0]:
                return f"lease record {lease.id:x} stored under key {key.hex()}"
        elif bucket == BUCKET_MEMBERS and not isinstance(json.loads(payload.decode()), dict):
            return "member record is not a JSON object"
    except (struct.error, UnicodeDecodeError, ValueError, LeaseCorruptError) as exc:
        return f"undecodable record: {exc}"
    return None


def read_lmdb(
    path: str, *, subdir: bool = True, name: str = "backend"
) -> tuple[CheckResult, BackendInfo]:
    """Verify every value of every bucket of the LMDB environment at ``path`` (a directory
    holding ``data.mdb``, or with ``subdir=False`` a single file such as ``*.snap.db``)."""
    result = CheckResult(name)
    info = BackendInfo(path)
    data_file = os.path.join(path, "data.mdb") if subdir else path
    if not os.path.isfile(data_file):
        result.add(Finding(Severity.UNKNOWN, data_file, "no LMDB data file"))
        return result, info
    try:
        env: Any = lmdb.open(
            path, subdir=subdir, readonly=True, lock=False, max_dbs=64, readahead=False
        )
    except lmdb.Error as exc:
        result.add(Finding(Severity.CORRUPT, data_file, f"cannot open LMDB: {exc}"))
        return result, info
    bad = 0
    try:
        with env.begin(buffers=False) as txn:
            buckets = [k for k, _v in txn.cursor()]
            for raw_name in buckets:
                bucket = raw_name.decode(errors="replace")
                db = env.open_db(raw_name, txn=txn, create=False)
                count = 0
                for key, stored in txn.cursor(db=db):
                    count += 1
                    problem: str | None
                    try:
                        payload = unseal(bucket, key, stored)
                        problem = (
                            _decode_meta(key, payload)
                            if bucket == BUCKET_META
                            else _decode_value(bucket, key, payload)
                        )
                        if problem is None and bucket == BUCKET_META:
                            _read_meta(info, key, payload)
                    except BackendCorruptionError as exc:
                        problem = str(exc).rsplit(": ", 1)[-1]
                    if problem is None:
                        continue
                    bad += 1
                    if bad <= MAX_FINDINGS_PER_BUCKET:
                        result.add(Finding(Severity.CORRUPT, data_file, problem, None, bucket, key))
                info.values[bucket] = count
    except lmdb.Error as exc:
        bad += 1
        result.add(Finding(Severity.CORRUPT, data_file, f"LMDB read failed: {exc}"))
    finally:
        env.close()
    if bad > MAX_FINDINGS_PER_BUCKET:
        result.add(
            Finding(
                Severity.CORRUPT,
                data_file,
                f"{bad - MAX_FINDINGS_PER_BUCKET} more bad value(s) not listed",
            )
        )
    info.readable = bad == 0
    head = info.digest_head
    total = sum(info.values.values())
    result.summary = (
        f"{len(info.values)} bucket(s), {total} value(s), consistent index "
        f"{info.consistent_index}, term {info.term}, apply digest head "
        + (f"{head[0]} {head[1].hex()}" if head is not None else "none")
    )
    result.details = {
        "path": data_file,
        "values": dict(info.values),
        "consistent_index": info.consistent_index,
        "term": info.term,
        "apply_digest_index": head[0] if head is not None else None,
        "apply_digest": head[1].hex() if head is not None else None,
    }
    return result, info


def _read_meta(info: BackendInfo, key: bytes, payload: bytes) -> None:
    if key == META_CONSISTENT_INDEX:
        info.consistent_index = _U64.unpack(payload)[0]
    elif key == META_TERM:
        info.term = _U64.unpack(payload)[0]
    elif key == META_APPLY_DIGEST:
        info.digest_head = decode_head(payload)


# -- snapshots ----------------------------------------------------------------------------


@dataclass
class SnapFiles:
    """The valid raft snapshots by index, and the backend copies (``*.snap.db``) read."""

    snapshots: dict[int, Snapshot] = field(default_factory=dict)
    backends: list[BackendInfo] = field(default_factory=list)


def check_snapshots(snap_dir: str) -> tuple[CheckResult, SnapFiles]:
    """Verify every ``*.snap`` and ``*.snap.db`` file of ``snap_dir``."""
    result = CheckResult("snap")
    files = SnapFiles()
    if not os.path.isdir(snap_dir):
        result.summary = "no snapshot directory"
        return result, files
    names = sorted(os.listdir(snap_dir))
    for name in names:
        path = os.path.join(snap_dir, name)
        if name.endswith(".snap"):
            _check_snap_file(path, name, result, files)
        elif name.endswith(".snap.db"):
            sub, info = read_lmdb(path, subdir=False, name="snap.db")
            result.findings.extend(sub.findings)
            if info.readable:
                files.backends.append(info)
    indexes = sorted(files.snapshots)
    result.summary = (
        f"{len(indexes)} snapshot file(s) at index {indexes}, "
        f"{len(files.backends)} readable backend copy(ies)"
    )
    result.details = {
        "snapshots": indexes,
        "backend_copies": {os.path.basename(b.path): b.consistent_index for b in files.backends},
    }
    return result, files


def _check_snap_file(path: str, name: str, result: CheckResult, files: SnapFiles) -> None:
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        result.add(Finding(Severity.UNKNOWN, path, f"unreadable: {exc}"))
        return
    try:
        snap = decode_snapshot_file(path, data)
    except SnapshotCorruptionError as exc:
        result.add(Finding(Severity.CORRUPT, path, exc.reason))
        return
    meta = snap.metadata
    parsed = parse_snapshot_name(name)
    if parsed is not None and parsed != (meta.term, meta.index):
        result.add(
            Finding(
                Severity.CORRUPT,
                path,
                f"file name disagrees with metadata term {meta.term} index {meta.index}",
            )
        )
        return
    files.snapshots[meta.index] = snap
