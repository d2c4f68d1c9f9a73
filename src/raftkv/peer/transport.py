"""Member-to-member transport: raft messages, snapshot streaming, requests.

Owns: ``PeerTransport`` — the listeners, the incoming side of every
connection, the table of peers (one ``PeerStream`` each), snapshot sends, and
the request/response registry.  Conceptually etcd's rafthttp (a stream per
peer, a separate connection per snapshot, cluster-ID and removed-member
checks), over a framed TCP protocol (``raftkv.peer.framing``).

Contracts:
- every public method is called on the event loop thread; none blocks;
- callbacks (``on_message``, ``on_snapshot``, ``on_unreachable``,
  ``on_snapshot_status``) run on the event loop and are never invoked
  re-entrantly from inside ``send``/``send_snapshot`` (they are scheduled);
- messages from one peer are delivered in the order that peer sent them;
- a connection is bound to the member ID its handshake claims: only a member
  of the current configuration (a peer added here) that is not removed is
  accepted, and a message inside it claiming another sender is dropped and
  logged (``stats.forged_messages``).  Over TLS (``PeerSecurity``) the claim
  is backed by a certificate the peer CA signed; in plaintext it is not, and
  the member warns at start;
- a frame that fails its CRC or does not parse is never delivered: the
  connection is dropped and ``stats.corrupt_frames`` counts it;
- a received snapshot is answered ``SNAP_ACK`` and handed to ``on_snapshot``
  only once every chunk CRC, its size and its whole-file CRC matched
  (``raftkv.peer.snapshot``) and ``check_snapshot``, when given, accepted the
  file (the member's: every stored value passes its CRC).  Otherwise the file
  is deleted, one warning names the peer, the snapshot index and the reason,
  the sender gets an ``ERROR`` (``SNAPSHOT_FAILED``) and reports
  ``on_snapshot_status(peer, False)``, and ``stats.snapshots_failed`` counts it;
- ``on_unreachable(peer)`` is reported when messages to the peer are dropped,
  at most once per ``unreachable_interval`` seconds per peer, and after every
  failed snapshot send (before that send's ``on_snapshot_status``).
"""

from __future__ import annotations

import asyncio
import logging
import random
import socket
import ssl
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any

from raftkv.peer import framing
from raftkv.peer.framing import (
    LOCAL_VERSIONS,
    ErrorCode,
    FrameError,
    FrameKind,
    Hello,
    HelloOk,
    PeerVersions,
    StreamKind,
)
from raftkv.peer.outgoing import (
    PeerRefusedError,
    PeerRequestError,
    PeerStats,
    PeerStream,
    StreamConfig,
    dial,
    fetch_cluster_info,
    parse_url,
)
from raftkv.peer.security import PLAINTEXT, PeerSecurity
from raftkv.peer.snapshot import (
    ChunkHook,
    FileCheck,
    SnapshotTransferError,
    receive_file,
    send_file,
)
from raftkv.raft.codec import CodecError, decode_message, encode_message
from raftkv.raft.types import LOCAL_MESSAGES, Message, MessageType

__all__ = [
    "FaultHooks",
    "PeerRefusedError",
    "PeerRequestError",
    "PeerStats",
    "PeerTransport",
    "PeerVersions",
    "TransportStats",
    "fetch_cluster_info",
]

Handler = Callable[[int, bytes], Awaitable[bytes]]


@dataclass
class TransportStats:
    """Counters of the incoming side; read them, never write them."""

    messages_received: int = 0
    frames_received: int = 0
    corrupt_frames: int = 0
    refused_handshakes: int = 0
    forged_messages: int = 0
    snapshots_received: int = 0
    snapshots_failed: int = 0
    requests_served: int = 0


@dataclass
class FaultHooks:
    """Test-only fault injection; every hook is None (zero cost) in production."""

    snapshot_chunk: ChunkHook | None = None


class PeerTransport:
    def __init__(
        self,
        *,
        member_id: int,
        cluster_id: int,
        listen_urls: Sequence[str],
        on_message: Callable[[Message], None],
        on_snapshot: Callable[[Message, str], None],
        on_unreachable: Callable[[int], None],
        on_snapshot_status: Callable[[int, bool], None],
        snapshot_dir: str,
        check_snapshot: FileCheck | None = None,
        logger: logging.Logger | None = None,
        on_removed: Callable[[], None] | None = None,
        seed: int | None = None,
        queue_size: int = 4096,
        dial_timeout: float = 1.0,
        max_backoff: float = 1.0,
        handshake_timeout: float = 5.0,
        snapshot_ack_timeout: float = 60.0,
        unreachable_interval: float = 0.1,
        versions: PeerVersions = LOCAL_VERSIONS,
        security: PeerSecurity = PLAINTEXT,
    ) -> None:
        """``on_removed`` is called (possibly repeatedly) when a peer refuses us as removed.

        ``check_snapshot(path)`` checks a received snapshot file before it is acknowledged
        (``raftkv.peer.snapshot.FileCheck``: blocking, run in the executor, raises to refuse
        the file); None accepts any file whose stream CRCs match.

        ``seed`` drives the reconnect jitter (default: ``member_id``).  ``security`` gives the
        TLS of ``https`` listen URLs and of dialing ``https`` peer URLs.
        """
        if member_id <= 0 or cluster_id <= 0:
            raise ValueError("member_id and cluster_id must be positive")
        self.member_id = member_id
        self.cluster_id = cluster_id
        self._listen_urls = list(listen_urls)
        for u in self._listen_urls:
            parse_url(u)
        self.security = security
        self._on_message = on_message
        self._on_snapshot = on_snapshot
        self._check_snapshot = check_snapshot
        self._on_unreachable = on_unreachable
        self._on_snapshot_status = on_snapshot_status
        self._on_removed = on_removed
        self.snapshot_dir = snapshot_dir
        self._log = logger if logger is not None else logging.getLogger("raftkv.peer")
        self._rng = random.Random(member_id if seed is None else seed)
        self.versions = versions
        self._config = StreamConfig(
            member_id=member_id,
            cluster_id=cluster_id,
            queue_size=queue_size,
            dial_timeout=dial_timeout,
            max_backoff=max_backoff,
            versions=versions,
            security=security,
        )
        # Answers a CLUSTER_INFO stream (a joining member asking for the member list).
        self.cluster_info: Callable[[], bytes] | None = None
        # Told the ID of a member of this cluster that dialled in and is not in the peer
        # table (a member that joined after what this member applied); its stream is refused.
        self.on_unknown_peer: Callable[[int], None] | None = None
        self._handshake_timeout = handshake_timeout
        self._snapshot_ack_timeout = snapshot_ack_timeout
        self._unreachable_interval = unreachable_interval
        self._peers: dict[int, PeerStream] = {}
        self._last_unreachable: dict[int, float] = {}
        self._removed: set[int] = set()
        self._handlers: dict[str, Handler] = {}
        self._servers: list[asyncio.Server] = []
        self._incoming: dict[int, asyncio.StreamWriter] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._removals: set[asyncio.Task[None]] = set()
        self._started = False
        self.stats = TransportStats()
        self.hooks = FaultHooks()
        self.addresses: list[tuple[str, int]] = []
        """Bound ``(host, port)`` of every listener, filled by ``start()``."""
        self._schemes: list[str] = []
        # TLS listeners: accepted here, the handshake made per connection (``_serve_tls``).
        self._tls_sockets: list[socket.socket] = []

    # --- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        """Listen on every listen URL (all or none) and start the streams of added peers."""
        self.addresses = []
        self._schemes = []
        try:
            for url in self._listen_urls:
                host, port = parse_url(url)
                tls = self.security.listen_context(url)
                try:
                    if tls is None:
                        server = await asyncio.start_server(self._accept, host, port)
                        self._servers.append(server)
                        sockets = list(server.sockets)
                    else:
                        sockets = [self._listen_tls(host, port, tls)]
                except OSError as exc:  # the one line a failed start shows
                    reason = exc.strerror or str(exc)
                    raise OSError(
                        exc.errno, f"cannot listen for peer traffic on {url}: {reason}"
                    ) from exc
                for sock in sockets:
                    addr = sock.getsockname()
                    self.addresses.append((str(addr[0]), int(addr[1])))
                    self._schemes.append("https" if tls else "http")
        except BaseException:
            self._close_listeners()
            raise
        for peer in self._peers.values():
            peer.start()
        self._started = True
        self._log.info(
            "peer transport started member=%x cluster=%x listen=%s",
            self.member_id,
            self.cluster_id,
            ",".join(self.urls),
        )

    @property
    def urls(self) -> list[str]:
        """``http(s)://host:port`` of every bound listener (real ports when 0 was asked)."""
        return [
            f"{s}://[{h}]:{p}" if ":" in h else f"{s}://{h}:{p}"
            for s, (h, p) in zip(self._schemes, self.addresses, strict=True)
        ]

    def _close_listeners(self) -> None:
        for server in self._servers:
            server.close()
        for sock in self._tls_sockets:
            sock.close()
        self._tls_sockets.clear()

    async def stop(self) -> None:
        self._close_listeners()
        for writer in list(self._incoming.values()):
            writer.close()
        peers = list(self._peers.values())
        self._peers.clear()
        tasks = list(self._tasks)
        for t in tasks:
            t.cancel()
        for peer in peers:
            await peer.stop()
        await asyncio.gather(*tasks, *self._removals, return_exceptions=True)
        for server in self._servers:
            await server.wait_closed()
        self._servers.clear()
        self._started = False

    # --- membership ----------------------------------------------------------------------

    def add_peer(self, peer_id: int, urls: Sequence[str]) -> None:
        if peer_id in self._peers:
            raise ValueError(f"peer {peer_id:x} already added")
        if peer_id == self.member_id:
            raise ValueError("cannot add the local member as a peer")
        peer = PeerStream(
            peer_id,
            urls,
            self._config,
            rng=self._rng,
            logger=self._log,
            on_refused=self._handle_refused,
            on_drop=self._report_unreachable,
        )
        self._peers[peer_id] = peer
        if self._started:
            peer.start()

    def update_peer(self, peer_id: int, urls: Sequence[str]) -> None:
        peer = self._peers[peer_id]
        for u in urls:
            parse_url(u)
        if tuple(urls) != peer.urls:
            peer.urls = tuple(urls)
            peer.restart()

    def remove_peer(self, peer_id: int) -> None:
        peer = self._peers.pop(peer_id, None)
        if peer is not None:
            # Not in self._tasks: stop() must await a removal, never cancel it.
            task = asyncio.get_running_loop().create_task(peer.stop())
            self._removals.add(task)
            task.add_done_callback(self._removals.discard)

    def set_removed(self, member_ids: set[int]) -> None:
        """Refuse handshakes from these members from now on, and drop their open streams."""
        self._removed = set(member_ids)
        for mid in self._removed:
            writer = self._incoming.pop(mid, None)
            if writer is not None:
                writer.close()

    def peer_stats(self, peer_id: int) -> PeerStats:
        return self._peers[peer_id].stats

    def is_connected(self, peer_id: int) -> bool:
        peer = self._peers.get(peer_id)
        return peer is not None and peer.connected.is_set()

    async def wait_connected(self, peer_ids: Sequence[int], timeout: float) -> bool:
        """True once every listed peer's outgoing stream is up; False after ``timeout``."""
        try:
            async with asyncio.timeout(timeout):
                for pid in peer_ids:
                    await self._peers[pid].connected.wait()
        except TimeoutError:
            return False
        return True

    # --- sending -------------------------------------------------------------------------

    def send(self, messages: Sequence[Message]) -> None:
        loop: asyncio.AbstractEventLoop | None = None
        for m in messages:
            if m.type in LOCAL_MESSAGES:
                raise ValueError(f"{m.type.name} is local and never sent to a peer")
            if m.type is MessageType.MSG_SNAP:
                self._log.warning("peer %x: MsgSnap given to send(); use send_snapshot", m.to)
                loop = loop or asyncio.get_running_loop()
                loop.call_soon(self._on_snapshot_status, m.to, False)
                continue
            peer = self._peers.get(m.to)
            if peer is None:
                self._log.debug("dropping %s to unknown peer %x", m.type.name, m.to)
                continue
            if not peer.enqueue(m):
                self._report_unreachable(m.to)

    def send_snapshot(self, m: Message, db_path: str) -> None:
        if m.type is not MessageType.MSG_SNAP or m.snapshot is None:
            raise ValueError("send_snapshot needs a MsgSnap carrying snapshot metadata")
        peer = self._peers.get(m.to)
        if peer is None:
            self._log.warning("snapshot to unknown peer %x refused", m.to)
            asyncio.get_running_loop().call_soon(self._on_snapshot_status, m.to, False)
            return
        self._spawn(self._send_snapshot(peer, m, db_path))

    def _report_unreachable(self, peer_id: int) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        last = self._last_unreachable.get(peer_id)
        if last is not None and now - last < self._unreachable_interval:
            return
        self._last_unreachable[peer_id] = now
        loop.call_soon(self._on_unreachable, peer_id)

    def _handle_refused(self, peer_id: int, err: PeerRefusedError) -> None:
        self._log.warning(
            "peer %x refused our stream: %s (local member %x, cluster %x)",
            peer_id,
            err.text,
            self.member_id,
            self.cluster_id,
        )
        if err.code is ErrorCode.MEMBER_REMOVED and self._on_removed is not None:
            asyncio.get_running_loop().call_soon(self._on_removed)

    async def _send_snapshot(self, peer: PeerStream, m: Message, db_path: str) -> None:
        ok = False
        hello = Hello(
            framing.PROTOCOL_VERSION,
            StreamKind.SNAPSHOT,
            self.cluster_id,
            self.member_id,
            m.to,
            self.versions,
        )
        try:
            last: Exception | None = None
            for url in peer.urls:
                try:
                    reader, writer = await dial(
                        url, hello, timeout=self._config.dial_timeout, security=self.security
                    )
                    break
                except (OSError, TimeoutError, FrameError) as e:
                    last = e
            else:
                raise ConnectionError(f"no URL of peer {m.to:x} reachable: {last!r}")
            try:
                size = await send_file(
                    reader,
                    writer,
                    peer_id=m.to,
                    message=encode_message(m),
                    db_path=db_path,
                    logger=self._log,
                    chunk_hook=self.hooks.snapshot_chunk,
                    ack_timeout=self._snapshot_ack_timeout,
                )
            finally:
                writer.close()
            ok = True
            self._log.info("snapshot sent peer=%x bytes=%d", m.to, size)
        except PeerRefusedError as e:
            self._handle_refused(m.to, e)
        except (OSError, TimeoutError, FrameError, SnapshotTransferError) as e:
            self._log.warning("snapshot send to peer %x failed: %r", m.to, e)
        finally:
            if not self._stopping_now():
                # A failed send reports the peer unreachable before its status, so
                # whoever sees the status already sees the peer as unreachable.
                if not ok:
                    self._last_unreachable.pop(m.to, None)
                    self._report_unreachable(m.to)
                asyncio.get_running_loop().call_soon(self._on_snapshot_status, m.to, ok)

    def _stopping_now(self) -> bool:
        task = asyncio.current_task()
        return task is not None and task.cancelling() > 0

    # --- requests ------------------------------------------------------------------------

    def register_handler(self, kind: str, handler: Handler) -> None:
        self._handlers[kind] = handler

    async def request(self, peer_id: int, kind: str, payload: bytes, timeout: float) -> bytes:
        peer = self._peers.get(peer_id)
        if peer is None:
            raise PeerRequestError(f"unknown peer {peer_id:x}")
        try:
            async with asyncio.timeout(timeout):
                return await peer.request(kind, payload)
        except TimeoutError:
            raise PeerRequestError(
                f"request {kind!r} to peer {peer_id:x} timed out after {timeout}s"
            ) from None

    # --- incoming side -------------------------------------------------------------------

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _listen_tls(self, host: str, port: int, tls: ssl.SSLContext) -> socket.socket:
        """A TLS listener: connections are accepted here and their handshake made one by
        one, so a refused handshake is ours to log with the peer's address and the reason
        (a listener doing TLS itself drops those silently)."""
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.create_server((host, port), family=family)
        sock.setblocking(False)
        self._tls_sockets.append(sock)
        self._spawn(self._accept_tls(sock, tls))
        return sock

    async def _accept_tls(self, sock: socket.socket, tls: ssl.SSLContext) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                conn, addr = await loop.sock_accept(sock)
            except OSError as e:
                if sock.fileno() < 0:  # closed by stop()
                    return
                self._log.warning("accepting a peer connection failed: %s", e)
                await asyncio.sleep(0.1)
                continue
            self._spawn(self._serve_tls(conn, addr, tls))

    async def _serve_tls(self, conn: socket.socket, addr: Any, tls: ssl.SSLContext) -> None:
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        protocol = asyncio.StreamReaderProtocol(reader)
        try:
            transport, _ = await loop.connect_accepted_socket(
                lambda: protocol, conn, ssl=tls, ssl_handshake_timeout=self._handshake_timeout
            )
        except (OSError, TimeoutError) as e:  # ssl.SSLError is an OSError
            conn.close()
            self.stats.refused_handshakes += 1
            self._log.warning(
                "rejected peer connection from %s: TLS handshake failed: %s",
                addr,
                getattr(e, "reason", None) or e,
            )
            return
        writer = asyncio.StreamWriter(transport, protocol, reader, loop)
        await self._serve_guarded(reader, writer)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # The connection is served by a task of ours so stop() can cancel it: cancelling
        # the callback task of asyncio.start_server itself makes asyncio log an error.
        inner = asyncio.get_running_loop().create_task(self._serve_guarded(reader, writer))
        self._tasks.add(inner)
        inner.add_done_callback(self._tasks.discard)
        await asyncio.wait({inner})

    async def _serve_guarded(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        try:
            await self._serve_connection(reader, writer)
        except FrameError as e:
            self.stats.corrupt_frames += 1
            self._log.warning("dropping incoming connection: %s", e)
        except (OSError, ConnectionError, TimeoutError) as e:
            self._log.debug("incoming connection ended: %r", e)
        finally:
            writer.close()

    def _certificate_refusal(self, writer: asyncio.StreamWriter) -> bool:
        """True (logged) when the TLS peer's certificate names are not allowed."""
        ssl_object = writer.get_extra_info("ssl_object")
        if ssl_object is None:
            return False
        why = self.security.refusal(ssl_object)
        if why is None:
            return False
        self.stats.refused_handshakes += 1
        self._log.warning(
            "rejected peer connection from %s: %s", writer.get_extra_info("peername"), why
        )
        return True

    def _refusal(self, h: Hello) -> tuple[ErrorCode, str] | None:
        if h.version != framing.PROTOCOL_VERSION:
            self._log.warning(
                "refused a stream of peer protocol %d (ours is %d): the remote member runs "
                "an incompatible raftkv version",
                h.version,
                framing.PROTOCOL_VERSION,
            )
            return ErrorCode.INCOMPATIBLE_VERSION, (
                f"peer protocol {h.version}, local {framing.PROTOCOL_VERSION}"
            )
        why = self.versions.incompatibility(h.versions, f"{h.frm:x}")
        if why is not None:
            self._log.warning("refused a stream from %x: %s", h.frm, why)
            return ErrorCode.INCOMPATIBLE_VERSION, why
        if h.stream is StreamKind.CLUSTER_INFO:
            return None
        if h.cluster_id != self.cluster_id:
            self._log.warning(
                "request cluster ID mismatch local-member-id=%x local-member-cluster-id=%x "
                "remote-peer-id=%x remote-peer-cluster-id=%x",
                self.member_id,
                self.cluster_id,
                h.frm,
                h.cluster_id,
            )
            return ErrorCode.CLUSTER_ID_MISMATCH, ""
        if h.frm in self._removed:
            self._log.warning("refused stream from removed member %x", h.frm)
            return ErrorCode.MEMBER_REMOVED, ""
        if h.to != self.member_id:
            self._log.warning("refused stream for member %x (we are %x)", h.to, self.member_id)
            return ErrorCode.WRONG_MEMBER, ""
        if h.frm not in self._peers:
            self._log.warning(
                "refused a stream claiming to be member %x: not a member of this member's "
                "configuration",
                h.frm,
            )
            if self.on_unknown_peer is not None:
                self.on_unknown_peer(h.frm)
            return ErrorCode.WRONG_MEMBER, f"{h.frm:x} is not a member of the configuration"
        return None

    async def _serve_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        if self._certificate_refusal(writer):
            return
        async with asyncio.timeout(self._handshake_timeout):
            kind, payload = await framing.read_frame(reader)
        if kind is not FrameKind.HELLO:
            raise FrameError(f"expected a handshake, got {kind.name}")
        hello = framing.decode_hello(payload)
        refusal = self._refusal(hello)
        if refusal is not None:
            self.stats.refused_handshakes += 1
            writer.write(framing.encode_error(*refusal))
            await writer.drain()
            return
        reply = HelloOk(framing.PROTOCOL_VERSION, self.cluster_id, self.member_id, self.versions)
        writer.write(framing.encode_hello_ok(reply))
        if hello.stream is StreamKind.MESSAGES:
            await self._serve_messages(hello.frm, reader, writer)
        elif hello.stream is StreamKind.CLUSTER_INFO:
            if self.cluster_info is None:
                writer.write(framing.encode_response(0, False, b"no cluster info here"))
            else:
                writer.write(framing.encode_response(0, True, self.cluster_info()))
            await writer.drain()
        else:
            await self._serve_snapshot(hello.frm, reader, writer)

    async def _serve_messages(
        self, frm: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        old = self._incoming.get(frm)
        if old is not None:
            old.close()  # a newer stream from the same member supersedes the old one
        self._incoming[frm] = writer
        handlers: set[asyncio.Task[None]] = set()
        try:
            while True:
                kind, payload = await framing.read_frame(reader)
                self.stats.frames_received += 1
                if kind is FrameKind.MESSAGES:
                    try:
                        batch = [decode_message(b) for b in framing.decode_batch_payload(payload)]
                    except CodecError as e:
                        raise FrameError(f"undecodable message from {frm:x}: {e}") from None
                    self.stats.messages_received += len(batch)
                    deliver = self._on_message
                    for m in batch:
                        if m.frm != frm:
                            self._drop_forged(frm, m)
                            continue
                        try:
                            deliver(m)
                        except Exception:
                            self._log.exception("on_message failed for %s", m.type.name)
                elif kind is FrameKind.REQUEST:
                    corr, rkind, body = framing.decode_request(payload)
                    t = asyncio.get_running_loop().create_task(
                        self._serve_request(frm, corr, rkind, body, writer)
                    )
                    handlers.add(t)
                    t.add_done_callback(handlers.discard)
                else:
                    raise FrameError(f"unexpected {kind.name} frame on a message stream")
        finally:
            if self._incoming.get(frm) is writer:
                del self._incoming[frm]
            for t in list(handlers):
                t.cancel()
            await asyncio.gather(*handlers, return_exceptions=True)

    def _drop_forged(self, frm: int, m: Message) -> None:
        self.stats.forged_messages += 1
        self._log.warning(
            "dropped a %s claiming to come from member %x on the stream of member %x",
            m.type.name,
            m.frm,
            frm,
        )

    async def _serve_request(
        self, frm: int, corr: int, kind: str, body: bytes, writer: asyncio.StreamWriter
    ) -> None:
        handler = self._handlers.get(kind)
        if handler is None:
            frame = framing.encode_response(corr, False, f"no handler for {kind!r}".encode())
        else:
            try:
                frame = framing.encode_response(corr, True, await handler(frm, body))
            except Exception as e:  # the handler's failure becomes the caller's error
                self._log.warning("request %r from %x failed: %r", kind, frm, e)
                frame = framing.encode_response(corr, False, f"{kind}: {e}".encode())
        self.stats.requests_served += 1
        if not writer.is_closing():
            writer.write(frame)

    async def _serve_snapshot(
        self, frm: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        kind, payload = await framing.read_frame(reader)
        if kind is not FrameKind.SNAP_BEGIN:
            raise FrameError(f"expected a snapshot header, got {kind.name}")
        size, encoded = framing.decode_snap_begin(payload)
        try:
            m = decode_message(encoded)
        except CodecError as e:
            raise FrameError(f"undecodable MsgSnap from {frm:x}: {e}") from None
        if m.type is not MessageType.MSG_SNAP or m.snapshot is None:
            raise FrameError(f"snapshot stream from {frm:x} carries a {m.type.name}")
        if m.frm != frm:
            self._drop_forged(frm, m)
            return
        meta = m.snapshot.metadata
        try:
            path = await receive_file(
                reader,
                peer_id=frm,
                snapshot_dir=self.snapshot_dir,
                index=meta.index,
                term=meta.term,
                size=size,
                logger=self._log,
                check=self._check_snapshot,
            )
        except SnapshotTransferError as e:
            self.stats.snapshots_failed += 1
            self._log.warning("snapshot %d from %x rejected: %s", meta.index, frm, e)
            writer.write(framing.encode_error(ErrorCode.SNAPSHOT_FAILED, str(e)))
            await writer.drain()
            return
        except BaseException:
            self.stats.snapshots_failed += 1
            raise
        self.stats.snapshots_received += 1
        self._on_snapshot(m, path)
        writer.write(framing.encode_frame(FrameKind.SNAP_ACK, b""))
        await writer.drain()
