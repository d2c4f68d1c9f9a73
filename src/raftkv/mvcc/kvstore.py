"""The MVCC key-value store (etcd's mvcc.store) on the LMDB backend.

Owns: the current and compacted revisions, the in-memory key index (rebuilt
from the key bucket at start-up), read views, write batches (one LMDB write
transaction for many Raft entries, with the consistent index written in the
same transaction), compaction in bounded steps, and HashKV.

Contracts:
- one request that writes = one main revision; each write in it a sub revision;
  a read-only request does not change the revision; the empty store is at
  revision 1 (as etcd);
- ``WriteBatch.begin_entry(index, term)`` returns False for an entry at or
  below the stored consistent index: re-applying after a crash is a no-op;
- the consistent index and term are committed in the same LMDB transaction as
  the writes of the entries they cover;
- watchers (``add_commit_listener``) hear about a batch only after it committed;
- a write batch and ``compact_step`` run on one thread, never nested; reads may
  come from any thread (``lock`` serialises index access).
"""

from __future__ import annotations

import gc
import struct
import threading
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import crc32c

from raftkv.mvcc import apply
from raftkv.mvcc.backend import BUCKET_KEY, BUCKET_META, Backend, ReadTxn, WriteTxn
from raftkv.mvcc.errors import (
    BackendCorruptionError,
    CompactedError,
    FutureRevError,
    MVCCRequestError,
)
from raftkv.mvcc.index import TreeIndex
from raftkv.mvcc.key_index import KeyIndex
from raftkv.mvcc.revision import (
    SUB_BITS,
    bytes_to_rev,
    decode_kv,
    decode_kv_meta,
    encode_kv_fields,
    is_tombstone,
    kv_to_proto,
    main_to_bytes,
    pack,
    rev_to_bytes,
)
from raftkv.mvcc.types import (
    CompactionRequest,
    CompactionResponse,
    DeleteRangeRequest,
    DeleteRangeResponse,
    Event,
    EventType,
    KeyValue,
    KeyValueHash,
    PutRequest,
    PutResponse,
    RangeRequest,
    RangeResponse,
    TxnRequest,
    TxnResponse,
    WriteRequest,
    WriteResponse,
)

META_CONSISTENT_INDEX = b"consistent_index"
META_TERM = b"term"
META_SCHEDULED_COMPACT = b"scheduledCompactRev"
META_FINISHED_COMPACT = b"finishedCompactRev"
DEFAULT_COMPACTION_BATCH = 1000

_U64 = struct.Struct(">Q")
CommitListener = Callable[[list[tuple[int, list[Event]]]], None]


@dataclass
class _Compaction:
    rev: int
    index_done: bool = False
    index_cursor: bytes | None = None
    db_cursor: bytes = b""
    keep: set[int] = field(default_factory=set)


class KVStore:
    def __init__(
        self,
        backend: Backend,
        *,
        compaction_batch: int = DEFAULT_COMPACTION_BATCH,
        lease_exists: apply.LeaseChecker | None = None,
    ) -> None:
        self.backend = backend
        self.lock = threading.RLock()
        self.lease_exists = lease_exists
        self.compaction_batch = compaction_batch
        self._listeners: list[CommitListener] = []
        self._in_batch = False
        self._restore()

    # -- start-up ---------------------------------------------------------

    def _restore(self) -> None:
        # Millions of small objects are created here and none is garbage: pausing the
        # cyclic GC avoids repeated full collections (several times faster at 1M keys).
        enabled = gc.isenabled()
        gc.disable()
        try:
            self._restore_index()
        finally:
            if enabled:
                gc.enable()

    def _restore_index(self) -> None:
        index = TreeIndex()
        by_key: dict[bytes, KeyIndex] = {}
        current = 1
        compact = -1
        scheduled = 0
        with self.backend.read() as tx:
            ci = tx.get(BUCKET_META, META_CONSISTENT_INDEX)
            term = tx.get(BUCKET_META, META_TERM)
            finished = tx.get(BUCKET_META, META_FINISHED_COMPACT)
            sched = tx.get(BUCKET_META, META_SCHEDULED_COMPACT)
            if finished is not None:
                compact = bytes_to_rev(finished) >> SUB_BITS
            if sched is not None:
                scheduled = bytes_to_rev(sched) >> SUB_BITS
            for raw, payload in tx.iterate(BUCKET_KEY):
                rev = bytes_to_rev(raw)
                key, create, version = decode_kv_meta(payload)
                current = rev >> SUB_BITS
                ki = by_key.get(key)
                if ki is not None:
                    if is_tombstone(raw):
                        ki.tombstone(rev)
                    else:
                        ki.put(rev)
                    continue
                ki = KeyIndex(key)
                if is_tombstone(raw):
                    ki.restore_tombstone(rev)
                else:
                    ki.restore(create << SUB_BITS, rev, version)
                by_key[key] = ki
        for ki in by_key.values():
            index.insert_restored(ki)
        index.rebuild_order()
        with self.lock:
            self._index = index
            self._consistent_index = _U64.unpack(ci)[0] if ci else 0
            self._term = _U64.unpack(term)[0] if term else 0
            self._current_rev = max(current, compact)
            self._compact_rev = compact
            self._compactions: deque[_Compaction] = deque()
            if sched is not None and scheduled > compact:
                self._compact_rev = scheduled
                self._compactions.append(_Compaction(scheduled))

    # -- state ------------------------------------------------------------

    @property
    def current_revision(self) -> int:
        return self._current_rev

    @property
    def compact_revision(self) -> int:
        """The compacted main revision; -1 if the store was never compacted."""
        return self._compact_rev

    @property
    def consistent_index(self) -> int:
        return self._consistent_index

    @property
    def term(self) -> int:
        return self._term

    def replace_backend(self, backend: Backend) -> None:
        """Adopt another backend (one received with a Raft snapshot) and rebuild from it.

        The old backend is the caller's to close; no write batch may be open.
        """
        if self._in_batch:
            raise RuntimeError("replace_backend inside a write batch")
        with self.lock:
            self.backend = backend
            self._restore()

    def add_commit_listener(self, listener: CommitListener) -> None:
        self._listeners.append(listener)

    def key_count(self) -> int:
        """Number of keys with history in the index (live or tombstoned, uncompacted)."""
        return len(self._index)

    # -- reading ----------------------------------------------------------

    def _read_kv(self, tx: ReadTxn, rev: int) -> KeyValue:
        raw = rev_to_bytes(rev)
        payload = tx.get(BUCKET_KEY, raw)
        if payload is None:
            raise BackendCorruptionError(BUCKET_KEY, raw, "revision in index missing from backend")
        return decode_kv(payload)

    def _range_keys(
        self,
        tx: ReadTxn,
        key: bytes,
        end: bytes | None,
        cur_rev: int,
        rev: int,
        limit: int,
        count_only: bool,
    ) -> tuple[list[KeyValue], int, int]:
        if rev > cur_rev:
            raise FutureRevError()
        if rev <= 0:
            rev = cur_rev
        with self.lock:
            if rev < self._compact_rev:
                raise CompactedError()
            if count_only:
                return [], self._index.count_revisions(key, end, rev), cur_rev
            revs, total = self._index.revisions(key, end, rev, limit)
        return [self._read_kv(tx, r) for r in revs], total, cur_rev

    @contextmanager
    def read(self) -> Iterator[StoreRead]:
        """A read view at the current committed revision (a consistent snapshot)."""
        cm = self.backend.read()
        with self.lock:
            tx = cm.__enter__()
            view = StoreRead(self, tx, self._current_rev)
        try:
            yield view
        finally:
            cm.__exit__(None, None, None)

    def range(self, req: RangeRequest) -> RangeResponse:
        with self.read() as view:
            return apply.range_request(view, req)

    def read_txn(self, req: TxnRequest) -> TxnResponse:
        """A read-only txn served without a write transaction (serializable reads)."""
        if not apply.is_txn_readonly(req):
            raise ValueError("read_txn needs a txn without puts or deletes")
        with self.read() as view:
            return apply.txn_request(_ReadOnlyWrite(view), req, self.lease_exists)

    # -- writing ----------------------------------------------------------

    @contextmanager
    def write_batch(self) -> Iterator[WriteBatch]:
        """One LMDB write transaction for many entries; committed when the block exits.

        A request error inside one op leaves the batch usable; any other exception
        aborts the whole batch and rebuilds the in-memory state from the backend.
        """
        if self._in_batch:
            raise RuntimeError("write batches do not nest")
        tx, raw = self.backend.begin_write()
        self._in_batch = True
        batch = WriteBatch(self, tx)
        try:
            yield batch
            batch._finish()
            raw.commit()
        except BaseException:
            raw.abort()
            self._in_batch = False
            self._restore()
            raise
        self._in_batch = False
        with self.lock:
            self._current_rev = batch._rev
            if batch._ci is not None:
                self._consistent_index, self._term = batch._ci
            self._compactions.extend(_Compaction(r) for r in batch._scheduled)
        if batch._events:
            for listener in self._listeners:
                listener(batch._events)

    def apply_batch(
        self, entries: list[tuple[int, int, WriteRequest]]
    ) -> list[WriteResponse | MVCCRequestError | None]:
        """Apply (raft index, term, request) entries in one transaction.

        Returns per entry its response, the request error it raised, or None if the
        entry was at or below the consistent index (already applied).
        """
        out: list[WriteResponse | MVCCRequestError | None] = []
        with self.write_batch() as batch:
            for index, term, req in entries:
                if not batch.begin_entry(index, term):
                    out.append(None)
                    continue
                try:
                    out.append(batch.apply(req))
                except MVCCRequestError as exc:
                    out.append(exc)
        return out

    # -- compaction -------------------------------------------------------

    def compaction_pending(self) -> bool:
        return bool(self._compactions)

    def compact_step(self) -> bool:
        """Do one bounded unit of pending compaction work; True when none is left."""
        if self._in_batch:
            raise RuntimeError("compact_step inside a write batch")
        if not self._compactions:
            return True
        c = self._compactions[0]
        n = self.compaction_batch
        if not c.index_done:
            with self.lock:
                keys = self._index.keys_after(c.index_cursor, n)
                self._index.compact_keys(keys, c.rev, c.keep)
            if len(keys) < n:
                c.index_done = True
            else:
                c.index_cursor = keys[-1]
            return False
        end = main_to_bytes(c.rev + 1)
        with self.backend.write() as tx:
            revs = tx.iterate_keys(BUCKET_KEY, c.db_cursor, end, n)
            for raw in revs:
                if bytes_to_rev(raw) not in c.keep:
                    tx.delete(BUCKET_KEY, raw)
            done = len(revs) < n
            if done:
                tx.put(BUCKET_META, META_FINISHED_COMPACT, rev_to_bytes(pack(c.rev)))
        if not done:
            c.db_cursor = rev_to_bytes(bytes_to_rev(revs[-1]) + 1)
            return False
        with self.lock:
            self._compactions.popleft()
        return not self._compactions

    def run_compaction(self) -> None:
        """Finish every pending compaction (etcd's ``physical`` compaction wait)."""
        while not self.compact_step():
            pass

    # -- hashing ----------------------------------------------------------

    def hash_kv(self, rev: int = 0) -> tuple[KeyValueHash, int]:
        """(hash of the key bucket up to ``rev``, current revision), as etcd's HashKV."""
        return self.hash_kv_deferred(rev)()

    def hash_kv_deferred(self, rev: int = 0) -> Callable[[], tuple[KeyValueHash, int]]:
        """Fix the state ``hash_kv(rev)`` will see now; the returned callable hashes it later.

        The revision bounds, the keep set and an LMDB read transaction are taken at once under
        the lock, so writes and physical compaction after this call do not change the result;
        the callable may run in another thread, must be called exactly once, and releases the
        read transaction.  Errors (compacted, future revision) are raised here, not later.
        """
        cm = self.backend.read()
        with self.lock:
            compact, current = self._compact_rev, self._current_rev
            if 0 < rev < compact:
                raise CompactedError()
            if rev > current:
                raise FutureRevError()
            if rev <= 0:
                rev = current
            keep = self._index.keep(rev)
            tx = cm.__enter__()

        def compute() -> tuple[KeyValueHash, int]:
            try:
                h = crc32c.crc32c(BUCKET_KEY.encode())
                lower = pack(compact + 1) if compact >= 0 else 0
                for raw, payload in tx.iterate(BUCKET_KEY, b"", main_to_bytes(rev + 1)):
                    kr = bytes_to_rev(raw)
                    if kr < lower and keep and kr not in keep:
                        continue
                    h = crc32c.crc32c(kv_to_proto(decode_kv(payload)), crc32c.crc32c(raw, h))
            finally:
                cm.__exit__(None, None, None)
            return KeyValueHash(h, rev, compact), current

        return compute

    # -- derived state ----------------------------------------------------

    def leased_keys(self) -> dict[bytes, int]:
        """Live key -> lease ID for every key attached to a lease (for the lessor)."""
        out: dict[bytes, int] = {}
        with self.read() as view:
            kvs, _count, _rev = view.range_keys(b"\x00", b"", 0, 0, False)
        for kv in kvs:
            if kv.lease:
                out[kv.key] = kv.lease
        return out


class StoreRead:
    """A read view: backend snapshot plus the revision it was taken at."""

    def __init__(self, store: KVStore, tx: ReadTxn, rev: int) -> None:
        self._store = store
        self._tx = tx
        self._rev = rev

    def rev(self) -> int:
        return self._rev

    def first_rev(self) -> int:
        return self._store._compact_rev

    def range_keys(
        self, key: bytes, end: bytes | None, rev: int, limit: int, count_only: bool
    ) -> tuple[list[KeyValue], int, int]:
        return self._store._range_keys(self._tx, key, end, self._rev, rev, limit, count_only)

    def range(self, req: RangeRequest) -> RangeResponse:
        return apply.range_request(self, req)


class _ReadOnlyWrite:
    """Adapts a read view to the write-view protocol for read-only txns."""

    def __init__(self, view: StoreRead) -> None:
        self._view = view

    def rev(self) -> int:
        return self._view.rev()

    def first_rev(self) -> int:
        return self._view.first_rev()

    def range_keys(
        self, key: bytes, end: bytes | None, rev: int, limit: int, count_only: bool
    ) -> tuple[list[KeyValue], int, int]:
        return self._view.range_keys(key, end, rev, limit, count_only)

    def changed(self) -> bool:
        return False

    def put(self, key: bytes, value: bytes, lease: int) -> int:
        raise AssertionError("write in a read-only txn")

    def delete_range(self, key: bytes, end: bytes | None) -> tuple[int, int]:
        raise AssertionError("write in a read-only txn")


class StoreTxnWrite:
    """One MVCC write transaction inside a batch: all its writes share one main revision."""

    def __init__(self, store: KVStore, tx: WriteTxn, begin_rev: int) -> None:
        self._store = store
        self._tx = tx
        self.begin_rev = begin_rev
        self.changes: list[KeyValue] = []

    def rev(self) -> int:
        return self.begin_rev

    def first_rev(self) -> int:
        return self._store._compact_rev

    def changed(self) -> bool:
        return bool(self.changes)

    def range_keys(
        self, key: bytes, end: bytes | None, rev: int, limit: int, count_only: bool
    ) -> tuple[list[KeyValue], int, int]:
        cur = self.begin_rev + 1 if self.changes else self.begin_rev
        return self._store._range_keys(self._tx, key, end, cur, rev, limit, count_only)

    def put(self, key: bytes, value: bytes, lease: int) -> int:
        store = self._store
        rev = self.begin_rev + 1
        created, ver = rev, 0
        with store.lock:
            got = store._index.get(key, rev)
            if got is not None:
                created, ver = got[1] >> SUB_BITS, got[2]
            idx_rev = pack(rev, len(self.changes))
            self._tx.put(
                BUCKET_KEY,
                rev_to_bytes(idx_rev),
                encode_kv_fields(key, value, created, rev, ver + 1, lease),
            )
            store._index.put(key, idx_rev)
        self.changes.append(KeyValue(key, created, rev, ver + 1, value, lease))
        return rev

    def delete_range(self, key: bytes, end: bytes | None) -> tuple[int, int]:
        store = self._store
        cur = self.begin_rev + 1 if self.changes else self.begin_rev
        with store.lock:
            found = store._index.range(key, end, cur)
            for k, _rev in found:
                idx_rev = pack(self.begin_rev + 1, len(self.changes))
                self._tx.put(
                    BUCKET_KEY, rev_to_bytes(idx_rev, True), encode_kv_fields(k, b"", 0, 0, 0, 0)
                )
                if not store._index.tombstone(k, idx_rev):
                    raise AssertionError(f"tombstone of a dead key {k!r}")
                self.changes.append(KeyValue(k))
        if found or self.changes:
            return len(found), self.begin_rev + 1
        return 0, self.begin_rev


class _BatchTxn:
    """One request's ``StoreTxnWrite`` inside a batch, as a context manager (a class, not a
    generator: it runs once per applied request)."""

    __slots__ = ("_batch", "_t")

    def __init__(self, batch: WriteBatch) -> None:
        self._batch = batch
        self._t = StoreTxnWrite(batch._store, batch.tx, batch._rev)

    def __enter__(self) -> StoreTxnWrite:
        return self._t

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object
    ) -> None:
        t = self._t
        if exc is None:
            if t.changes:
                self._batch._close_txn(t)
        elif t.changes and isinstance(exc, MVCCRequestError):
            # Validation runs before any write; a request error after one is a bug.
            raise AssertionError("request error after writes in one txn") from exc


class WriteBatch:
    """Requests applied in one LMDB write transaction (see ``KVStore.write_batch``)."""

    def __init__(self, store: KVStore, tx: WriteTxn) -> None:
        self._store = store
        self.tx = tx  # for the other buckets (lease, auth, members, alarm) in the same txn
        self._rev = store._current_rev
        self._ci: tuple[int, int] | None = None
        self._events: list[tuple[int, list[Event]]] = []
        self._scheduled: list[int] = []

    @property
    def revision(self) -> int:
        """Current revision including the requests applied so far in this batch."""
        return self._rev

    def event_count(self) -> int:
        """A mark for ``events_since``: how many revisions this batch has written so far."""
        return len(self._events)

    def events_since(self, mark: int) -> list[Event]:
        """The events of the revisions written after ``mark``, in revision order."""
        return [ev for _rev, evs in self._events[mark:] for ev in evs]

    def begin_entry(self, index: int, term: int) -> bool:
        """Start applying raft entry ``index``; False if it was applied before."""
        done = self._ci[0] if self._ci is not None else self._store._consistent_index
        if index <= done:
            return False
        self._ci = (index, term)
        return True

    def _txn(self) -> _BatchTxn:
        return _BatchTxn(self)

    def _close_txn(self, t: StoreTxnWrite) -> None:
        """Give the writes of ``t`` the batch's next main revision and record their events."""
        self._rev += 1
        rev = self._rev
        evs = [
            Event(EventType.PUT, kv)
            if kv.create_revision
            else Event(EventType.DELETE, KeyValue(kv.key, mod_revision=rev))
            for kv in t.changes
        ]
        self._events.append((rev, evs))

    def put(self, req: PutRequest) -> PutResponse:
        with self._txn() as t:
            return apply.put_request(t, req, self._store.lease_exists)

    def delete_range(self, req: DeleteRangeRequest) -> DeleteRangeResponse:
        with self._txn() as t:
            return apply.delete_range_request(t, req)

    def txn(self, req: TxnRequest) -> TxnResponse:
        with self._txn() as t:
            return apply.txn_request(t, req, self._store.lease_exists)

    def range(self, req: RangeRequest) -> RangeResponse:
        with self._txn() as t:
            return apply.range_request(t, req)

    def compact(self, req: CompactionRequest) -> CompactionResponse:
        """Schedule compaction at ``req.revision``; the work runs in ``compact_step``."""
        store = self._store
        with store.lock:
            if req.revision <= store._compact_rev:
                raise CompactedError()
            if req.revision > self._rev:
                raise FutureRevError()
            store._compact_rev = req.revision
        self.tx.put(BUCKET_META, META_SCHEDULED_COMPACT, rev_to_bytes(pack(req.revision)))
        self._scheduled.append(req.revision)
        return CompactionResponse(self._rev)

    def apply(self, req: WriteRequest) -> WriteResponse:
        if isinstance(req, PutRequest):
            return self.put(req)
        if isinstance(req, DeleteRangeRequest):
            return self.delete_range(req)
        if isinstance(req, TxnRequest):
            return self.txn(req)
        if isinstance(req, CompactionRequest):
            return self.compact(req)
        return self.range(req)

    def _finish(self) -> None:
        if self._ci is not None:
            index, term = self._ci
            self.tx.put(BUCKET_META, META_CONSISTENT_INDEX, _U64.pack(index))
            self.tx.put(BUCKET_META, META_TERM, _U64.pack(term))
