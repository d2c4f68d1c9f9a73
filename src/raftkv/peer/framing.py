"""Wire format of the member-to-member protocol.

Owns: the frame layout, the frame kinds, and the encoding of every frame
payload (handshake, raft message batches, requests/responses, snapshot
transfer).  Pure functions plus one async frame reader; no connection logic.

Frame layout (all integers big-endian)::

    length u32 | kind u8 | crc u32 | payload (length bytes)

``crc`` is the CRC32C of ``length | kind`` followed by the payload, so a
flipped bit anywhere in a frame is detected.  Every connection starts with a
``HELLO`` frame whose payload begins with ``MAGIC`` and ``PROTOCOL_VERSION``.

Error contract (h11 style): a decoder either returns a value or raises
``FrameError`` ("the peer sent garbage"); a clean or unclean end of stream
raises ``ConnectionClosedError``.  Nothing else escapes.
"""

from __future__ import annotations

import asyncio
import struct
from dataclasses import dataclass
from enum import IntEnum

import crc32c

from raftkv.version import MIN_CLUSTER_VERSION, SERVER_VERSION, Version

MAGIC = b"RKVP"
PROTOCOL_VERSION = 2  # 2: the handshake carries server versions (raftkv 0.2)
MAX_FRAME_PAYLOAD = 64 * 1024 * 1024
"""Largest payload a reader accepts; larger lengths are treated as corruption."""

_HEADER = struct.Struct(">IBI")
HEADER_SIZE = _HEADER.size
_LEN_KIND = struct.Struct(">IB")
_U32 = struct.Struct(">I")
_HELLO_HEAD = struct.Struct(">4sH")  # magic, protocol version: readable in every version
_HELLO = struct.Struct(">4sHBQQQHHHHH")
_HELLO_OK = struct.Struct(">HQQHHHHH")
_REQUEST = struct.Struct(">QH")
_RESPONSE = struct.Struct(">QB")
_SNAP_BEGIN = struct.Struct(">Q")
_SNAP_END = struct.Struct(">QI")


class FrameError(Exception):
    """The peer sent bytes that are not a valid frame (corruption or protocol violation)."""


class ConnectionClosedError(ConnectionError):
    """The stream ended (possibly in the middle of a frame)."""


class FrameKind(IntEnum):
    HELLO = 1
    HELLO_OK = 2
    ERROR = 3
    MESSAGES = 4
    REQUEST = 5
    RESPONSE = 6
    SNAP_BEGIN = 7
    SNAP_CHUNK = 8
    SNAP_END = 9
    SNAP_ACK = 10


class StreamKind(IntEnum):
    """What a connection carries, announced in its handshake."""

    MESSAGES = 1  # raft messages and requests from the dialer; responses back
    SNAPSHOT = 2  # one MsgSnap plus its backend file; one SNAP_ACK or ERROR back
    CLUSTER_INFO = 3  # no membership needed: one RESPONSE with the cluster's member list


class ErrorCode(IntEnum):
    PROTOCOL = 1
    CLUSTER_ID_MISMATCH = 2
    MEMBER_REMOVED = 3
    WRONG_MEMBER = 4
    INCOMPATIBLE_VERSION = 5
    SNAPSHOT_FAILED = 6


# Error texts follow etcd's rafthttp where etcd has one.
ERROR_TEXT = {
    ErrorCode.PROTOCOL: "protocol violation",
    ErrorCode.CLUSTER_ID_MISMATCH: "cluster ID mismatch",
    ErrorCode.MEMBER_REMOVED: "the member has been permanently removed from the cluster",
    ErrorCode.WRONG_MEMBER: "to member ID mismatch",
    ErrorCode.INCOMPATIBLE_VERSION: "incompatible version",
    ErrorCode.SNAPSHOT_FAILED: "snapshot transfer failed",
}


def encode_frame(kind: FrameKind, payload: bytes | bytearray | memoryview) -> bytes:
    """One complete frame.  ``payload`` must not exceed ``MAX_FRAME_PAYLOAD``."""
    n = len(payload)
    if n > MAX_FRAME_PAYLOAD:
        raise ValueError(f"frame payload of {n} bytes exceeds {MAX_FRAME_PAYLOAD}")
    head = _LEN_KIND.pack(n, kind)
    crc = crc32c.crc32c(payload, crc32c.crc32c(head))
    return b"".join((head, _U32.pack(crc), payload))


async def read_frame(reader: asyncio.StreamReader) -> tuple[FrameKind, bytes]:
    """Read one frame; raise ``FrameError`` if it is corrupt, ``ConnectionClosedError`` at EOF."""
    try:
        header = await reader.readexactly(HEADER_SIZE)
    except asyncio.IncompleteReadError as e:
        raise ConnectionClosedError("stream closed") from e
    n, kind, crc = _HEADER.unpack(header)
    if n > MAX_FRAME_PAYLOAD:
        raise FrameError(f"frame length {n} exceeds {MAX_FRAME_PAYLOAD}")
    try:
        payload = await reader.readexactly(n) if n else b""
    except asyncio.IncompleteReadError as e:
        raise ConnectionClosedError("stream closed inside a frame") from e
    if crc32c.crc32c(payload, crc32c.crc32c(header[:5])) != crc:
        raise FrameError("frame CRC mismatch")
    try:
        return FrameKind(kind), payload
    except ValueError:
        raise FrameError(f"unknown frame kind {kind}") from None


# --- handshake -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PeerVersions:
    """What a member tells a peer of its versions in the handshake (etcd's X-Server-Version
    and X-Min-Cluster-Version headers)."""

    server: Version = SERVER_VERSION
    min_cluster: Version = MIN_CLUSTER_VERSION

    def incompatibility(self, remote: PeerVersions, remote_name: str) -> str | None:
        """etcd's checkVersionCompatibility, from this (local) side: why ``remote`` cannot
        talk to this member, or None."""
        if remote.server.minor_version < self.min_cluster.minor_version:
            return (
                f"remote version is too low: remote[{remote_name}]={remote.server}, "
                f"local={self.server}"
            )
        if remote.min_cluster.minor_version > self.server.minor_version:
            return (
                f"local version is too low: remote[{remote_name}]={remote.server}, "
                f"local={self.server}"
            )
        return None


LOCAL_VERSIONS = PeerVersions()


@dataclass(frozen=True, slots=True)
class Hello:
    version: int
    stream: StreamKind
    cluster_id: int
    frm: int
    to: int
    versions: PeerVersions = LOCAL_VERSIONS


def _pack_versions(v: PeerVersions) -> tuple[int, ...]:
    return (v.server.major, v.server.minor, v.server.patch, *v.min_cluster[:2])


def _unpack_versions(fields: tuple[int, ...]) -> PeerVersions:
    return PeerVersions(Version(*fields[:3]), Version(*fields[3:5]))


def encode_hello(h: Hello) -> bytes:
    payload = _HELLO.pack(
        MAGIC, h.version, h.stream, h.cluster_id, h.frm, h.to, *_pack_versions(h.versions)
    )
    return encode_frame(FrameKind.HELLO, payload)


def decode_hello(payload: bytes) -> Hello:
    """The handshake; one of another protocol version comes back with only its version set
    (``stream`` MESSAGES, IDs 0), for the receiver to refuse with a clear reason."""
    if len(payload) < _HELLO_HEAD.size:
        raise FrameError("bad handshake length")
    magic, version = _HELLO_HEAD.unpack_from(payload)
    if magic != MAGIC:
        raise FrameError("bad handshake magic")
    if version != PROTOCOL_VERSION:
        return Hello(version, StreamKind.MESSAGES, 0, 0, 0)
    if len(payload) != _HELLO.size:
        raise FrameError("bad handshake length")
    _magic, version, stream, cluster_id, frm, to, *versions = _HELLO.unpack(payload)
    try:
        kind = StreamKind(stream)
    except ValueError:
        raise FrameError(f"unknown stream kind {stream}") from None
    return Hello(version, kind, cluster_id, frm, to, _unpack_versions(tuple(versions)))


@dataclass(frozen=True, slots=True)
class HelloOk:
    version: int
    cluster_id: int
    member_id: int
    versions: PeerVersions = LOCAL_VERSIONS


def encode_hello_ok(h: HelloOk) -> bytes:
    payload = _HELLO_OK.pack(h.version, h.cluster_id, h.member_id, *_pack_versions(h.versions))
    return encode_frame(FrameKind.HELLO_OK, payload)


def decode_hello_ok(payload: bytes) -> HelloOk:
    if len(payload) != _HELLO_OK.size:
        raise FrameError("bad handshake reply length")
    version, cluster_id, member_id, *versions = _HELLO_OK.unpack(payload)
    return HelloOk(version, cluster_id, member_id, _unpack_versions(tuple(versions)))


def encode_error(code: ErrorCode, detail: str = "") -> bytes:
    text = ERROR_TEXT[code] + (f": {detail}" if detail else "")
    return encode_frame(FrameKind.ERROR, bytes([code]) + text.encode())


def decode_error(payload: bytes) -> tuple[ErrorCode, str]:
    if not payload:
        raise FrameError("empty error frame")
    try:
        return ErrorCode(payload[0]), payload[1:].decode()
    except (ValueError, UnicodeDecodeError):
        raise FrameError("malformed error frame") from None


# --- raft message batches --------------------------------------------------------------------


def encode_batch_payload(messages: list[bytes]) -> bytes:
    """Payload of a MESSAGES frame: count, then each encoded message length-prefixed."""
    parts = [_U32.pack(len(messages))]
    for m in messages:
        parts.append(_U32.pack(len(m)))
        parts.append(m)
    return b"".join(parts)


def decode_batch_payload(payload: bytes) -> list[memoryview]:
    """Slices of ``payload``, one per message (no copies)."""
    if len(payload) < 4:
        raise FrameError("truncated message batch")
    (count,) = _U32.unpack_from(payload, 0)
    mv = memoryview(payload)
    out: list[memoryview] = []
    pos, end = 4, len(payload)
    for _ in range(count):
        if pos + 4 > end:
            raise FrameError("truncated message batch")
        (n,) = _U32.unpack_from(payload, pos)
        pos += 4
        if pos + n > end:
            raise FrameError("truncated message in batch")
        out.append(mv[pos : pos + n])
        pos += n
    if pos != end:
        raise FrameError("trailing bytes after message batch")
    return out


# --- requests ----------------------------------------------------------------------------


def encode_request(corr_id: int, kind: str, payload: bytes) -> bytes:
    k = kind.encode()
    return encode_frame(FrameKind.REQUEST, _REQUEST.pack(corr_id, len(k)) + k + payload)


def decode_request(payload: bytes) -> tuple[int, str, bytes]:
    if len(payload) < _REQUEST.size:
        raise FrameError("truncated request")
    corr_id, klen = _REQUEST.unpack_from(payload, 0)
    start = _REQUEST.size
    if start + klen > len(payload):
        raise FrameError("truncated request kind")
    try:
        kind = payload[start : start + klen].decode()
    except UnicodeDecodeError:
        raise FrameError("request kind is not UTF-8") from None
    return corr_id, kind, payload[start + klen :]


def encode_response(corr_id: int, ok: bool, payload: bytes) -> bytes:
    return encode_frame(FrameKind.RESPONSE, _RESPONSE.pack(corr_id, 1 if ok else 0) + payload)


def decode_response(payload: bytes) -> tuple[int, bool, bytes]:
    if len(payload) < _RESPONSE.size:
        raise FrameError("truncated response")
    corr_id, ok = _RESPONSE.unpack_from(payload, 0)
    if ok not in (0, 1):
        raise FrameError("bad response status")
    return corr_id, ok == 1, payload[_RESPONSE.size :]


# --- snapshot transfer -------------------------------------------------------------------


def encode_snap_begin(file_size: int, message: bytes) -> bytes:
    return encode_frame(FrameKind.SNAP_BEGIN, _SNAP_BEGIN.pack(file_size) + message)


def decode_snap_begin(payload: bytes) -> tuple[int, bytes]:
    if len(payload) < _SNAP_BEGIN.size:
        raise FrameError("truncated snapshot header")
    (size,) = _SNAP_BEGIN.unpack_from(payload, 0)
    return size, payload[_SNAP_BEGIN.size :]


def encode_snap_chunk(chunk_crc: int, data: bytes | bytearray | memoryview) -> bytes:
    """``chunk_crc`` is computed over the file bytes before they enter the frame."""
    return encode_frame(FrameKind.SNAP_CHUNK, b"".join((_U32.pack(chunk_crc), data)))


def decode_snap_chunk(payload: bytes) -> tuple[int, bytes]:
    if len(payload) < 4:
        raise FrameError("truncated snapshot chunk")
    (crc,) = _U32.unpack_from(payload, 0)
    return crc, payload[4:]


def encode_snap_end(total_size: int, total_crc: int) -> bytes:
    return encode_frame(FrameKind.SNAP_END, _SNAP_END.pack(total_size, total_crc))


def decode_snap_end(payload: bytes) -> tuple[int, int]:
    if len(payload) != _SNAP_END.size:
        raise FrameError("bad snapshot trailer length")
    size, crc = _SNAP_END.unpack(payload)
    return size, crc
