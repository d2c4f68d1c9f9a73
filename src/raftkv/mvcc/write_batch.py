"""Write batches: the requests of many Raft entries applied in one LMDB write transaction.

Owns: ``WriteBatch`` (what ``KVStore.write_batch`` yields), ``StoreTxnWrite`` (one request's
writes, all at one main revision) and the plain-tuple record of every write (``RawKV``).

Contracts:
- every request of a batch gets the batch's next main revision; its writes get sub revisions
  in order; ``begin_entry`` skips an entry at or below the consistent index already applied;
- the consistent index and term of the last entry are written in the batch's transaction
  (``_finish``), so they commit with the writes they cover;
- a batch touches the store's index under ``store.lock`` (readers may be on other threads);
  it is the store's friend: it reads and updates the store's revision bookkeeping directly.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING

from raftkv.mvcc import apply
from raftkv.mvcc.backend import (
    BUCKET_KEY,
    BUCKET_META,
    META_CONSISTENT_INDEX,
    META_SCHEDULED_COMPACT,
    META_TERM,
    WriteTxn,
)
from raftkv.mvcc.errors import CompactedError, FutureRevError, LeaseNotFoundError, MVCCRequestError
from raftkv.mvcc.revision import SUB_BITS, encode_kv_fields, main_to_bytes, pack, rev_to_bytes
from raftkv.mvcc.types import (
    CompactionRequest,
    CompactionResponse,
    DeleteRangeRequest,
    DeleteRangeResponse,
    KeyValue,
    PutRequest,
    PutResponse,
    RangeRequest,
    RangeResponse,
    TxnRequest,
    TxnResponse,
    WriteRequest,
    WriteResponse,
)

if TYPE_CHECKING:
    from raftkv.mvcc.kvstore import KVStore

_U64 = struct.Struct(">Q")

RawKV = tuple[bytes, int, int, int, bytes, int]
"""One write as ``KeyValue``'s fields in order: (key, create_revision, mod_revision, version,
value, lease).  A tombstone is ``(key, 0, mod_revision, 0, b"", 0)``: the tombstone event's
``KeyValue``.  The write path keeps these plain tuples; ``KeyValue`` objects are built only for
listeners."""


class StoreTxnWrite:
    """One MVCC write transaction inside a batch: all its writes share one main revision."""

    def __init__(self, store: KVStore, tx: WriteTxn, begin_rev: int) -> None:
        self._store = store
        self._tx = tx
        self.begin_rev = begin_rev
        self.changes: list[RawKV] = []

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
        idx_rev = pack(rev, len(self.changes))
        with store.lock:
            # An error below aborts the batch, which rebuilds the index from the backend.
            created_packed, ver = store._index.put_latest(key, idx_rev)
            created = created_packed >> SUB_BITS
            self._tx.put(
                BUCKET_KEY,
                rev_to_bytes(idx_rev),
                encode_kv_fields(key, value, created, rev, ver, lease),
            )
        self.changes.append((key, created, rev, ver, value, lease))
        return rev

    def delete_range(self, key: bytes, end: bytes | None) -> tuple[int, int]:
        store = self._store
        cur = self.begin_rev + 1 if self.changes else self.begin_rev
        rev = self.begin_rev + 1
        with store.lock:
            found = store._index.range(key, end, cur)
            for k, _rev in found:
                idx_rev = pack(rev, len(self.changes))
                self._tx.put(
                    BUCKET_KEY, rev_to_bytes(idx_rev, True), encode_kv_fields(k, b"", 0, 0, 0, 0)
                )
                if not store._index.tombstone(k, idx_rev):
                    raise AssertionError(f"tombstone of a dead key {k!r}")
                self.changes.append((k, 0, rev, 0, b"", 0))
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
        # Every write of the batch in revision order (all writes of one request share its
        # main revision, the tuples' mod_revision).
        self._changes: list[RawKV] = []
        self._scheduled: list[int] = []

    @property
    def revision(self) -> int:
        """Current revision including the requests applied so far in this batch."""
        return self._rev

    def change_count(self) -> int:
        """A mark for ``changes_since``: how many writes this batch has made so far."""
        return len(self._changes)

    def changes_since(self, mark: int) -> list[RawKV]:
        """The writes made after ``mark``, in revision order (see ``RawKV``)."""
        return self._changes[mark:]

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
        """Give the writes of ``t`` the batch's next main revision (the one they were written
        at) and record them."""
        self._rev += 1
        self._changes.extend(t.changes)

    def put_plain(self, key: bytes, value: bytes, lease: int) -> tuple[int, int, int]:
        """A put request without prev_kv, ignore_value or ignore_lease, as one request.

        Same effect, errors and revision as ``put(PutRequest(key, value, lease))`` without its
        per-request objects; returns (revision, create revision, version) of the write.
        """
        store = self._store
        if lease and store.lease_exists is not None and not store.lease_exists(lease):
            raise LeaseNotFoundError()
        rev = self._rev + 1
        with store.lock:
            # Sub revision 0: the request's only write.  (An error below aborts the batch,
            # which rebuilds the index from the backend.)
            created_packed, ver = store._index.put_latest(key, rev << SUB_BITS)
            created = created_packed >> SUB_BITS
            self.tx.put(
                BUCKET_KEY,
                main_to_bytes(rev),
                encode_kv_fields(key, value, created, rev, ver, lease),
            )
        self._rev = rev
        self._changes.append((key, created, rev, ver, value, lease))
        return rev, created, ver

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
