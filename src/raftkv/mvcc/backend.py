"""The LMDB backend: one environment per member, named buckets, CRC32C on every value.

Owns: the LMDB environment (its map size is the hard space quota), the named
databases ("buckets") ``key``, ``meta``, ``lease``, ``auth``, ``members``,
``alarm`` (plus any extra ones asked for), read and write transactions, and the
integrity envelope of every stored value.

Stored value layout: ``crc32c(key || payload)`` as 4 bytes big-endian, then the
payload.  Covering the key as well catches a value written under the wrong key.
Every read (``get``, ``iterate``) checks the CRC and raises
``BackendCorruptionError`` naming the bucket and key on mismatch: corrupt data is
never returned.

Durability (``sync_mode``), decided per commit of a write transaction:
- ``"full"``: every commit fsyncs data and meta pages; a committed txn survives
  power loss.
- ``"nometasync"`` (default): every commit fsyncs data pages, the meta page is
  flushed by the next commit or ``force_commit()``; power loss may roll back the
  last committed transaction(s) but never corrupts the file.  Safe for raftkv
  because the consistent index is committed in the same transaction as the data
  it covers, so the WAL replays whatever was rolled back.
- ``"nosync"``: commits are not fsynced.  A process crash loses nothing (the
  data is in the OS page cache); only ``force_commit()`` makes the file durable
  against power loss, and power loss between two ``force_commit()`` calls may
  corrupt the file (restore from a snapshot).  For benchmarks and tests.

Batched commits (etcd's backend batch transaction, ``--backend-batch-interval`` and
``--backend-batch-limit``): ``begin_batch`` opens a write transaction nested in one pending
outer transaction.  Committing the nested one makes its writes part of the pending batch,
visible to ``read_latest`` and to later batches; aborting it drops only its own writes.  The
pending batch reaches the file (one LMDB commit, fsynced per ``sync_mode``) when
``commit_pending`` runs, which ``end_batch`` does once the batch is ``batch_interval`` old or
holds ``batch_limit`` operations, and which every ``read``, ``write``, ``force_commit`` and
``close`` does first, so those always see (and a copy of the file always holds) everything
written.  With ``batch_interval=0`` (the default) every batch is committed at once.  A crash
loses the pending batch: the caller must be able to redo it (raftkv replays it from the WAL,
as the consistent index travels in the same transaction).

Threading: a write transaction must be opened, used and closed by one thread; the pending
batch belongs to the thread that opened it, and ``commit_pending`` from another thread while
a batch is pending raises ``RuntimeError``.  Read transactions are independent snapshots of
what was committed.

Failpoint ``backendBitFlip`` (``raftkv.failpoints``): when it fires on a
``put`` to the ``key`` bucket (one hit per put there; other buckets never hit
it), the last byte of the sealed value is inverted after its CRC was computed,
so the record is corrupt at rest and every later read of it raises
``BackendCorruptionError``.
"""

from __future__ import annotations

import os
import struct
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

import crc32c
import lmdb

from raftkv import failpoints
from raftkv.fileutil import PRIVATE_FILE_MODE, mkdir_all
from raftkv.mvcc.errors import BackendCorruptionError, BackendSpaceExceededError

BUCKET_KEY = "key"
BUCKET_META = "meta"
BUCKET_LEASE = "lease"
BUCKET_AUTH = "auth"
BUCKET_MEMBERS = "members"
BUCKET_ALARM = "alarm"
BUCKET_CLUSTER = "cluster"  # cluster version, downgrade, removed member IDs
CLUSTER_REMOVED_PREFIX = b"removed/"  # + member ID (u64 big-endian): a removed member
# Keys of the meta bucket the MVCC store keeps (names as etcd's).
META_CONSISTENT_INDEX = b"consistent_index"
META_TERM = b"term"
META_SCHEDULED_COMPACT = b"scheduledCompactRev"
META_FINISHED_COMPACT = b"finishedCompactRev"
META_STORAGE_VERSION = b"storageVersion"  # the data layout version (raftkv.version)
DEFAULT_BUCKETS = (
    BUCKET_KEY,
    BUCKET_META,
    BUCKET_LEASE,
    BUCKET_AUTH,
    BUCKET_MEMBERS,
    BUCKET_ALARM,
    BUCKET_CLUSTER,
)

SyncMode = Literal["full", "nometasync", "nosync"]
DEFAULT_MAP_SIZE = 2 * 1024**3  # etcd's default backend quota (2 GiB)

_CRC = struct.Struct(">I")


@dataclass(frozen=True, slots=True)
class BackendConfig:
    map_size: int = DEFAULT_MAP_SIZE
    sync_mode: SyncMode = "nometasync"
    max_readers: int = 126
    extra_buckets: tuple[str, ...] = ()
    # Batched commits (see the module docstring): seconds and operations a pending batch may
    # reach before it is committed; 0 seconds commits every batch at once.
    batch_interval: float = 0.0
    batch_limit: int = 10_000


def seal(key: bytes, payload: bytes) -> bytes:
    """The stored form of ``payload`` under ``key`` (CRC envelope)."""
    return _CRC.pack(crc32c.crc32c(payload, crc32c.crc32c(key))) + payload


def unseal(bucket: str, key: bytes, stored: bytes) -> bytes:
    """Check the envelope and return the payload, or raise BackendCorruptionError."""
    if len(stored) < 4:
        raise BackendCorruptionError(bucket, key, "value shorter than its checksum")
    payload = stored[4:]
    (want,) = _CRC.unpack_from(stored)
    if crc32c.crc32c(payload, crc32c.crc32c(key)) != want:
        raise BackendCorruptionError(bucket, key)
    return payload


def flip_last_byte(stored: bytes) -> bytes:
    """``stored`` with its last byte inverted (the ``backendBitFlip`` failpoint's damage)."""
    return stored[:-1] + bytes((stored[-1] ^ 0xFF,))


class ReadTxn:
    """A consistent snapshot of every bucket; values are CRC-checked on read."""

    def __init__(self, backend: Backend, txn: Any) -> None:
        self._backend = backend
        self._txn = txn

    def get(self, bucket: str, key: bytes) -> bytes | None:
        stored = self._txn.get(key, db=self._backend.db(bucket))
        if stored is None:
            return None
        return unseal(bucket, key, stored)

    def iterate(
        self, bucket: str, start: bytes = b"", end: bytes | None = None
    ) -> Iterator[tuple[bytes, bytes]]:
        """(key, payload) pairs with ``start <= key < end`` (no end if None), key order."""
        cur = self._txn.cursor(db=self._backend.db(bucket))
        try:
            if not cur.set_range(start):
                return
            for key, stored in cur.iternext(keys=True, values=True):
                if end is not None and key >= end:
                    return
                yield key, unseal(bucket, key, stored)
        finally:
            cur.close()

    def iterate_keys(
        self, bucket: str, start: bytes = b"", end: bytes | None = None, limit: int = 0
    ) -> list[bytes]:
        """Keys only (no value read, no CRC check) in ``[start, end)``, at most ``limit``."""
        out: list[bytes] = []
        cur = self._txn.cursor(db=self._backend.db(bucket))
        try:
            if not cur.set_range(start):
                return out
            for key in cur.iternext(keys=True, values=False):
                if end is not None and key >= end:
                    break
                out.append(key)
                if limit and len(out) >= limit:
                    break
        finally:
            cur.close()
        return out

    def count(self, bucket: str) -> int:
        return int(self._txn.stat(self._backend.db(bucket))["entries"])


class WriteTxn(ReadTxn):
    """A read-write transaction; see ``Backend.write``."""

    def put(self, bucket: str, key: bytes, payload: bytes) -> None:
        stored = seal(key, payload)
        if failpoints.ENABLED and bucket == BUCKET_KEY and failpoints.hit("backendBitFlip"):
            stored = flip_last_byte(stored)
        try:
            self._txn.put(key, stored, db=self._backend.db(bucket))
        except lmdb.MapFullError as exc:
            raise BackendSpaceExceededError() from exc

    def delete(self, bucket: str, key: bytes) -> bool:
        return bool(self._txn.delete(key, db=self._backend.db(bucket)))


class Backend:
    """One LMDB environment in directory ``path``."""

    def __init__(self, path: str | os.PathLike[str], config: BackendConfig | None = None) -> None:
        self.config = config or BackendConfig()
        self.path = os.fspath(path)
        mkdir_all(self.path)  # 0700 (before LMDB, which would make it with its file mode)
        mode = self.config.sync_mode
        if mode not in ("full", "nometasync", "nosync"):
            raise ValueError(f"unknown sync_mode {mode!r}")
        names = tuple(dict.fromkeys(DEFAULT_BUCKETS + self.config.extra_buckets))
        self._env: Any = lmdb.open(
            self.path,
            map_size=self.config.map_size,
            max_dbs=len(names) + 2,
            max_readers=self.config.max_readers,
            sync=mode != "nosync",
            metasync=mode == "full",
            readahead=False,
            mode=PRIVATE_FILE_MODE,  # data.mdb and lock.mdb, when LMDB creates them
        )
        self._dbs: dict[str, Any] = {}
        with self._env.begin(write=True) as txn:
            for name in names:
                self._dbs[name] = self._env.open_db(name.encode(), txn=txn, create=True)
        # The pending batch: its outer write transaction, the thread that owns it, when it was
        # opened (time.monotonic) and how many operations it holds.
        self._outer: Any = None
        self._outer_thread = 0
        self._outer_since = 0.0
        self._pending_ops = 0
        self._commit_failed: BaseException | None = None
        # Told the seconds each commit of a pending batch took (its LMDB commit and fsync).
        self.on_commit: Callable[[float], None] | None = None

    @property
    def env(self) -> Any:
        """The raw LMDB environment (for tools and fault-injection tests)."""
        return self._env

    def db(self, bucket: str) -> Any:
        try:
            return self._dbs[bucket]
        except KeyError:
            raise KeyError(f"unknown bucket {bucket!r}") from None

    @property
    def buckets(self) -> tuple[str, ...]:
        return tuple(self._dbs)

    @contextmanager
    def read(self) -> Iterator[ReadTxn]:
        """A snapshot of everything written so far (the pending batch is committed first)."""
        self.commit_pending()
        txn = self._env.begin(write=False, buffers=False)
        try:
            yield ReadTxn(self, txn)
        finally:
            txn.abort()

    @contextmanager
    def read_latest(self) -> Iterator[ReadTxn]:
        """Everything written so far, read through the pending batch when there is one (no
        commit).  Only for the owning thread, and only within synchronous code: the view is
        not a snapshot (later batches change what it reads) and ends with the next commit."""
        if self._outer is None:
            with self.read() as tx:
                yield tx
        elif threading.get_ident() != self._outer_thread:
            raise RuntimeError("the pending backend batch belongs to another thread")
        else:
            yield ReadTxn(self, self._outer)

    @contextmanager
    def write(self) -> Iterator[WriteTxn]:
        """A write transaction of its own (the pending batch is committed first), committed
        when the block exits normally, aborted on error."""
        self.commit_pending()
        txn = self._env.begin(write=True)
        try:
            yield WriteTxn(self, txn)
        except BaseException:
            txn.abort()
            raise
        try:
            txn.commit()
        except lmdb.MapFullError as exc:
            raise BackendSpaceExceededError() from exc

    def begin_batch(self) -> tuple[WriteTxn, Any]:
        """A write transaction nested in the pending batch (opened if there is none) and its
        raw handle: the caller commits the handle (its writes join the batch) then calls
        ``end_batch``, or aborts it (its writes are dropped, the batch is kept)."""
        if self._commit_failed is not None:
            raise RuntimeError("a pending backend batch was lost") from self._commit_failed
        if self._outer is None:
            self._outer = self._env.begin(write=True)
            self._outer_thread = threading.get_ident()
            self._outer_since = time.monotonic()
        child = self._env.begin(write=True, parent=self._outer)
        return WriteTxn(self, child), child

    def end_batch(self, ops: int) -> None:
        """A nested transaction with ``ops`` operations was committed into the batch; commit
        the batch if it is now due (see ``commit_deadline``)."""
        self._pending_ops += ops
        if (
            self._pending_ops >= self.config.batch_limit
            or time.monotonic() - self._outer_since >= self.config.batch_interval
        ):
            self.commit_pending()

    def commit_deadline(self) -> float | None:
        """When (``time.monotonic``) the pending batch must be committed; None if none."""
        if self._outer is None:
            return None
        return self._outer_since + self.config.batch_interval

    def commit_pending(self) -> None:
        """Commit the pending batch, if any (one LMDB commit, fsynced per ``sync_mode``).

        If the commit fails, the batch's writes are gone from the file while whoever wrote
        them moved on: the error is raised, and every later ``begin_batch`` raises too, so
        the owner stops and redoes the lost writes from its own log on restart."""
        outer = self._outer
        if outer is None:
            return
        if threading.get_ident() != self._outer_thread:
            raise RuntimeError("the pending backend batch belongs to another thread")
        self._outer = None
        self._pending_ops = 0
        started = time.monotonic()
        try:
            outer.commit()
        except BaseException as exc:
            self._commit_failed = exc
            raise
        if self.on_commit is not None:
            self.on_commit(time.monotonic() - started)

    def force_commit(self) -> None:
        """Commit the pending batch and flush everything to stable storage (one fsync)."""
        self.commit_pending()
        self._env.sync(True)

    def size(self) -> int:
        """Bytes of the file in use (LMDB high-water mark: last page + 1)."""
        info = self._env.info()
        return int((info["last_pgno"] + 1) * self._env.stat()["psize"])

    def file_size(self) -> int:
        return os.path.getsize(os.path.join(self.path, "data.mdb"))

    @property
    def quota(self) -> int:
        return int(self.config.map_size)

    def close(self) -> None:
        """Commit the pending batch and close the environment."""
        self.commit_pending()
        self._env.close()

    # Simple one-shot bucket helpers (each in its own transaction).

    def get(self, bucket: str, key: bytes) -> bytes | None:
        with self.read() as tx:
            return tx.get(bucket, key)

    def put(self, bucket: str, key: bytes, payload: bytes) -> None:
        with self.write() as tx:
            tx.put(bucket, key, payload)

    def delete(self, bucket: str, key: bytes) -> bool:
        with self.write() as tx:
            return tx.delete(bucket, key)

    def items(self, bucket: str) -> list[tuple[bytes, bytes]]:
        with self.read() as tx:
            return list(tx.iterate(bucket))
