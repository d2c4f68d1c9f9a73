"""The MVCC key-value store (etcd's mvcc.store) on the LMDB backend.

Owns: the current and compacted revisions, the in-memory key index (rebuilt
from the key bucket at start-up), read views, opening and committing write batches (one LMDB
write transaction, nested in the backend's pending batch, for many Raft entries, with the
consistent index written in the same transaction; the batch itself is
``raftkv.mvcc.write_batch``), compaction in bounded steps, and HashKV.

Contracts:
- one request that writes = one main revision; each write in it a sub revision;
  a read-only request does not change the revision; the empty store is at
  revision 1 (as etcd);
- ``WriteBatch.begin_entry(index, term)`` returns False for an entry at or
  below the stored consistent index: re-applying after a crash is a no-op;
- the consistent index and term are committed in the same LMDB transaction as
  the writes of the entries they cover;
- watchers (``add_commit_listener``) hear about a batch only after it committed (into the
  backend's pending batch: readers see it from then on); its events are built only when some
  listener wants them;
- a write batch and ``compact_step`` run on one thread, never nested; reads (``read``,
  ``range``, ``read_txn``) read through the backend's pending batch, so they come from that
  same thread while a batch is pending; ``hash_kv_deferred``'s callable may run in any thread
  (``lock`` serialises index access).
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
from raftkv.mvcc.backend import (
    BUCKET_KEY,
    BUCKET_META,
    META_CONSISTENT_INDEX,
    META_FINISHED_COMPACT,
    META_SCHEDULED_COMPACT,
    META_TERM,
    Backend,
    ReadTxn,
)
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
    is_tombstone,
    main_to_bytes,
    pack,
    payload_to_proto,
    rev_to_bytes,
)
from raftkv.mvcc.types import (
    Event,
    EventType,
    KeyValue,
    KeyValueHash,
    RangeRequest,
    RangeResponse,
    TxnRequest,
    TxnResponse,
    WriteRequest,
    WriteResponse,
)
from raftkv.mvcc.write_batch import RawKV, WriteBatch

DEFAULT_COMPACTION_BATCH = 1000

_U64 = struct.Struct(">Q")
CommitListener = Callable[[list[tuple[int, list[Event]]]], None]
# Asked after each commit whether its listener wants that batch's events (None: always).
ListenerWanted = Callable[[], bool] | None


def group_events(changes: list[RawKV]) -> list[tuple[int, list[Event]]]:
    """The events of ``changes`` (in revision order) grouped by main revision."""
    out: list[tuple[int, list[Event]]] = []
    cur = -1
    evs: list[Event] = []
    put, delete = EventType.PUT, EventType.DELETE
    for raw in changes:
        rev = raw[2]
        if rev != cur:
            cur = rev
            evs = []
            out.append((rev, evs))
        evs.append(Event(put if raw[1] else delete, KeyValue(*raw)))
    return out


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
        self._listeners: list[tuple[CommitListener, ListenerWanted]] = []
        self._in_batch = False
        # Live key -> lease as the last restore found them; None once a batch wrote.
        self._restored_leases: dict[bytes, int] | None = None
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
        leases: dict[bytes, int] = {}  # live key -> lease, from each key's latest record
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
                key, create, version, lease = decode_kv_meta(payload)
                current = rev >> SUB_BITS
                if lease and not is_tombstone(raw):
                    leases[key] = lease
                elif leases:
                    leases.pop(key, None)
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
            self._restored_leases = leases
            self._consistent_index = _U64.unpack(ci)[0] if ci else 0
            self._term = _U64.unpack(term)[0] if term else 0
            # A scheduled compaction names a revision that existed, even when no record of it
            # is left (all compacted away) or none was ever kept (a restore's --bump-revision).
            self._current_rev = max(current, compact, scheduled)
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

    @property
    def on_commit(self) -> Callable[[float], None] | None:
        """Told the seconds each LMDB commit of the backend's pending batch took (with its
        fsync); kept across ``replace_backend``."""
        return self.backend.on_commit

    @on_commit.setter
    def on_commit(self, observer: Callable[[float], None] | None) -> None:
        self.backend.on_commit = observer

    def replace_backend(self, backend: Backend) -> None:
        """Adopt another backend (one received with a Raft snapshot) and rebuild from it.

        The old backend is the caller's to close; no write batch may be open.
        """
        if self._in_batch:
            raise RuntimeError("replace_backend inside a write batch")
        with self.lock:
            backend.on_commit = self.backend.on_commit
            self.backend = backend
            self._restore()

    def add_commit_listener(self, listener: CommitListener, wanted: ListenerWanted = None) -> None:
        """Call ``listener`` with each committed batch's events, grouped by revision; when
        ``wanted`` is given, only if it returns True right after that commit."""
        self._listeners.append((listener, wanted))

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
        """A read view at the current revision, through the backend's pending batch: use it
        within synchronous code (it is a consistent view only until the next write batch)."""
        cm = self.backend.read_latest()
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
        """One LMDB write transaction for many entries, committed into the backend's pending
        batch when the block exits (the backend commits that to the file when it is due).

        A request error inside one op leaves the batch usable; any other exception
        aborts the whole batch (earlier batches stay pending) and rebuilds the in-memory
        state from the backend.
        """
        if self._in_batch:
            raise RuntimeError("write batches do not nest")
        tx, raw = self.backend.begin_batch()
        self._in_batch = True
        self._restored_leases = None  # only the key bucket's writes change a key's lease
        batch = WriteBatch(self, tx)
        try:
            yield batch
            batch._finish()
            raw.commit()
            self.backend.end_batch(max(1, batch.change_count()))
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
            if batch._scheduled:
                self._compactions.extend(_Compaction(r) for r in batch._scheduled)
        changes = batch._changes
        if changes:
            events: list[tuple[int, list[Event]]] | None = None
            for listener, wanted in self._listeners:
                if wanted is not None and not wanted():
                    continue
                if events is None:
                    events = group_events(changes)
                listener(events)

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
                    h = crc32c.crc32c(payload_to_proto(payload), crc32c.crc32c(raw, h))
            finally:
                cm.__exit__(None, None, None)
            return KeyValueHash(h, rev, compact), current

        return compute

    # -- derived state ----------------------------------------------------

    def leased_keys(self) -> dict[bytes, int]:
        """Live key -> lease ID for every key attached to a lease (for the lessor).

        Until the first write batch after a restore (start-up, a new backend) the answer is
        the one the restore's pass over every record gathered; after it, every live key is
        read again."""
        if self._restored_leases is not None:
            return dict(self._restored_leases)
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
