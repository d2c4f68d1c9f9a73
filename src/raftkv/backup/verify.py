"""Verifying backups: every stored file restored with the real restore code and its state
compared with the cluster's (right after it is written) or with what was recorded then (later).

Owns: decompressing a stored full backup (``decompress_file``, which refuses a truncated,
bit-flipped or empty zstd file with ``BackupFileError``), SHA-256 of stored files, restoring a
snapshot into a scratch directory (``restore_state``), the comparison rules
(``judge_live``, ``judge_recorded``) and the two verifications (``verify_full``,
``verify_chain``) returning a ``Verification``; nothing here raises for a bad backup, the
result says what failed.

Comparison rules: the restored member's ``revision``, ``compact_revision`` and ``keys`` (etcd's
HashKV of the key bucket at that revision) against

- a live healthy member's ``HashKV(revision=R)`` when R is not compacted there and both compact
  revisions agree: equal hash, verified ("HashKV at R matches member X"); different, failed;
- otherwise the snapshot's own recorded state hash, which ``restore_snapshot`` already checked
  (method "verified against the snapshot's recorded state hash only"), or, for a merge of a
  full and deltas, the restore alone ("replayed and restored; live HashKV not comparable");
- offline (``raftkv backup verify``): the state recorded in the manifest when the backup was
  verified; any difference fails.
"""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import zstandard

from raftkv.backup.bbolt import BoltFormatError
from raftkv.backup.delta import Delta, DeltaFormatError, MergeError, merge_snapshot
from raftkv.backup.etcd_schema import SnapshotContentError
from raftkv.backup.manifest import RecordedState
from raftkv.backup.restore import RestoreError, RestoreOptions, RestoreResult, restore_snapshot
from raftkv.backup.snapshot_file import SnapshotFileError, open_snapshot
from raftkv.backup.source import LiveHash
from raftkv.server.config import ConfigError

LiveLookup = Callable[[int], LiveHash | str]

RESTORE_ERRORS = (
    RestoreError,
    SnapshotFileError,
    SnapshotContentError,
    BoltFormatError,
    ConfigError,
    DeltaFormatError,
    MergeError,
    OSError,
)


class BackupFileError(Exception):
    """A stored backup file is damaged (truncated, bit-flipped, empty); names the file."""


@dataclass(frozen=True)
class Verification:
    ok: bool
    method: str  # how it was verified ("" when it failed)
    error: str  # why it failed ("" when ok)
    state: RecordedState | None
    seconds: float


def decompress_file(src: str, dst: str) -> int:
    """Decompress the single zstd frame in ``src`` into the new file ``dst``; returns its
    size.  BackupFileError (naming ``src``) for an empty, truncated or corrupted frame."""
    if os.path.getsize(src) == 0:
        raise BackupFileError(f"{src}: empty file")
    dobj = zstandard.ZstdDecompressor().decompressobj()
    size = 0
    try:
        with open(src, "rb") as fin, open(dst, "xb") as fout:
            while chunk := fin.read(1 << 20):
                if dobj.eof:
                    raise BackupFileError(f"{src}: data after the zstd frame")
                out = dobj.decompress(chunk)
                fout.write(out)
                size += len(out)
            if not dobj.eof:
                raise BackupFileError(f"{src}: truncated (the zstd frame does not end)")
            if dobj.unused_data:
                raise BackupFileError(f"{src}: data after the zstd frame")
    except zstandard.ZstdError as exc:
        raise BackupFileError(f"{src}: corrupt zstd data: {exc}") from None
    return size


def restore_state(snapshot: str, workdir: str) -> RestoreResult:
    """Restore ``snapshot`` into a scratch member directory under ``workdir`` (removed
    afterwards) with the full checks (SHA-256 trailer, bbolt structure, recorded state)."""
    target = tempfile.mkdtemp(prefix="verify-", dir=workdir)
    try:
        return restore_snapshot(
            RestoreOptions(
                snapshot=snapshot,
                name="verify",
                data_dir=os.path.join(target, "member"),
                initial_cluster="verify=http://127.0.0.1:2380",
                initial_cluster_token="raftkv-backup-verify",
                initial_advertise_peer_urls=("http://127.0.0.1:2380",),
            )
        )
    finally:
        shutil.rmtree(target, ignore_errors=True)


def recorded(result: RestoreResult) -> RecordedState:
    s = result.state
    return RecordedState(s.revision, s.compact_revision, s.keys, s.value.hex())


def judge_live(state: RecordedState, live: LiveHash | str, fallback: str) -> tuple[bool, str]:
    """(ok, method or error) of ``state`` against a live member's HashKV (module docstring)."""
    if isinstance(live, str):
        return True, f"{fallback} (live HashKV not available: {live})"
    if live.compact_revision != state.compact_revision:
        return True, (
            f"{fallback} (compacted at {live.compact_revision} on {live.endpoint}, "
            f"{state.compact_revision} in the backup)"
        )
    if live.hash != state.keys:
        return False, (
            f"HashKV at revision {state.revision}: {state.keys:#010x} restored, "
            f"{live.hash:#010x} on {live.endpoint}"
        )
    return True, f"HashKV at revision {state.revision} matches {live.endpoint}"


def judge_recorded(state: RecordedState, want: RecordedState | None) -> tuple[bool, str]:
    if want is None:
        return True, "restored (no state recorded at backup time)"
    differ = [
        f"{part} {getattr(state, part)} restored, {getattr(want, part)} recorded"
        for part in ("revision", "compact_revision", "keys")
        if getattr(state, part) != getattr(want, part)
    ]
    if differ:
        return False, "; ".join(differ)
    return True, f"restored state at revision {state.revision} matches the manifest"


def verify_full(
    stored: str,
    workdir: str,
    live: LiveLookup | None,
    want: RecordedState | None,
    keep_db: str = "",
) -> Verification:
    """Decompress, restore and judge the full backup ``stored``; with ``keep_db`` the
    decompressed snapshot stays there (for deltas to be merged onto)."""
    t0 = time.monotonic()
    db = keep_db or os.path.join(workdir, "full-verify.db")
    try:
        decompress_file(stored, db)
        result = restore_state(db, workdir)
        state = recorded(result)
        fallback = (
            "verified against the snapshot's recorded state hash only"
            if result.verified
            else "restored; no state hash recorded in the snapshot"
        )
        if live is not None:
            ok, how = judge_live(state, live(state.revision), fallback)
        else:
            ok, how = judge_recorded(state, want)
    except (BackupFileError, *RESTORE_ERRORS) as exc:
        if os.path.exists(db):
            os.unlink(db)
        return Verification(False, "", f"{stored}: {exc}", None, time.monotonic() - t0)
    if not keep_db or not ok:
        os.unlink(db)
    seconds = time.monotonic() - t0
    return Verification(ok, how if ok else "", "" if ok else how, state, seconds)


def verify_chain(
    full_db: str,
    full_revision: int,
    deltas: Sequence[Delta],
    leases: Sequence[tuple[int, int]],
    workdir: str,
    live: LiveLookup | None,
    want: RecordedState | None,
    to_revision: int | None = None,
) -> Verification:
    """Replay ``deltas`` onto the decompressed full ``full_db`` up to ``to_revision`` (default:
    the last delta's end), restore the merge and judge it."""
    t0 = time.monotonic()
    end = to_revision if to_revision is not None else deltas[-1].to_revision
    merged = os.path.join(workdir, f"merged-{secrets.token_hex(6)}.db")
    try:
        with open_snapshot(full_db) as reader:
            merge_snapshot(reader, full_revision, deltas, end, leases, merged)
        state = recorded(restore_state(merged, workdir))
        fallback = "replayed onto the full backup and restored"
        if live is not None:
            ok, how = judge_live(state, live(state.revision), fallback)
        else:
            ok, how = judge_recorded(state, want)
    except RESTORE_ERRORS as exc:
        return Verification(False, "", str(exc), None, time.monotonic() - t0)
    finally:
        if os.path.exists(merged):
            os.unlink(merged)
    seconds = time.monotonic() - t0
    return Verification(ok, how if ok else "", "" if ok else how, state, seconds)
