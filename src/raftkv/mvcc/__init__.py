"""MVCC storage: revisions, key index, LMDB backend, compaction, watchable store, state hash.

Public entry points: ``Backend`` (one LMDB environment per member),
``KVStore`` (etcd's mvcc store: ranges, write batches with the consistent
index, compaction, HashKV) and ``WatchableStore`` (watchers on top of it).
"""

from __future__ import annotations

from raftkv.mvcc.backend import Backend, BackendConfig
from raftkv.mvcc.errors import (
    BackendCorruptionError,
    BackendError,
    BackendSpaceExceededError,
    CompactedError,
    DuplicateKeyError,
    FutureRevError,
    KeyNotFoundError,
    LeaseNotFoundError,
    MVCCError,
    MVCCRequestError,
)
from raftkv.mvcc.kvstore import KVStore
from raftkv.mvcc.types import (
    CompactionRequest,
    CompactionResponse,
    Compare,
    CompareResult,
    CompareTarget,
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
    SortOrder,
    SortTarget,
    TxnRequest,
    TxnResponse,
)
from raftkv.mvcc.watchable import QueueSink, WatchableStore, WatchFilter, WatchResponse
from raftkv.mvcc.write_batch import WriteBatch

__all__ = [
    "Backend",
    "BackendConfig",
    "BackendCorruptionError",
    "BackendError",
    "BackendSpaceExceededError",
    "CompactedError",
    "CompactionRequest",
    "CompactionResponse",
    "Compare",
    "CompareResult",
    "CompareTarget",
    "DeleteRangeRequest",
    "DeleteRangeResponse",
    "DuplicateKeyError",
    "Event",
    "EventType",
    "FutureRevError",
    "KVStore",
    "KeyNotFoundError",
    "KeyValue",
    "KeyValueHash",
    "LeaseNotFoundError",
    "MVCCError",
    "MVCCRequestError",
    "PutRequest",
    "PutResponse",
    "QueueSink",
    "RangeRequest",
    "RangeResponse",
    "SortOrder",
    "SortTarget",
    "TxnRequest",
    "TxnResponse",
    "WatchFilter",
    "WatchResponse",
    "WatchableStore",
    "WriteBatch",
]
