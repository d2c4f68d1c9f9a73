"""Plain records of the MVCC data model, mirroring etcd's mvccpb and etcdserverpb.

Owns: ``KeyValue``, ``Event`` and the request/response records of the KV
service (Range, Put, DeleteRange, Txn, Compaction) as frozen dataclasses.  The
gRPC layer translates them to and from protobuf; field names and defaults are
those of etcd's rpc.proto so the translation is one-to-one.

Contracts:
- ``range_end`` follows etcd: ``b""`` means the single key ``key``;
  ``b"\\x00"`` means every key >= ``key``; anything else the half-open interval
  ``[key, range_end)``;
- revisions are etcd main revisions (int64); 0 in a request means "current";
- sequences are tuples so a record never changes after it was built.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import TypeAlias


@dataclass(frozen=True, slots=True)
class KeyValue:
    """One version of a key (mvccpb.KeyValue). A tombstone has only ``key`` set."""

    key: bytes
    create_revision: int = 0
    mod_revision: int = 0
    version: int = 0
    value: bytes = b""
    lease: int = 0


class EventType(IntEnum):
    PUT = 0
    DELETE = 1


@dataclass(frozen=True, slots=True)
class Event:
    """A change to one key. For DELETE, ``kv`` has only key and mod_revision set."""

    type: EventType
    kv: KeyValue
    prev_kv: KeyValue | None = None


class SortOrder(IntEnum):
    NONE = 0
    ASCEND = 1
    DESCEND = 2


class SortTarget(IntEnum):
    KEY = 0
    VERSION = 1
    CREATE = 2
    MOD = 3
    VALUE = 4


@dataclass(frozen=True, slots=True)
class RangeRequest:
    key: bytes
    range_end: bytes = b""
    limit: int = 0
    revision: int = 0
    sort_order: SortOrder = SortOrder.NONE
    sort_target: SortTarget = SortTarget.KEY
    serializable: bool = False
    keys_only: bool = False
    count_only: bool = False
    min_mod_revision: int = 0
    max_mod_revision: int = 0
    min_create_revision: int = 0
    max_create_revision: int = 0


@dataclass(frozen=True, slots=True)
class RangeResponse:
    """``revision`` is the header revision; ``count`` counts matches before limit and filters."""

    revision: int
    kvs: tuple[KeyValue, ...] = ()
    more: bool = False
    count: int = 0


@dataclass(frozen=True, slots=True)
class PutRequest:
    key: bytes
    value: bytes = b""
    lease: int = 0
    prev_kv: bool = False
    ignore_value: bool = False
    ignore_lease: bool = False


@dataclass(frozen=True, slots=True)
class PutResponse:
    revision: int
    prev_kv: KeyValue | None = None


@dataclass(frozen=True, slots=True)
class DeleteRangeRequest:
    key: bytes
    range_end: bytes = b""
    prev_kv: bool = False


@dataclass(frozen=True, slots=True)
class DeleteRangeResponse:
    revision: int
    deleted: int = 0
    prev_kvs: tuple[KeyValue, ...] = ()


class CompareResult(IntEnum):
    EQUAL = 0
    GREATER = 1
    LESS = 2
    NOT_EQUAL = 3


class CompareTarget(IntEnum):
    VERSION = 0
    CREATE = 1
    MOD = 2
    VALUE = 3
    LEASE = 4


@dataclass(frozen=True, slots=True)
class Compare:
    """One guard of a Txn; the operand used is the field named by ``target``
    (etcd's ``target_union`` oneof)."""

    key: bytes
    target: CompareTarget
    result: CompareResult
    version: int = 0
    create_revision: int = 0
    mod_revision: int = 0
    value: bytes = b""
    lease: int = 0
    range_end: bytes = b""


@dataclass(frozen=True, slots=True)
class TxnRequest:
    compare: tuple[Compare, ...] = ()
    success: tuple[RequestOp, ...] = ()
    failure: tuple[RequestOp, ...] = ()


@dataclass(frozen=True, slots=True)
class TxnResponse:
    revision: int
    succeeded: bool
    responses: tuple[ResponseOp, ...] = ()


@dataclass(frozen=True, slots=True)
class CompactionRequest:
    revision: int
    physical: bool = False


@dataclass(frozen=True, slots=True)
class CompactionResponse:
    revision: int


RequestOp: TypeAlias = RangeRequest | PutRequest | DeleteRangeRequest | TxnRequest
ResponseOp: TypeAlias = RangeResponse | PutResponse | DeleteRangeResponse | TxnResponse
WriteRequest: TypeAlias = (
    PutRequest | DeleteRangeRequest | TxnRequest | CompactionRequest | RangeRequest
)
WriteResponse: TypeAlias = (
    PutResponse | DeleteRangeResponse | TxnResponse | CompactionResponse | RangeResponse
)


@dataclass(frozen=True, slots=True)
class KeyValueHash:
    """Result of HashKV: CRC32C of the key bucket up to ``revision``."""

    hash: int
    revision: int
    compact_revision: int
