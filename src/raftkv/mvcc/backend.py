"""The LMDB backend: one environment per member, named buckets, CRC32C on every value.

Owns: the LMDB environment, the named databases ("buckets") ``key``, ``meta``,
``lease``, ``auth``, ``members``, ``alarm`` (plus any extra ones asked for), read
and write transactions, the integrity envelope of every stored value, and the
size the space quota is measured against.

Space (etcd's backend quota, ``--quota-backend-bytes``): ``quota_limit`` is the soft
quota the member enforces above this layer (``raftkv.server.quota``), measured against
``committed_size``: the bytes in use (LMDB's high-water mark, as bbolt's ``Size``) as of
the last commit, kept in an attribute so reading it costs nothing.  LMDB's map size is
not the quota: it is address space reserved, not allocated (the file grows with the
pages written), sized well above the soft quota (``map_size_for``) and at least twice
the file found at open.  Filling it raises ``BackendSpaceExceededError`` (``SPACE_ERRORS``
lists what may surface from raw handles); ``grow_map`` then doubles it.

Stored value layout: ``crc32c(key || payload)`` as 4 bytes big-endian, then the
payload.  Covering the key as well catches a value written under the wrong key.
Every read (``get``, ``iterate``) checks the CRC and raises
``BackendCorruptionError`` naming the bucket and key on mismatch: corrupt data is
never returned.  ``verify_file`` makes the same check of every value of a backend file
no member has open (a snapshot received from the leader, a backend fetched by repair).

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
from raftkv.clock import SYSTEM_CLOCK, Clock
from raftkv.fileutil import PRIVATE_FILE_MODE, mkdir_all
from raftkv.mvcc.errors import BackendCorruptionError, BackendSpaceExceededError

BUCKET_KEY = "key"
BUCKET_META = "meta"
BUCKET_LEASE = "lease"
BUCKET_AUTH = "auth"
BUCKET_MEMBERS = "members"
BUCKET_ALARM = "alarm"
BUCKET_CLUSTER = "cluster"  # cluster version, downgrade, removed member IDs
BUCKET_APPLY_DIGEST = "applyDigest"  # the guard's apply-digest history (raftkv.guard.digest)
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
    BUCKET_APPLY_DIGEST,
)

SyncMode = Literal["full", "nometasync", "nosync"]
DEFAULT_QUOTA_BYTES = 2 * 1024**3
"""etcd's ``DefaultQuotaBytes``: the soft quota when ``--quota-backend-bytes`` is 0."""
DEFAULT_MAP_SIZE = DEFAULT_QUOTA_BYTES  # a floor tools open copies of a backend with
MAP_HEADROOM_MIN = 1024**3
"""The least room the LMDB map leaves above the soft quota (see ``map_size_for``)."""
UNLIMITED_MAP_SIZE = 16 * 1024**3
"""The LMDB map of a backend without a soft quota (it still doubles when full)."""

SPACE_ERRORS: tuple[type[Exception], ...] = (BackendSpaceExceededError, lmdb.MapFullError)
"""What a write may raise when the LMDB map is full (raw handles raise LMDB's own)."""

_CRC = struct.Struct(">I")


def quota_limit(quota_bytes: int) -> int | None:
    """The soft quota, in bytes, that ``quota_bytes`` (etcd's ``--quota-backend-bytes``) sets:
    0 is etcd's default (2 GiB), a negative value disables the quota (None)."""
    if quota_bytes < 0:
        return None
    return quota_bytes or DEFAULT_QUOTA_BYTES


def map_size_for(quota_bytes: int) -> int:
    """LMDB's map size for a backend under the soft quota ``quota_bytes``: twice the quota and
    at least ``MAP_HEADROOM_MIN`` above it, so writes that were admitted before the quota was
    reached, compaction and the alarm itself still fit (etcd leaves bbolt 10 % over the quota
    for the same reason; bbolt grows past it, LMDB would refuse).  Only address space: the
    file grows with the pages actually written."""
    limit = quota_limit(quota_bytes)
    if limit is None:
        return UNLIMITED_MAP_SIZE
    return max(2 * limit, limit + MAP_HEADROOM_MIN)


@dataclass(frozen=True, slots=True)
class BackendConfig:
    # LMDB's map size in bytes; 0 derives it from ``quota_bytes`` (``map_size_for``).
    map_size: int = 0
    # etcd's --quota-backend-bytes: the soft quota (0: 2 GiB, negative: none); see ``quota_limit``.
    quota_bytes: int = 0
    sync_mode: SyncMode = "nometasync"
    max_readers: int = 126
    extra_buckets: tuple[str, ...] = ()
    # Batched commits (see the module docstring): seconds and operations a pending batch may
    # reach before it is committed; 0 seconds commits every batch at once.
    batch_interval: float = 0.0
    batch_limit: int = 10_000
    # What the batch deadlines are measured on (``raftkv.clock``).
    clock: Clock = SYSTEM_CLOCK


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


def verify_file(path: str) -> None:
    """Check that every value of every bucket in the LMDB file ``path`` unseals.

    ``path`` is a single data file (``subdir=False``), as ``Applier.copy_backend`` and LMDB's
    copy write one: a snapshot received from the leader, a backend fetched by repair.  It is
    opened read-only without a lock file, so nothing is written to or next to it; no writer may
    have it open.  Every named database the file holds is read, not only the buckets this
    version knows.  Raises ``BackendCorruptionError`` naming the bucket and key of the first
    value that fails its CRC, ``lmdb.Error`` when the file is not a readable LMDB environment.
    """
    env: Any = lmdb.open(path, subdir=False, readonly=True, lock=False, max_dbs=64, readahead=False)
    try:
        with env.begin() as txn:
            for raw_name in [name for name, _ in txn.cursor()]:
                db = env.open_db(raw_name, txn=txn, create=False)
                bucket = raw_name.decode(errors="replace")
                for key, stored in txn.cursor(db=db):
                    unseal(bucket, key, stored)
    finally:
        env.close()


def rewrite_file_value(path: str, bucket: str, key: bytes, payload: bytes | None) -> None:
    """Put ``payload`` under ``key`` in ``bucket`` of the single-file LMDB copy ``path`` (delete
    the key when ``payload`` is None), sealed as the backend seals it, and fsync the file.

    For a copy this member wrote and nobody else has open yet (``Applier.copy_backend``'s
    output, before it is sent); no lock file is created next to it.  The bucket must exist in
    the copy."""
    size = os.path.getsize(path)
    env: Any = lmdb.open(
        path,
        subdir=False,
        lock=False,
        max_dbs=64,
        readahead=False,
        map_size=size + (1 << 20),  # room for a page or two more than the copy holds
    )
    try:
        db = env.open_db(bucket.encode(), create=False)
        with env.begin(write=True, db=db) as txn:
            if payload is None:
                txn.delete(key)
            else:
                txn.put(key, seal(key, payload))
        env.sync(True)
    finally:
        env.close()


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
        try:
            return bool(self._txn.delete(key, db=self._backend.db(bucket)))
        except lmdb.MapFullError as exc:  # copy-on-write: a delete allocates pages too
            raise BackendSpaceExceededError() from exc


class Backend:
    """One LMDB environment in directory ``path``."""

    def __init__(self, path: str | os.PathLike[str], config: BackendConfig | None = None) -> None:
        self.config = config or BackendConfig()
        self.path = os.fspath(path)
        mkdir_all(self.path)  # 0700 (before LMDB, which would make it with its file mode)
        if self.config.sync_mode not in ("full", "nometasync", "nosync"):
            raise ValueError(f"unknown sync_mode {self.config.sync_mode!r}")
        # The soft quota in bytes (None: disabled) and the bytes in use at the last commit.
        self.quota_limit: int | None = quota_limit(self.config.quota_bytes)
        self.committed_size = 0
        map_size = self.config.map_size or map_size_for(self.config.quota_bytes)
        data = os.path.join(self.path, "data.mdb")
        if os.path.exists(data):
            map_size = max(map_size, 2 * os.path.getsize(data))
        self._map_size = map_size
        self._env: Any = None
        self._dbs: dict[str, Any] = {}
        self._open_env()
        # The pending batch: its outer write transaction, the thread that owns it, when it was
        # opened (time.monotonic) and how many operations it holds.
        self._outer: Any = None
        self._outer_thread = 0
        self._outer_since = 0.0
        self._pending_ops = 0
        self._commit_failed: BaseException | None = None
        # Told the seconds each commit of a pending batch took (its LMDB commit and fsync).
        self.on_commit: Callable[[float], None] | None = None

    def _open_env(self) -> None:
        mode = self.config.sync_mode
        names = tuple(dict.fromkeys(DEFAULT_BUCKETS + self.config.extra_buckets))
        self._env = lmdb.open(
            self.path,
            map_size=self._map_size,
            max_dbs=len(names) + 2,
            max_readers=self.config.max_readers,
            sync=mode != "nosync",
            metasync=mode == "full",
            readahead=False,
            mode=PRIVATE_FILE_MODE,  # data.mdb and lock.mdb, when LMDB creates them
        )
        self._psize = int(self._env.stat()["psize"])
        with self._env.begin(write=True) as txn:
            for name in names:
                self._dbs[name] = self._env.open_db(name.encode(), txn=txn, create=True)
        self._note_size()

    def _note_size(self) -> None:
        """Refresh ``committed_size`` (after every commit: etcd's backend updates its size
        when its batch transaction commits)."""
        self.committed_size = (int(self._env.info()["last_pgno"]) + 1) * self._psize

    @property
    def map_size(self) -> int:
        """LMDB's map size now (address space, not disk)."""
        return self._map_size

    @property
    def batch_lost(self) -> bool:
        """A pending batch failed to commit: its writes are gone, only a restart (redoing
        them from the WAL) recovers; see ``commit_pending``."""
        return self._commit_failed is not None

    def grow_map(self) -> int:
        """Double LMDB's map size; returns the new size.  For a write refused with
        ``BackendSpaceExceededError``: abort it, grow, write again.

        The pending batch is committed first, then the environment is closed and reopened:
        this object, its buckets and what was written stay as they were, but every
        transaction still open on it (another thread's read snapshot) is invalidated, as by
        ``close``; the caller keeps such readers out meanwhile.  From the owning thread.
        """
        self.commit_pending()
        self._env.close()
        self._map_size *= 2
        self._open_env()
        return self._map_size

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
        self._note_size()

    def begin_batch(self) -> tuple[WriteTxn, Any]:
        """A write transaction nested in the pending batch (opened if there is none) and its
        raw handle: the caller commits the handle (its writes join the batch) then calls
        ``end_batch``, or aborts it (its writes are dropped, the batch is kept)."""
        if self._commit_failed is not None:
            raise RuntimeError("a pending backend batch was lost") from self._commit_failed
        if self._outer is None:
            self._outer = self._env.begin(write=True)
            self._outer_thread = threading.get_ident()
            self._outer_since = self.config.clock.monotonic()
        child = self._env.begin(write=True, parent=self._outer)
        return WriteTxn(self, child), child

    def end_batch(self, ops: int) -> None:
        """A nested transaction with ``ops`` operations was committed into the batch; commit
        the batch if it is now due (see ``commit_deadline``)."""
        self._pending_ops += ops
        if (
            self._pending_ops >= self.config.batch_limit
            or self.config.clock.monotonic() - self._outer_since >= self.config.batch_interval
        ):
            self.commit_pending()

    def commit_deadline(self) -> float | None:
        """When (on ``config.clock.monotonic``) the pending batch must be committed; None if
        none."""
        if self._outer is None:
            return None
        return self._outer_since + self.config.batch_interval

    def commit_pending(self) -> None:
        """Commit the pending batch, if any (one LMDB commit, fsynced per ``sync_mode``).

        If the commit fails, the batch's writes are gone from the file while whoever wrote
        them moved on: the error is raised (``BackendSpaceExceededError`` when the map was
        full), ``batch_lost`` turns True and every later ``begin_batch`` raises too, so the
        owner stops and redoes the lost writes from its own log on restart."""
        outer = self._outer
        if outer is None:
            return
        if threading.get_ident() != self._outer_thread:
            raise RuntimeError("the pending backend batch belongs to another thread")
        self._outer = None
        self._pending_ops = 0
        started = time.perf_counter()
        try:
            outer.commit()
        except lmdb.MapFullError as exc:
            self._commit_failed = exc
            raise BackendSpaceExceededError() from exc
        except BaseException as other:  # its own name: a compiled function types each once
            self._commit_failed = other
            raise
        self._note_size()
        if self.on_commit is not None:
            self.on_commit(time.perf_counter() - started)

    def force_commit(self) -> None:
        """Commit the pending batch and flush everything to stable storage (one fsync)."""
        self.commit_pending()
        self._env.sync(True)

    def size(self) -> int:
        """Bytes of the file in use (LMDB high-water mark: last page + 1), read now."""
        info = self._env.info()
        return int((info["last_pgno"] + 1) * self._psize)

    def file_size(self) -> int:
        return os.path.getsize(os.path.join(self.path, "data.mdb"))

    @property
    def quota(self) -> int:
        """The soft quota as etcd reports it (``dbSizeQuota``, the quota gauge): the
        configured bytes, 0 replaced by the default; negative when disabled."""
        return self.config.quota_bytes or DEFAULT_QUOTA_BYTES

    def close(self) -> None:
        """Commit the pending batch and close the environment."""
        self.commit_pending()
        self._env.close()

    def abandon(self) -> None:
        """Close the environment as a crash would: the pending batch is dropped uncommitted,
        the file keeps what earlier commits made durable (a simulated crash)."""
        outer, self._outer = self._outer, None
        self._pending_ops = 0
        if outer is not None:
            outer.abort()
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

    def get_durable(self, bucket: str, key: bytes) -> bytes | None:
        """The value as of the file's last commit, without the pending batch: what a crash
        now would keep (``get`` commits the pending batch first)."""
        with self._env.begin() as txn:
            stored = txn.get(key, db=self.db(bucket))
        return None if stored is None else unseal(bucket, key, stored)
