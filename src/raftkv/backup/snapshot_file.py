"""Snapshot files: an etcd-format (bbolt) database followed by its SHA-256, as etcd writes them.

Owns: writing the database of a snapshot from a raftkv backend (``write_snapshot_db``), the
SHA-256 trailer rule, opening a snapshot file with its integrity checked (``open_snapshot``)
and etcd's ``snapshot status`` figures (``snapshot_status``).

File layout (``etcdctl snapshot save``'s): the bbolt database, a multiple of its page size,
then, when the file came through ``Maintenance.Snapshot``, the 32-byte SHA-256 of the
database.  As etcd decides it: a file whose size modulo 512 is 32 carries the trailer.

Errors: ``SnapshotFileError`` with etcd's messages (``snapshot missing hash but
--skip-hash-check=false``, ``expected sha256 [..], got [..]``); a damaged database raises the
bbolt reader's ``BoltFormatError`` (path and offset); a value that is not etcd's encoding
``SnapshotContentError`` (bucket and key).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from typing import Any, BinaryIO

import crc32c

from raftkv.backup.bbolt import BoltFormatError, BoltReader, write_bolt
from raftkv.backup.etcd_schema import (
    B_KEY,
    B_RAFTKV,
    K_APPLY_DIGEST,
    K_FORMAT_VERSION,
    K_RAFTKV_VERSION,
    K_STATE_HASH,
    export_buckets,
)
from raftkv.fileutil import PRIVATE_FILE_MODE
from raftkv.guard.digest import DigestRecordError, decode_head
from raftkv.guard.state_hash import StateHash
from raftkv.mvcc.backend import ReadTxn
from raftkv.mvcc.revision import bytes_to_rev

SHA256_LEN = 32

SNAPSHOT_FORMAT_METADATA = "raftkv-snapshot-format"
"""gRPC request metadata of ``Maintenance.Snapshot`` choosing the stream's format: absent (or
``etcd``) for the etcd-format database every etcd tool reads, ``SNAPSHOT_FORMAT_LMDB`` for a
raftkv member's own LMDB file, which repair installs as it is."""
SNAPSHOT_FORMAT_LMDB = "lmdb"


class SnapshotFileError(Exception):
    """A snapshot file cannot be used; the message is etcd's where etcd has one."""


def has_checksum(size: int) -> bool:
    """etcd's rule: a snapshot whose size modulo 512 is 32 ends with the SHA-256 of the rest."""
    return size % 512 == SHA256_LEN


def write_snapshot_db(tx: ReadTxn, state_hash: StateHash | None, path: str) -> int:
    """Write the etcd-format database of the state ``tx`` reads to a new file ``path`` (mode
    0600), fsynced; returns its size.  Any thread; ``tx`` must stay open until it returns."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, PRIVATE_FILE_MODE)
    with os.fdopen(fd, "w+b") as f:
        size = write_bolt(f, export_buckets(tx, state_hash))
        f.flush()
        os.fsync(f.fileno())
    return size


def go_bytes(data: bytes) -> str:
    """Go's ``%v`` of a byte slice (etcd prints SHA-256 mismatches this way)."""
    return "[" + " ".join(str(b) for b in data) + "]"


class StreamCheck:
    """The SHA-256 trailer of a ``Maintenance.Snapshot`` stream, checked as the stream arrives.

    ``feed`` takes each message's blob and returns the part now known to be database (the
    last 32 bytes seen are held back: they may be the trailer); ``finish``, after the last
    message, raises ``SnapshotFileError`` with etcd's message when the trailer is missing or
    differs, and returns the database's size."""

    def __init__(self) -> None:
        self._digest = hashlib.sha256()
        self._tail = b""
        self.size = 0  # bytes received, trailer included

    def feed(self, blob: bytes) -> bytes:
        self.size += len(blob)
        data = self._tail + blob
        body, self._tail = data[:-SHA256_LEN], data[-SHA256_LEN:]
        self._digest.update(body)
        return body

    def finish(self) -> int:
        if not has_checksum(self.size):
            raise SnapshotFileError(f"sha256 checksum not found [bytes: {self.size}]")
        got = self._digest.digest()
        if got != self._tail:
            raise SnapshotFileError(f"expected sha256 {go_bytes(self._tail)}, got {go_bytes(got)}")
        return self.size - SHA256_LEN


def sha256_prefix(f: BinaryIO, length: int) -> bytes:
    """SHA-256 of the next ``length`` bytes of ``f``; ``SnapshotFileError`` if it has fewer."""
    digest = hashlib.sha256()
    remaining = length
    while remaining:
        chunk = f.read(min(remaining, 1 << 20))
        if not chunk:
            raise SnapshotFileError(f"{getattr(f, 'name', 'file')}: shorter than {length} bytes")
        digest.update(chunk)
        remaining -= len(chunk)
    return digest.digest()


def sha256_file(path: str) -> str:
    """Hex SHA-256 of the whole file ``path``."""
    with open(path, "rb") as f:
        return sha256_prefix(f, os.fstat(f.fileno()).st_size).hex()


def verify_checksum(path: str, skip_hash_check: bool = False) -> int:
    """The length of the database in snapshot file ``path`` (its size less the trailer), with
    the trailer checked against the database unless ``skip_hash_check``."""
    size = os.path.getsize(path)
    if size == 0:
        raise SnapshotFileError(f"{path}: snapshot file is empty")
    if not has_checksum(size):
        if not skip_hash_check:
            raise SnapshotFileError("snapshot missing hash but --skip-hash-check=false")
        return size
    length = size - SHA256_LEN
    if skip_hash_check:
        return length
    with open(path, "rb") as f:
        got = sha256_prefix(f, length)
        want = f.read(SHA256_LEN)
    if got != want:
        raise SnapshotFileError(f"expected sha256 {go_bytes(want)}, got {go_bytes(got)}")
    return length


def open_snapshot(path: str, skip_hash_check: bool = False) -> BoltReader:
    """A reader of snapshot file ``path`` whose trailer and bbolt structure were checked."""
    length = verify_checksum(path, skip_hash_check)
    reader = BoltReader(path, length=length)
    try:
        reader.check()
    except BoltFormatError:
        reader.close()
        raise
    return reader


@dataclass(frozen=True)
class SnapshotStatus:
    """etcd 3.4's ``snapshot status`` figures, plus what a raftkv snapshot records of itself."""

    hash: int  # CRC-32C over every bucket name, key and value, in order (etcd's)
    revision: int  # main revision of the last record of the key bucket
    total_key: int  # records in all buckets (etcd 3.4 counts them all)
    total_size: int  # bytes of the database (its high-water mark)
    format: str  # "raftkv/<n>" for raftkv's snapshots, "etcd" otherwise
    raftkv_version: str
    consistent_index: int
    state_hash: str  # hex of the recorded state hash, "" when none
    apply_digest: str  # hex of the recorded apply digest head, "" when none

    def etcd_fields(self) -> dict[str, Any]:
        return {
            "hash": self.hash,
            "revision": self.revision,
            "totalKey": self.total_key,
            "totalSize": self.total_size,
        }


def snapshot_status(reader: BoltReader) -> SnapshotStatus:
    """The status of an opened (checked) snapshot: one pass over every bucket."""
    h = 0
    total = revision = 0
    for name in reader.buckets():
        h = crc32c.crc32c(name, h)
        is_key = name == B_KEY
        for key, value in reader.items(name):
            h = crc32c.crc32c(value, crc32c.crc32c(key, h))
            total += 1
            if is_key:
                revision = bytes_to_rev(key) >> 32
    raftkv = dict(reader.items(B_RAFTKV)) if B_RAFTKV in reader.buckets() else {}
    fmt = raftkv.get(K_FORMAT_VERSION)
    sh = raftkv.get(K_STATE_HASH)
    index, digest = _digest_head(raftkv.get(K_APPLY_DIGEST))
    if sh is not None:
        try:
            state = StateHash.from_dict(_json(sh))
            index = state.applied_index
            state_hex = state.value.hex()
        except ValueError:
            state_hex = "unreadable"
    else:
        state_hex = ""
    ci = reader.get(b"meta", b"consistent_index") if b"meta" in reader.buckets() else None
    return SnapshotStatus(
        hash=h,
        revision=revision,
        total_key=total,
        total_size=reader.size,
        format=f"raftkv/{fmt.decode(errors='replace')}" if fmt is not None else "etcd",
        raftkv_version=raftkv.get(K_RAFTKV_VERSION, b"").decode(errors="replace"),
        consistent_index=int.from_bytes(ci, "big") if ci and len(ci) == 8 else index,
        state_hash=state_hex,
        apply_digest=digest,
    )


def _digest_head(record: bytes | None) -> tuple[int, str]:
    if record is None:
        return 0, ""
    try:
        index, digest = decode_head(record)
    except DigestRecordError:
        return 0, "unreadable"
    return index, digest.hex()


def _json(raw: bytes) -> Any:
    return json.loads(raw.decode())
