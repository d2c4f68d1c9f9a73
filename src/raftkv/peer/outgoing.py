"""The outgoing half of the transport: one stream per remote member.

Owns: dialing and the handshake (``dial``), and ``PeerStream``, the task that
keeps one connection to a peer and writes its queued traffic.

Contracts:
- messages to one peer leave in the order they were queued; requests
  (control frames) may overtake queued messages, never each other;
- every wake-up of the writer coalesces *everything* queued into one socket
  write followed by one ``drain()`` (``PeerStats.writes`` counts them);
- the queue is bounded; it only accepts messages while the stream is
  connected, and is cleared when the connection breaks (Raft retries);
- after a failed dial or a lost connection the stream sleeps an exponential,
  jittered backoff capped at ``max_backoff`` and tries the next URL.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import ssl
import urllib.parse
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from raftkv.peer import framing
from raftkv.peer.framing import (
    LOCAL_VERSIONS,
    ErrorCode,
    FrameError,
    FrameKind,
    Hello,
    PeerVersions,
    StreamKind,
)
from raftkv.peer.security import PLAINTEXT, PeerSecurity
from raftkv.raft.codec import encode_message
from raftkv.raft.types import Message

BATCH_FRAME_BYTES = 1024 * 1024
"""A MESSAGES frame is closed once its payload reaches this size (several frames per write)."""


class PeerRefusedError(ConnectionError):
    """The remote member refused the handshake (``code`` says why)."""

    def __init__(self, code: ErrorCode, text: str) -> None:
        super().__init__(text)
        self.code = code
        self.text = text


class PeerRequestError(Exception):
    """A request to a peer failed: not connected, refused, timed out or the handler failed."""


@dataclass
class PeerStats:
    """Counters of one outgoing stream; read them, never write them."""

    connected: bool = False
    connects: int = 0
    messages_sent: int = 0
    writes: int = 0
    bytes_sent: int = 0
    messages_dropped: int = 0
    last_error: str = ""


@dataclass(frozen=True)
class StreamConfig:
    member_id: int
    cluster_id: int
    queue_size: int = 4096
    dial_timeout: float = 1.0
    min_backoff: float = 0.05
    max_backoff: float = 1.0
    versions: PeerVersions = LOCAL_VERSIONS
    security: PeerSecurity = PLAINTEXT


def parse_url(url: str) -> tuple[str, int]:
    """``http(s)://host:port`` (or bare ``host:port``) to ``(host, port)``; ValueError
    otherwise."""
    parts = urllib.parse.urlsplit(url if "://" in url else f"http://{url}")
    if parts.scheme not in ("http", "https", "tcp"):
        raise ValueError(f"unsupported peer URL scheme in {url!r}")
    if parts.hostname is None or parts.port is None:
        raise ValueError(f"peer URL {url!r} needs a host and a port")
    return parts.hostname, parts.port


async def dial(
    url: str, hello: Hello, *, timeout: float, security: PeerSecurity = PLAINTEXT
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Connect (over TLS for an ``https`` URL) and handshake; raise ``PeerRefusedError`` if
    the remote refuses us.

    Also raises ``OSError``/``ConnectionError`` (``ssl.SSLError`` among them: a certificate
    refused either way), ``TimeoutError`` or ``FrameError``.
    """
    host, port = parse_url(url)
    tls: ssl.SSLContext | None = security.dial_context(url)
    # asyncio.timeout, not wait_for: on Python 3.11 wait_for drops a cancellation that lands
    # in the same loop turn as the result, and a stopping peer stream would dial on forever.
    async with asyncio.timeout(timeout):
        if tls is None:
            reader, writer = await asyncio.open_connection(host, port)
        else:
            reader, writer = await asyncio.open_connection(
                host, port, ssl=tls, server_hostname=host, ssl_handshake_timeout=timeout
            )
    try:
        writer.write(framing.encode_hello(hello))
        async with asyncio.timeout(timeout):
            kind, payload = await framing.read_frame(reader)
        if kind is FrameKind.ERROR:
            code, text = framing.decode_error(payload)
            raise PeerRefusedError(code, text)
        if kind is not FrameKind.HELLO_OK:
            raise FrameError(f"expected a handshake reply, got {kind.name}")
        ok = framing.decode_hello_ok(payload)
        why = hello.versions.incompatibility(ok.versions, f"{ok.member_id:x}")
        if why is not None:
            raise PeerRefusedError(ErrorCode.INCOMPATIBLE_VERSION, why)
        if hello.stream is StreamKind.CLUSTER_INFO:
            return reader, writer
        if ok.cluster_id != hello.cluster_id:
            raise PeerRefusedError(
                ErrorCode.CLUSTER_ID_MISMATCH,
                f"cluster ID mismatch: local {hello.cluster_id:x}, remote {ok.cluster_id:x}",
            )
        if ok.member_id != hello.to:
            raise PeerRefusedError(
                ErrorCode.WRONG_MEMBER,
                f"{url} is member {ok.member_id:x}, expected {hello.to:x}",
            )
    except BaseException:
        writer.close()
        raise
    return reader, writer


class PeerStream:
    """Keeps one outgoing MESSAGES connection to ``peer_id`` and writes its queue."""

    def __init__(
        self,
        peer_id: int,
        urls: Sequence[str],
        config: StreamConfig,
        *,
        rng: random.Random,
        logger: logging.Logger,
        on_refused: Callable[[int, PeerRefusedError], None],
        on_drop: Callable[[int], None],
    ) -> None:
        if not urls:
            raise ValueError(f"peer {peer_id:x} has no URLs")
        for u in urls:
            parse_url(u)
        self.peer_id = peer_id
        self.urls = tuple(urls)
        self.stats = PeerStats()
        self.connected = asyncio.Event()
        self._config = config
        self._rng = rng
        self._log = logger
        self._on_refused = on_refused
        self._on_drop = on_drop
        self._queue: deque[Message] = deque()
        self._control: deque[bytes] = deque()
        self._wake = asyncio.Event()
        self._broken = False
        self._url_index = 0
        self._next_corr = 1
        self._pending: dict[int, asyncio.Future[bytes]] = {}
        self._task: asyncio.Task[None] | None = None
        self._writer: asyncio.StreamWriter | None = None

    # --- API used by the transport (all on the event loop, never blocking) ---------------

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(
            self._run(), name=f"peer-stream-{self.peer_id:x}"
        )

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self._fail_pending("peer removed or transport stopped")

    def restart(self) -> None:
        """Drop the current connection (if any); the stream redials at once with fresh URLs."""
        self._broken = True
        self._wake.set()
        if self._writer is not None:
            self._writer.close()

    def enqueue(self, m: Message) -> bool:
        """Queue ``m``; False (and nothing queued) if disconnected or the queue is full."""
        if not self.connected.is_set() or len(self._queue) >= self._config.queue_size:
            self.stats.messages_dropped += 1
            return False
        self._queue.append(m)
        self._wake.set()
        return True

    async def request(self, kind: str, payload: bytes) -> bytes:
        """Send one request once connected; wait for its response (caller bounds the time)."""
        await self.connected.wait()
        corr = self._next_corr
        self._next_corr += 1
        fut: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._pending[corr] = fut
        try:
            self._control.append(framing.encode_request(corr, kind, payload))
            self._wake.set()
            return await fut
        finally:
            self._pending.pop(corr, None)

    # --- the connection loop ---------------------------------------------------------------

    def _backoff_delay(self, backoff: float) -> float:
        return backoff * (0.5 + 0.5 * self._rng.random())

    async def _run(self) -> None:
        backoff = self._config.min_backoff
        loop = asyncio.get_running_loop()
        while True:
            url = self.urls[self._url_index % len(self.urls)]
            hello = Hello(
                framing.PROTOCOL_VERSION,
                StreamKind.MESSAGES,
                self._config.cluster_id,
                self._config.member_id,
                self.peer_id,
                self._config.versions,
            )
            try:
                reader, writer = await dial(
                    url, hello, timeout=self._config.dial_timeout, security=self._config.security
                )
            except PeerRefusedError as e:
                self.stats.last_error = e.text
                self._on_refused(self.peer_id, e)
                self._url_index += 1
            except (OSError, TimeoutError, FrameError) as e:
                error = f"dial {url}: {e!r}"
                if isinstance(e, ssl.SSLError) and error != self.stats.last_error:
                    # A certificate refused either way is a configuration problem: say it once.
                    self._log.warning("peer %x: TLS with %s failed: %s", self.peer_id, url, e)
                else:
                    self._log.debug("peer %x: dial %s failed: %r", self.peer_id, url, e)
                self.stats.last_error = error
                self._url_index += 1
            else:
                started = loop.time()
                try:
                    await self._serve(reader, writer)
                except Exception:  # never let one broken stream end this peer's for good
                    self._log.exception("peer %x: stream failed", self.peer_id)
                if loop.time() - started >= self._config.max_backoff:
                    backoff = self._config.min_backoff
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise asyncio.CancelledError  # stop() asked; a lost cancellation must not loop
            await asyncio.sleep(self._backoff_delay(backoff))
            backoff = min(backoff * 2, self._config.max_backoff)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._broken = False
        self._writer = writer
        self.stats.connects += 1
        self.stats.connected = True
        self.stats.last_error = ""
        self.connected.set()
        self._log.info("peer %x: stream connected", self.peer_id)
        reader_task = asyncio.get_running_loop().create_task(self._read_loop(reader))
        try:
            await self._write_loop(writer)
        except (OSError, ConnectionError, RuntimeError) as e:
            # uvloop raises RuntimeError for a write on a transport the peer closed
            self.stats.last_error = f"write: {e!r}"
        finally:
            self.connected.clear()
            self.stats.connected = False
            reader_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader_task
            writer.close()
            self._writer = None
            self._fail_pending("connection lost")
            dropped = len(self._queue)
            self._queue.clear()
            self._control.clear()
            if dropped:
                self.stats.messages_dropped += dropped
                task = asyncio.current_task()
                if task is None or not task.cancelling():
                    self._on_drop(self.peer_id)
            self._log.info(
                "peer %x: stream closed (%s)", self.peer_id, self.stats.last_error or "stopped"
            )

    async def _write_loop(self, writer: asyncio.StreamWriter) -> None:
        while True:
            if not self._queue and not self._control:
                self._wake.clear()
                await self._wake.wait()
            if self._broken:
                return
            data, count = self._take_all()
            if not data:
                continue
            writer.write(data)
            self.stats.writes += 1
            self.stats.messages_sent += count
            self.stats.bytes_sent += len(data)
            await writer.drain()

    def _take_all(self) -> tuple[bytes, int]:
        """Everything queued as one buffer of frames: control frames first, then messages."""
        frames: list[bytes] = list(self._control)
        self._control.clear()
        count = 0
        batch: list[bytes] = []
        batch_bytes = 0
        queue = self._queue
        while queue:
            m = queue.popleft()
            encoded = encode_message(m)
            if 8 + len(encoded) > framing.MAX_FRAME_PAYLOAD:
                self._log.error(
                    "peer %x: dropping %s of %d bytes (larger than a frame)",
                    self.peer_id,
                    m.type.name,
                    len(encoded),
                )
                self.stats.messages_dropped += 1
                self._on_drop(self.peer_id)
                continue
            if batch and batch_bytes + len(encoded) > BATCH_FRAME_BYTES:
                frames.append(
                    framing.encode_frame(FrameKind.MESSAGES, framing.encode_batch_payload(batch))
                )
                batch, batch_bytes = [], 0
            batch.append(encoded)
            batch_bytes += len(encoded) + 4
            count += 1
        if batch:
            frames.append(
                framing.encode_frame(FrameKind.MESSAGES, framing.encode_batch_payload(batch))
            )
        return b"".join(frames), count

    async def _read_loop(self, reader: asyncio.StreamReader) -> None:
        """Responses to our requests come back on this connection; anything else ends it."""
        try:
            while True:
                kind, payload = await framing.read_frame(reader)
                if kind is FrameKind.RESPONSE:
                    corr, ok, body = framing.decode_response(payload)
                    fut = self._pending.get(corr)
                    if fut is not None and not fut.done():
                        if ok:
                            fut.set_result(body)
                        else:
                            fut.set_exception(PeerRequestError(body.decode(errors="replace")))
                elif kind is FrameKind.ERROR:
                    code, text = framing.decode_error(payload)
                    err = PeerRefusedError(code, text)
                    self.stats.last_error = text
                    self._on_refused(self.peer_id, err)
                    return
                else:
                    raise FrameError(f"unexpected {kind.name} frame on an outgoing stream")
        except (FrameError, OSError, ConnectionError) as e:
            self.stats.last_error = f"read: {e!r}"
        finally:
            self._broken = True
            self._wake.set()

    def _fail_pending(self, why: str) -> None:
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(PeerRequestError(f"peer {self.peer_id:x}: {why}"))
        self._pending.clear()


async def fetch_cluster_info(
    url: str,
    *,
    timeout: float,
    versions: PeerVersions = LOCAL_VERSIONS,
    security: PeerSecurity = PLAINTEXT,
) -> bytes:
    """Ask the member at peer ``url`` for its cluster's member list (a ``CLUSTER_INFO``
    stream: no membership needed, so a member that is joining can ask).  Returns the answer's
    bytes; raises ``PeerRefusedError`` (versions incompatible), ``PeerRequestError`` (the peer
    could not answer), ``OSError``, ``TimeoutError`` or ``FrameError``."""
    hello = Hello(framing.PROTOCOL_VERSION, StreamKind.CLUSTER_INFO, 0, 0, 0, versions)
    reader, writer = await dial(url, hello, timeout=timeout, security=security)
    try:
        async with asyncio.timeout(timeout):
            kind, payload = await framing.read_frame(reader)
    finally:
        writer.close()
    if kind is not FrameKind.RESPONSE:
        raise FrameError(f"expected the cluster info, got {kind.name}")
    _corr, ok, body = framing.decode_response(payload)
    if not ok:
        raise PeerRequestError(body.decode(errors="replace"))
    return body
