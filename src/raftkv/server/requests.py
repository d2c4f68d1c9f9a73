"""The payload of a normal Raft entry: one client or internal request.

Owns: the entry-data encoding ``kind (1 byte) | request id (8 bytes, big endian) | body``.
The body is the serialized etcdserverpb message named by the kind (its upb parser is fast and
its bytes are what clients sent), or a small struct for internal requests.

Contract: ``decode_request`` returns ``(kind, id, body)`` or raises ``RequestDecodeError``; an
unknown kind is an error, never silently skipped — every member must apply the same entries the
same way, so a member that cannot decode an entry must stop rather than diverge.
"""

from __future__ import annotations

import itertools
import struct
import time
from enum import IntEnum

_HEADER = struct.Struct(">BQ")


class RequestKind(IntEnum):
    PUT = 1
    DELETE_RANGE = 2
    TXN = 3
    COMPACTION = 4
    LEASE_GRANT = 5
    LEASE_REVOKE = 6
    LEASE_CHECKPOINT = 7
    ALARM = 8
    MEMBER_ATTRIBUTES = 9
    HASH_CHECK = 10  # no state change: every member takes a state hash at this entry


_KINDS = {kind.value: kind for kind in RequestKind}  # a dict lookup, cheaper than RequestKind(k)


class RequestDecodeError(ValueError):
    """Entry data is not a request this version understands."""


def encode_request(kind: RequestKind, request_id: int, body: bytes) -> bytes:
    return _HEADER.pack(kind, request_id) + body


def decode_request(data: bytes) -> tuple[RequestKind, int, bytes]:
    if len(data) < _HEADER.size:
        raise RequestDecodeError(f"entry data of {len(data)} bytes is shorter than a header")
    kind, request_id = _HEADER.unpack_from(data)
    parsed = _KINDS.get(kind)
    if parsed is None:
        raise RequestDecodeError(f"unknown request kind {kind}")
    return parsed, request_id, data[_HEADER.size :]


class RequestIdGenerator:
    """Cluster-unique request IDs, etcd's idutil scheme.

    The top 16 bits are the low bits of the member ID, the next 40 bits the start time in
    milliseconds, the low 8 bits a counter; the time+counter part increments, so IDs from one
    member never repeat within a run and practically never across restarts.
    """

    def __init__(self, member_id: int, now_ms: int | None = None) -> None:
        start = int(time.time() * 1000) if now_ms is None else now_ms
        self._prefix = (member_id & 0xFFFF) << 48
        self._counter = itertools.count(((start & ((1 << 40) - 1)) << 8) + 1)

    def next(self) -> int:
        return self._prefix | (next(self._counter) & ((1 << 48) - 1))
