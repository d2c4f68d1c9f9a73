"""Point-in-time restore and offline re-verification of a backup destination.

Owns: choosing what a point needs (``plan_point``: the newest verified full at or before the
point and the verified deltas after it up to the point), building the snapshot of exactly that
revision (``build_point_snapshot``: the full decompressed, the deltas' events replayed with
``merge_snapshot``, the lease table of the point), the restore itself (``restore_point``,
``RestoreOptions`` as ``raftkv snapshot restore``), and ``verify_destination`` (``raftkv
backup verify``: every verified backup's SHA-256, zstd frame, delta records and restore
checked again, and the restored state compared with the one recorded when it was taken).

The lease table at a revision R inside a delta is the table recorded at the cut after R (the
delta's own) plus every lease a key live at R is attached to (TTL from an earlier cut, or the
minimum TTL for a lease granted and revoked between two cuts).  Grants and revokes are not
in the watch stream, so a lease without keys granted after R or revoked between R and the
cut is restored, or not, as the cut saw it.
A point-in-time restore of a ``--to-time`` maps the time to the last revision whose events
the agent had received by then (``received`` in the delta), or a cut's revision.

Errors: ``PitrError`` with a message naming the point or the file; damaged files raise the
verification errors (``BackupFileError``, ``DeltaFormatError``) with the file named.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace

from raftkv.backup.delta import Delta, merge_snapshot, read_delta_file
from raftkv.backup.destination import Destination
from raftkv.backup.etcd_schema import B_LEASE, decode_varint_fields
from raftkv.backup.manifest import BackupEntry, Manifest, format_time
from raftkv.backup.restore import RestoreOptions, RestoreResult, restore_snapshot
from raftkv.backup.snapshot_file import open_snapshot, sha256_file
from raftkv.backup.verify import (
    RESTORE_ERRORS,
    BackupFileError,
    decompress_file,
    judge_recorded,
    recorded,
    restore_state,
    verify_chain,
)


class PitrError(Exception):
    """The point cannot be restored from these backups; the message says why."""


@dataclass(frozen=True)
class RestorePlan:
    full: BackupEntry
    deltas: tuple[BackupEntry, ...]
    revision: int  # -1: resolve from ``to_time`` once the deltas are read
    to_time: float | None = None


def _coverage(manifest: Manifest) -> str:
    spans = []
    for full in manifest.fulls():
        chain = manifest.chain(full.id)
        end = chain[-1].to_revision if chain else full.to_revision
        spans.append(f"{full.to_revision}..{end} (from {full.id})")
    return ", ".join(spans) or "nothing (no verified full backup)"


def plan_point(
    manifest: Manifest, to_revision: int | None = None, to_time: float | None = None
) -> RestorePlan:
    """What restoring to ``to_revision`` or ``to_time`` needs (exactly one is given)."""
    fulls = sorted(manifest.fulls(), key=lambda e: (e.to_revision, e.cut_ts), reverse=True)
    if to_revision is not None:
        for full in fulls:
            if full.to_revision > to_revision:
                continue
            needed = []
            reach = full.to_revision
            for delta in manifest.chain(full.id):
                if reach >= to_revision:
                    break
                needed.append(delta)
                reach = delta.to_revision
            if reach >= to_revision:
                return RestorePlan(full, tuple(needed), to_revision)
        raise PitrError(
            f"revision {to_revision} is not covered by a verified backup; covered: "
            f"{_coverage(manifest)}"
        )
    assert to_time is not None
    for full in sorted(manifest.fulls(), key=lambda e: e.cut_ts, reverse=True):
        if full.cut_ts > to_time:
            continue
        chain = manifest.chain(full.id)
        last = chain[-1] if chain else full
        newer = [f for f in manifest.fulls() if f.cut_ts > to_time]
        if to_time > last.cut_ts and not newer:
            raise PitrError(
                f"time {format_time(to_time)} is after the newest backup (cut at "
                f"{last.cut_time}, revision {last.to_revision})"
            )
        needed = []
        for delta in chain:
            needed.append(delta)
            if delta.cut_ts >= to_time:
                break
        return RestorePlan(full, tuple(needed), -1, to_time)
    raise PitrError(f"no verified full backup was taken at or before {format_time(to_time)}")


def _revision_at(plan: RestorePlan, deltas: list[Delta]) -> int:
    """The revision of ``plan.to_time``: the last one received by then."""
    assert plan.to_time is not None
    revision = plan.full.to_revision
    for delta in deltas:
        if delta.cut_time <= plan.to_time:
            revision = delta.to_revision
            continue
        for group in delta.groups:
            if group.received <= plan.to_time:
                revision = group.revision
        break
    return revision


def full_leases(snapshot: str) -> dict[int, int]:
    """Lease ID -> TTL of a snapshot's lease bucket."""
    out = {}
    with open_snapshot(snapshot) as reader:
        if B_LEASE in reader.buckets():
            for _key, value in reader.items(B_LEASE):
                fields = decode_varint_fields(value)
                out[fields.get(1, 0)] = fields.get(2, 0)
    return out


def leases_at(
    revision: int, full_table: dict[int, int], deltas: list[Delta]
) -> tuple[list[tuple[int, int]], dict[int, int]]:
    """The lease table of the cut at or after ``revision`` (the full's at its own revision),
    and the TTLs known from earlier cuts for leases that live keys name but that table lacks
    (see ``merge_snapshot``)."""
    known = dict(full_table)
    for delta in deltas:
        if revision <= delta.to_revision:
            return sorted(delta.leases), known
        known.update(delta.leases)
    return sorted(known.items()), known


def fetch_checked(dest: Destination, entry: BackupEntry, workdir: str) -> str:
    """A local copy of ``entry``'s file whose SHA-256 matches the manifest."""
    local = dest.local_copy(entry.file, workdir)
    got = sha256_file(local)
    if got != entry.sha256:
        raise BackupFileError(
            f"{local}: SHA-256 {got} differs from the manifest's {entry.sha256} (damaged file)"
        )
    return local


@dataclass(frozen=True)
class PointSnapshot:
    path: str
    revision: int
    merged: bool  # False: the full backup itself (its recorded state hash is checked)
    deltas: int


def build_point_snapshot(dest: Destination, plan: RestorePlan, workdir: str) -> PointSnapshot:
    """The snapshot file of exactly the planned point, inside ``workdir``."""
    full_db = os.path.join(workdir, "full.db")
    decompress_file(fetch_checked(dest, plan.full, workdir), full_db)
    deltas = [read_delta_file(fetch_checked(dest, e, workdir)) for e in plan.deltas]
    revision = plan.revision if plan.to_time is None else _revision_at(plan, deltas)
    if revision == plan.full.to_revision:
        return PointSnapshot(full_db, revision, False, 0)
    used = [d for d in deltas if d.from_revision < revision]
    leases, known = leases_at(revision, full_leases(full_db), used)
    merged = os.path.join(workdir, f"point-{revision}.db")
    with open_snapshot(full_db) as reader:
        merge_snapshot(reader, plan.full.to_revision, used, revision, leases, merged, known)
    os.unlink(full_db)
    return PointSnapshot(merged, revision, True, len(used))


def restore_point(
    dest: Destination,
    manifest: Manifest,
    opts: RestoreOptions,
    to_revision: int | None = None,
    to_time: float | None = None,
    log: Callable[[str], None] = lambda _m: None,
) -> tuple[RestoreResult, PointSnapshot, RestorePlan]:
    plan = plan_point(manifest, to_revision, to_time)
    workdir = tempfile.mkdtemp(prefix="raftkv-pitr-")
    try:
        point = build_point_snapshot(dest, plan, workdir)
        log(
            f"restoring revision {point.revision} from full backup {plan.full.id} and "
            f"{point.deltas} deltas"
        )
        result = restore_snapshot(replace(opts, snapshot=point.path), log=log)
        return result, point, plan
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


@dataclass(frozen=True)
class Checked:
    entry: BackupEntry
    ok: bool
    detail: str


def verify_destination(dest: Destination, manifest: Manifest) -> Iterator[Checked]:
    """Re-verify every verified backup (module docstring); yields one result per entry."""
    for full in manifest.fulls():
        workdir = tempfile.mkdtemp(prefix="raftkv-verify-")
        try:
            yield from _verify_full_chain(dest, manifest, full, workdir)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)


def _verify_full_chain(
    dest: Destination, manifest: Manifest, full: BackupEntry, workdir: str
) -> Iterator[Checked]:
    full_db = os.path.join(workdir, "full.db")
    chain = manifest.chain(full.id)
    try:
        decompress_file(fetch_checked(dest, full, workdir), full_db)
        ok, detail = judge_recorded(recorded(restore_state(full_db, workdir)), full.state)
    except (BackupFileError, *RESTORE_ERRORS) as exc:
        ok, detail = False, str(exc)
    yield Checked(full, ok, detail)
    if not ok:
        for entry in chain:
            yield Checked(entry, False, f"its full backup {full.file} failed verification")
        return
    deltas: list[Delta] = []
    broken = ""
    for entry in chain:
        if broken:
            yield Checked(entry, False, broken)
            continue
        try:
            deltas.append(read_delta_file(fetch_checked(dest, entry, workdir)))
        except (BackupFileError, *RESTORE_ERRORS) as exc:
            broken = f"an earlier delta of the chain failed: {entry.file}"
            yield Checked(entry, False, str(exc))
            continue
        check = verify_chain(
            full_db, full.to_revision, deltas, deltas[-1].leases, workdir, None, entry.state
        )
        if not check.ok:
            broken = f"an earlier delta of the chain failed: {entry.file}"
        yield Checked(entry, check.ok, check.method or check.error)
