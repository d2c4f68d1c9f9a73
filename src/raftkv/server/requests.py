"""The payload of a replicated request: a normal Raft entry's data, or a conf change's context.

Owns: the entry-data encoding, versioned by its first byte::

    format 2:  0x82 | kind | request id (8) | auth revision (8) | user length (2) | user | body
    format 1:  0x81 | kind (1 byte) | request id (8 bytes, big endian) | body
    legacy:    kind (1 byte, below 0x80) | request id (8 bytes) | body     (raftkv 0.1 logs)

The body is the serialized etcdserverpb message named by the kind (its upb parser is fast and
its bytes are what clients sent), or a small struct for internal requests.  Format 2 carries
who asked (etcd's ``RequestHeader.username`` and ``auth_revision``): proposed only while auth is
enabled, checked at apply, so a permission change takes effect at one Raft index everywhere.
The first byte tells a decoder which layout follows, so old entries stay readable forever.

Contracts:
- ``decode_request`` returns a ``Request`` or raises ``RequestDecodeError``; an unknown format
  or kind is an error (``UnknownRequestError`` names it), never silently skipped: every member
  must apply the same entries the same way, so a member that cannot decode an entry stops
  rather than diverge;
- each kind has the cluster version from which it may be proposed (``KIND_SINCE``): a member
  proposes a kind only once the cluster version allows it, so no member of a compatible
  cluster ever meets a kind it does not know.
"""

from __future__ import annotations

import itertools
import struct
from enum import IntEnum
from typing import NamedTuple

from raftkv.version import Version

FORMAT_LEGACY = 0
FORMAT_V1 = 1
FORMAT_V2 = 2
_FORMAT_BASE = 0x80
_V1 = struct.Struct(">BBQ")  # format byte, kind, request id
_V2 = struct.Struct(">BBQQH")  # format byte, kind, request id, auth revision, user length
_LEGACY = struct.Struct(">BQ")  # kind, request id


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
    CLUSTER_VERSION = 11  # the leader sets the cluster version (etcd's ClusterVersionSet)
    DOWNGRADE = 12  # downgrade enabled or cancelled (etcd's DowngradeInfoSet)
    MEMBER_CHANGE = 13  # the context of a conf change: which member, and who waits for it
    # auth (etcd's Auth* internal requests); bodies are etcdserverpb messages, passwords hashed
    AUTH_ENABLE = 14
    AUTH_DISABLE = 15
    AUTHENTICATE = 16  # InternalAuthenticateRequest: every member assigns the simple token
    AUTH_USER_ADD = 17
    AUTH_USER_DELETE = 18
    AUTH_USER_CHANGE_PASSWORD = 19
    AUTH_USER_GRANT_ROLE = 20
    AUTH_USER_REVOKE_ROLE = 21
    AUTH_ROLE_ADD = 22
    AUTH_ROLE_DELETE = 23
    AUTH_ROLE_GRANT_PERMISSION = 24
    AUTH_ROLE_REVOKE_PERMISSION = 25


AUTH_KINDS = frozenset(k for k in RequestKind if k.name.startswith("AUTH"))
FIRST_VERSION = Version(0, 1)
AUTH_SINCE = Version(0, 3)
KIND_SINCE: dict[RequestKind, Version] = (
    {kind: FIRST_VERSION for kind in RequestKind}
    | {RequestKind.MEMBER_CHANGE: Version(0, 2)}
    | dict.fromkeys(AUTH_KINDS, AUTH_SINCE)
)
"""The lowest cluster version at which each kind may be proposed.  CLUSTER_VERSION and
DOWNGRADE are never gated: they are how the cluster version is set, and a downgrade holds the
cluster at a version below the current one (its targets start at the first release that knows
them, ``versions.FIRST_DOWNGRADE_TARGET``)."""

CHECKPOINT_KINDS = frozenset((RequestKind.HASH_CHECK, RequestKind.COMPACTION))
"""Kinds whose apply ends a batch: every member hashes its state at exactly that entry."""

_KINDS = {kind.value: kind for kind in RequestKind}  # a dict lookup, cheaper than RequestKind(k)


class Request(NamedTuple):
    kind: RequestKind
    request_id: int
    body: bytes
    username: str = ""  # who asked, while auth is enabled (format 2)
    auth_revision: int = 0  # the auth revision the asker's token was issued at


class RequestDecodeError(ValueError):
    """Entry data is not a request this version understands."""


class UnknownRequestError(RequestDecodeError):
    """A well-formed entry of a format or kind this version does not know (a newer member
    proposed it): the message names it; the member must stop, not skip it."""


def encode_request(
    kind: RequestKind,
    request_id: int,
    body: bytes,
    username: str = "",
    auth_revision: int = 0,
) -> bytes:
    """Format 1, or format 2 when a user is named (auth enabled)."""
    if not username and not auth_revision:
        return _V1.pack(_FORMAT_BASE | FORMAT_V1, kind, request_id) + body
    user = username.encode()
    head = _V2.pack(_FORMAT_BASE | FORMAT_V2, kind, request_id, auth_revision, len(user))
    return head + user + body


def decode_request(data: bytes) -> Request:
    if not data:
        raise RequestDecodeError("empty entry data")
    first = data[0]
    username, auth_revision = "", 0
    if first == _FORMAT_BASE | FORMAT_V1:
        if len(data) < _V1.size:
            raise RequestDecodeError(f"entry data of {len(data)} bytes is shorter than a header")
        _fmt, kind, request_id = _V1.unpack_from(data)
        body = data[_V1.size :]
    elif first == _FORMAT_BASE | FORMAT_V2:
        if len(data) < _V2.size:
            raise RequestDecodeError(f"entry data of {len(data)} bytes is shorter than a header")
        _fmt, kind, request_id, auth_revision, n = _V2.unpack_from(data)
        end = _V2.size + n
        if len(data) < end:
            raise RequestDecodeError(f"entry data of {len(data)} bytes ends inside its user name")
        try:
            username = data[_V2.size : end].decode()
        except UnicodeDecodeError:
            raise RequestDecodeError("entry data holds a user name that is not UTF-8") from None
        body = data[end:]
    elif first < _FORMAT_BASE:
        if len(data) < _LEGACY.size:
            raise RequestDecodeError(f"entry data of {len(data)} bytes is shorter than a header")
        kind, request_id = _LEGACY.unpack_from(data)
        body = data[_LEGACY.size :]
    else:
        raise UnknownRequestError(f"entry format {first - _FORMAT_BASE}")
    parsed = _KINDS.get(kind)
    if parsed is None:
        raise UnknownRequestError(f"request kind {kind}")
    return Request(parsed, request_id, body, username, auth_revision)


def request_kind(data: bytes) -> int:
    """The kind byte of entry data in any known format, without decoding the rest; 0 for
    data too short or of an unknown format (``decode_request`` reports those)."""
    if len(data) >= _V1.size and data[0] in (_FORMAT_BASE | FORMAT_V1, _FORMAT_BASE | FORMAT_V2):
        return data[1]
    if data and data[0] < _FORMAT_BASE:
        return data[0]
    return 0


class RequestIdGenerator:
    """Cluster-unique request IDs, etcd's idutil scheme.

    The top 16 bits are the low bits of the member ID, the next 40 bits the start time in
    milliseconds, the low 8 bits a counter; the time+counter part increments, so IDs from one
    member never repeat within a run and practically never across restarts.
    """

    def __init__(self, member_id: int, now_ms: int) -> None:
        start = now_ms
        self._prefix = (member_id & 0xFFFF) << 48
        self._counter = itertools.count(((start & ((1 << 40) - 1)) << 8) + 1)

    def next(self) -> int:
        return self._prefix | (next(self._counter) & ((1 << 48) - 1))
