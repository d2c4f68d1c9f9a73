"""The front link: how a gRPC front process hands KV calls to its member (``--grpc-front-processes``).

A front (``raftkv.app.front``) terminates the client's gRPC connection; the member keeps
everything behind it.  KV's unary calls, the hot path, cross one Unix socket per front as
frames; every other method goes to the member's private gRPC socket (``raftkv.app.fronts``).

Frames (big-endian), each ``HEAD`` then its body:
- request, front to member: ``(length, call id, method)``, then the caller's auth token and
  the CN of the client certificate it presented (each a 2-byte length, then UTF-8; empty
  without one), then the request's protobuf bytes;
- response, member to front: ``(length, call id, gRPC status code)``, then the response's
  protobuf bytes (code 0) or the status message in UTF-8;
- hello, front to member, once, when its listeners are bound: method ``HELLO``, the front's
  process ID as the call id, no body.
``length`` counts the bytes after itself.  ``method`` indexes ``KV_METHODS``.

This module is the wire format both ends share; the member's end, which answers the frames,
is ``raftkv.app.fronts.MemberLink`` (kept there so that a front process does not import the
member's services).

Contracts:
- the member answers every request frame exactly once, in any order, through the same
  ``KVService`` object its gRPC server uses, so validation, auth, fencing and etcd's status
  and message for each error are the member's own;
- frames written within one event-loop iteration leave in one write (``FrameWriter``);
- a request that does not decode is answered INVALID_ARGUMENT with gRPC-go's text, as the
  gRPC server answers it (``raftkv.api.registration``); a frame with an unknown method is
  answered UNIMPLEMENTED, one whose caller fields are cut short INVALID_ARGUMENT; a stream
  that breaks the framing itself (a length out of range) raises ``LinkError`` and the link
  is closed.
"""

from __future__ import annotations

import asyncio
import struct

from google.protobuf.message import Message

from raftkv.proto import rpc_pb2 as pb

HEAD = struct.Struct(">IIB")
FIELD_LEN = struct.Struct(">H")
HELLO = 255
MAX_FRAME = 1 << 31
"""Frames longer than this break the framing (gRPC's own message limits come first)."""

KV_SERVICE = "/etcdserverpb.KV/"
KV_METHODS = ("Range", "Put", "DeleteRange", "Txn", "Compact")
REQUESTS: dict[str, type[Message]] = {
    "Range": pb.RangeRequest,
    "Put": pb.PutRequest,
    "DeleteRange": pb.DeleteRangeRequest,
    "Txn": pb.TxnRequest,
    "Compact": pb.CompactionRequest,
}
"""The request type of each of ``KV_METHODS``."""

Frame = tuple[int, int, bytes]
"""(call id, method or status code, body)."""


class LinkError(Exception):
    """The byte stream is not a sequence of frames; the link must be closed."""


class FrameReader:
    """Splits a byte stream into frames; keeps a partial frame until the rest arrives."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[Frame]:
        """The frames ``data`` completes, in order; raises ``LinkError`` on a broken stream."""
        buf = self._buf
        buf += data
        frames = []
        pos = 0
        while len(buf) - pos >= HEAD.size:
            length, call_id, code = HEAD.unpack_from(buf, pos)
            if length < HEAD.size - 4 or length > MAX_FRAME:
                raise LinkError(f"frame length {length} at offset {pos} is out of range")
            end = pos + 4 + length
            if end > len(buf):
                break
            frames.append((call_id, code, bytes(buf[pos + HEAD.size : end])))
            pos = end
        del buf[:pos]
        return frames


class FrameWriter:
    """Writes frames to ``transport``; those of one loop iteration leave in one write."""

    def __init__(self, transport: asyncio.Transport) -> None:
        self._transport = transport
        self._pending: list[bytes] = []

    def write(self, call_id: int, code: int, *body: bytes) -> None:
        if not self._pending:
            asyncio.get_running_loop().call_soon(self._flush)
        self._pending.append(HEAD.pack(HEAD.size - 4 + sum(map(len, body)), call_id, code))
        self._pending.extend(body)

    def _flush(self) -> None:
        if not self._transport.is_closing():
            self._transport.write(b"".join(self._pending))
        self._pending.clear()


def request_body(token: str | None, cn: str | None, request: bytes) -> tuple[bytes, bytes]:
    """A request frame's body, in two parts: the caller's fields and the request's bytes."""
    raw_token, raw_cn = (token or "").encode(), (cn or "").encode()
    head = FIELD_LEN.pack(len(raw_token)) + raw_token + FIELD_LEN.pack(len(raw_cn)) + raw_cn
    return head, request


def split_request(body: bytes) -> tuple[str | None, str | None, bytes]:
    """(token, CN, request bytes) of a request frame's body, None for an empty field;
    ``ValueError`` when the body is shorter than its fields say."""
    fields: list[str | None] = []
    pos = 0
    for name in ("token", "CN"):
        if len(body) < pos + FIELD_LEN.size:
            raise ValueError(f"request frame shorter than its {name} length")
        (n,) = FIELD_LEN.unpack_from(body, pos)
        pos += FIELD_LEN.size
        if len(body) < pos + n:
            raise ValueError(f"request frame shorter than its {name}")
        fields.append(body[pos : pos + n].decode() if n else None)
        pos += n
    return fields[0], fields[1], body[pos:]
