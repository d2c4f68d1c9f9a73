"""The backup manifest: ``manifest.json``, the one record of which backups exist and which count.

Owns the entry schema, its JSON encoding and decoding (``encode_manifest``, ``decode_manifest``,
raising ``ManifestError`` naming the source), the chain queries the agent, retention and
point-in-time restore use (``fulls``, ``chain``, ``newest_verified_full``), and the atomic
write of a manifest file (``write_file_atomic``: a temporary file in the same directory,
fsynced, renamed over the old one, the directory fsynced; a reader sees the old manifest or
the new one, never a mix).

Schema (``version`` 1)::

    {"version": 1, "backups": [entry, ...]}    # entries in the order they were taken

    entry = {"id", "kind": "full"|"delta", "file", "base": full id (deltas; "" for fulls),
             "prev": the entry a delta continues (its full or the previous delta),
             "from_revision", "to_revision",   # a full covers [0, R]; a delta (from, to]
             "sha256" (of the stored file), "size_raw", "size_compressed",
             "state": {"revision", "compact_revision", "keys", "value"} | null,
             "verified": bool, "verify_method": str, "verify_error": str,
             "started", "finished", "cut_time" (RFC 3339 UTC),
             "duration_seconds", "verify_seconds", "events", "source"}

Contract: only entries with ``verified`` true count (for retention's protection, chains and
restores); a failed entry keeps its record with ``verified`` false and its file in
``failed/``.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from raftkv.wal.files import fsync_dir

MANIFEST_NAME = "manifest.json"
MANIFEST_VERSION = 1
KIND_FULL = "full"
KIND_DELTA = "delta"
FAILED_DIR = "failed"


class ManifestError(Exception):
    """A manifest that cannot be read; the message names its source."""


def now_rfc3339() -> str:
    return format_time(datetime.now(UTC).timestamp())


def format_time(ts: float) -> str:
    """RFC 3339 in UTC with microseconds (``2024-05-01T10:00:00.123456Z``)."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def microsecond_at_or_after(ts: float) -> float:
    """``ts`` rounded up to a whole microsecond, the precision of ``format_time``: a time
    kept as a float and its RFC 3339 text then compare alike."""
    exact = parse_time(format_time(ts))
    return exact if exact >= ts else parse_time(format_time(ts + 1e-6))


def parse_time(text: str) -> float:
    """Seconds since the epoch from RFC 3339 (``Z`` or an offset; naive means UTC) or a bare
    number of seconds; ValueError otherwise."""
    try:
        return float(text)
    except ValueError:
        pass
    value = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.timestamp()


@dataclass(frozen=True)
class RecordedState:
    """What a verification saw of the restored state: enough to re-verify offline."""

    revision: int
    compact_revision: int
    keys: int  # etcd's HashKV of the key bucket at ``revision``
    value: str  # hex of the restored member's state hash (informative)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> RecordedState:
        return cls(
            int(raw["revision"]), int(raw["compact_revision"]), int(raw["keys"]), str(raw["value"])
        )


@dataclass(frozen=True)
class BackupEntry:
    id: str
    kind: str
    file: str
    from_revision: int
    to_revision: int
    sha256: str
    size_raw: int
    size_compressed: int
    started: str
    finished: str
    cut_time: str  # the moment the backup was known to cover ``to_revision``
    base: str = ""
    prev: str = ""
    state: RecordedState | None = None
    verified: bool = False
    verify_method: str = ""
    verify_error: str = ""
    duration_seconds: float = 0.0
    verify_seconds: float = 0.0
    events: int = 0
    source: str = ""  # the endpoint it was taken from

    @property
    def cut_ts(self) -> float:
        return parse_time(self.cut_time)

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["state"] = self.state.to_dict() if self.state is not None else None
        return out

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> BackupEntry:
        names = {f.name for f in dataclasses.fields(cls)}
        missing = [n for n in ("id", "kind", "file", "to_revision") if n not in raw]
        if missing:
            raise ValueError(f"entry without {', '.join(missing)}")
        kwargs = {k: v for k, v in raw.items() if k in names}
        state = raw.get("state")
        kwargs["state"] = RecordedState.from_dict(state) if state else None
        if raw["kind"] not in (KIND_FULL, KIND_DELTA):
            raise ValueError(f"entry {raw['id']!r}: unknown kind {raw['kind']!r}")
        entry = cls(**kwargs)
        for name in ("from_revision", "to_revision", "size_raw", "size_compressed", "events"):
            if not isinstance(getattr(entry, name), int):
                raise ValueError(f"entry {entry.id!r}: {name} is not an integer")
        return entry


@dataclass
class Manifest:
    backups: list[BackupEntry] = field(default_factory=list)

    def get(self, backup_id: str) -> BackupEntry | None:
        for entry in self.backups:
            if entry.id == backup_id:
                return entry
        return None

    def put(self, entry: BackupEntry) -> None:
        """Add ``entry``, or replace the entry with its ID in place."""
        for i, old in enumerate(self.backups):
            if old.id == entry.id:
                self.backups[i] = entry
                return
        self.backups.append(entry)

    def remove(self, ids: Iterable[str]) -> None:
        drop = set(ids)
        self.backups = [e for e in self.backups if e.id not in drop]

    def fulls(self, verified_only: bool = True) -> list[BackupEntry]:
        """Full backups, oldest first."""
        return [
            e for e in self.backups if e.kind == KIND_FULL and (e.verified or not verified_only)
        ]

    def newest_verified_full(self) -> BackupEntry | None:
        fulls = self.fulls()
        return max(fulls, key=lambda e: (e.to_revision, e.finished)) if fulls else None

    def chain(self, full_id: str, verified_only: bool = True) -> list[BackupEntry]:
        """The deltas that continue full ``full_id``, in order, following ``prev`` links from
        the full; stops at the first gap (a missing or, with ``verified_only``, unverified
        link), so every returned delta can be replayed."""
        deltas = {e.prev: e for e in self.backups if e.kind == KIND_DELTA and e.base == full_id}
        out: list[BackupEntry] = []
        at = full_id
        while at in deltas:
            nxt = deltas[at]
            if verified_only and not nxt.verified:
                break
            out.append(nxt)
            at = nxt.id
        return out

    def dependents(self, full_id: str) -> list[BackupEntry]:
        """Every delta recorded against ``full_id`` (verified or not)."""
        return [e for e in self.backups if e.kind == KIND_DELTA and e.base == full_id]


def encode_manifest(manifest: Manifest) -> bytes:
    obj = {"version": MANIFEST_VERSION, "backups": [e.to_dict() for e in manifest.backups]}
    return (json.dumps(obj, indent=1, sort_keys=True) + "\n").encode()


def decode_manifest(data: bytes, source: str) -> Manifest:
    """The manifest in ``data``; ManifestError naming ``source`` when it is not one."""
    try:
        obj = json.loads(data.decode())
        if not isinstance(obj, dict):
            raise ValueError("not a JSON object")
        version = obj.get("version")
        if version != MANIFEST_VERSION:
            raise ValueError(f"manifest version {version!r}, this raftkv reads {MANIFEST_VERSION}")
        raw = obj.get("backups")
        if not isinstance(raw, list):
            raise ValueError("no backups list")
        entries = [BackupEntry.from_dict(e) for e in raw]
    except (ValueError, TypeError, KeyError, UnicodeDecodeError) as exc:
        raise ManifestError(f"{source}: not a backup manifest: {exc}") from None
    ids = [e.id for e in entries]
    if len(set(ids)) != len(ids):
        raise ManifestError(f"{source}: a backup ID is recorded twice")
    return Manifest(entries)


def write_file_atomic(path: str, data: bytes) -> None:
    """Replace ``path`` by ``data``: temp file beside it, fsync, rename, fsync the directory.
    A crash at any point leaves the old file or the new one under ``path``."""
    directory = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(directory, f".{os.path.basename(path)}.tmp-{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    fsync_dir(directory)


def read_manifest_file(path: str) -> Manifest:
    """The manifest at ``path``; an empty one when the file does not exist."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return Manifest()
    return decode_manifest(data, path)
