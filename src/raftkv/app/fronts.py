"""A member's gRPC front processes (``--grpc-front-processes N``): started, watched, stopped.

With N > 0 the member does not listen on its client URLs itself: N front processes
(``raftkv.app.front``) do, all on the same ports, and each takes its share of the clients'
connections.  Python's gRPC server costs a member more CPU per call than the member's own work
on a put; spread over processes, that cost runs beside the member instead of in it.  The
member keeps Raft, the WAL, apply, leases, watches and the HTTP side.

The member's end of each front's link (``MemberLink``) is here too: it answers the frames
(``raftkv.app.front_link``) through the member's own ``KVService``, with the project's
stand-in servicer context for calls that do not come over gRPC (``GatewayContext``).

Contracts:
- ``start`` returns once every front has bound the client URLs and said hello on its link;
  a front that exits first, or a start that takes longer than ``START_TIMEOUT``, raises
  ``StartupError`` (the front's own line on stderr says why);
- the link server and the member's private gRPC socket live in a directory only this user
  can enter (``private_dir``, removed by ``close``): whoever can reach them acts as a client
  that already passed TLS, so only the member's own processes may;
- a front that exits while the member runs is logged and started again after
  ``RESTART_DELAY``; ``close`` stops every front (SIGTERM; a front also exits when its link
  closes) before it returns.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import grpc

from raftkv.api.gateway import GatewayAbort, GatewayContext
from raftkv.api.registration import MALFORMED, UNARY_PREFIX, reason
from raftkv.app.front_link import (
    HELLO,
    KV_METHODS,
    REQUESTS,
    FrameReader,
    FrameWriter,
    LinkError,
    split_request,
)
from raftkv.app.startup import StartupError
from raftkv.tlsutil import TLSInfo

log = logging.getLogger("raftkv.front")

START_TIMEOUT = 30.0
RESTART_DELAY = 1.0
STOP_TIMEOUT = 5.0


class GrpcFronts:
    def __init__(
        self,
        count: int,
        listen: Sequence[tuple[str, bool]],
        tls: TLSInfo | None,
        max_receive_bytes: int,
    ) -> None:
        """``listen``: the client addresses (``host:port``, and whether on TLS) every front
        serves; ``tls``: the member's client TLS material (for the TLS addresses)."""
        if any(secure for _, secure in listen) and tls is None:
            raise ValueError("TLS client addresses need the member's TLS material")
        self.count = count
        self.listen = tuple(listen)
        self.tls = tls
        self.max_receive_bytes = max_receive_bytes
        self.private_dir = Path(tempfile.mkdtemp(prefix="raftkv-front-"))
        self.grpc_socket = str(self.private_dir / "grpc.sock")
        self.link_socket = str(self.private_dir / "link.sock")
        self._link_server: asyncio.AbstractServer | None = None
        self._hellos: set[int] = set()
        self._hello = asyncio.Event()
        self._procs: list[subprocess.Popen[bytes]] = []
        self._watchers: list[asyncio.Task[None]] = []
        self._closing = False

    async def start(self, kv: Any) -> None:
        """Serve the link for ``kv`` (the member's ``KVService``) and start the fronts."""
        handlers = kv_handlers(kv)
        loop = asyncio.get_running_loop()
        self._link_server = await loop.create_unix_server(
            lambda: MemberLink(handlers, self._said_hello), self.link_socket
        )
        procs = [self._spawn() for _ in range(self.count)]
        waits: dict[asyncio.Future[Any], subprocess.Popen[bytes]] = {_exited(p): p for p in procs}
        try:
            async with asyncio.timeout(START_TIMEOUT):
                while not all(p.pid in self._hellos for p in procs):
                    hello: asyncio.Future[Any] = asyncio.ensure_future(self._hello.wait())
                    done, _ = await asyncio.wait(
                        [hello, *waits], return_when=asyncio.FIRST_COMPLETED
                    )
                    hello.cancel()
                    self._hello.clear()
                    for fut in done & waits.keys():
                        raise StartupError(
                            f"a gRPC front process exited during start-up (status {fut.result()})"
                        )
        except TimeoutError:
            raise StartupError(
                f"the gRPC front processes did not start within {START_TIMEOUT:.0f}s"
            ) from None
        finally:
            for fut in waits:
                fut.cancel()
        for proc in procs:
            self._watch(proc)
        log.info(
            "%d gRPC front processes serve %s",
            self.count,
            ", ".join(a for a, _ in self.listen),
        )

    def _said_hello(self, pid: int) -> None:
        self._hellos.add(pid)
        self._hello.set()

    def _spawn(self) -> subprocess.Popen[bytes]:
        # subprocess, not the event loop's spawn: it starts the child with vfork, so gRPC's
        # fork handlers (and their warning about the member's threads) never run.
        argv = [sys.executable, "-m", "raftkv.app.front", "--link", self.link_socket]
        argv += ["--member", self.grpc_socket, "--max-receive-bytes", str(self.max_receive_bytes)]
        for address, secure in self.listen:
            argv += ["--secure" if secure else "--listen", address]
        if self.tls is not None:
            argv += ["--tls", self.tls.to_json()]
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL)
        self._procs.append(proc)
        return proc

    def _watch(self, proc: subprocess.Popen[bytes]) -> None:
        self._watchers.append(asyncio.get_running_loop().create_task(self._restart_on_exit(proc)))

    async def _restart_on_exit(self, proc: subprocess.Popen[bytes]) -> None:
        status = await _exited(proc)
        self._procs.remove(proc)
        if self._closing:
            return
        log.warning(
            "gRPC front process %d exited (status %s); starting another in %.0fs",
            proc.pid,
            status,
            RESTART_DELAY,
        )
        await asyncio.sleep(RESTART_DELAY)
        if not self._closing:
            self._watch(self._spawn())

    async def close(self) -> None:
        """Stop every front, then the link; remove the private directory."""
        self._closing = True
        for task in self._watchers:
            task.cancel()
        for proc in self._procs:
            proc.terminate()  # a no-op for a child already reaped
        for proc in list(self._procs):
            try:
                async with asyncio.timeout(STOP_TIMEOUT):
                    await _exited(proc)
            except TimeoutError:
                proc.kill()
                await _exited(proc)
        self._procs.clear()
        if self._link_server is not None:
            self._link_server.close()
        shutil.rmtree(self.private_dir, ignore_errors=True)


def link_context(token: str | None, cn: str | None) -> GatewayContext:
    """The servicer context of a call from the link: the caller's token as invocation
    metadata, its certificate's CN as the auth context; ``abort`` raises ``GatewayAbort``."""
    metadata = (("token", token),) if token else ()
    auth = {"x509_common_name": [cn.encode()]} if cn else {}
    return GatewayContext(metadata, auth, "raftkv-front")


Handler = Callable[[bytes, GatewayContext], Awaitable[bytes]]


def kv_handlers(kv: Any) -> list[Handler]:
    """Per ``KV_METHODS`` index: request bytes and a context in, response bytes out, through
    the member's ``KVService`` ``kv``."""

    def handler(name: str) -> Handler:
        decode = REQUESTS[name].FromString
        method = getattr(kv, name)

        async def call(raw: bytes, context: GatewayContext) -> bytes:
            try:
                request = decode(raw)
            except MALFORMED as exc:
                raise GatewayAbort(
                    grpc.StatusCode.INVALID_ARGUMENT, UNARY_PREFIX + reason(exc)
                ) from None
            response = await method(request, context)
            return bytes(response.SerializeToString())

        return call

    return [handler(name) for name in KV_METHODS]


class MemberLink(asyncio.Protocol):
    """The member's end of one front's link (see the module contracts)."""

    def __init__(self, handlers: Sequence[Handler], on_hello: Callable[[int], None]) -> None:
        self._handlers = handlers
        self._on_hello = on_hello
        self._reader = FrameReader()
        self._writer: FrameWriter | None = None
        self._transport: asyncio.BaseTransport | None = None
        self._calls: set[asyncio.Task[None]] = set()  # the loop keeps only weak references

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport
        # uvloop's transports implement asyncio.Transport without subclassing it
        self._writer = FrameWriter(transport)  # type: ignore[arg-type]

    def data_received(self, data: bytes) -> None:
        try:
            frames = self._reader.feed(data)
        except LinkError as exc:
            log.error("closing a front link: %s", exc)
            assert self._transport is not None
            self._transport.close()
            return
        loop = asyncio.get_running_loop()
        for call_id, method, body in frames:
            if method == HELLO:
                self._on_hello(call_id)
            else:
                task = loop.create_task(self._serve(call_id, method, body))
                self._calls.add(task)
                task.add_done_callback(self._calls.discard)

    async def _serve(self, call_id: int, method: int, body: bytes) -> None:
        assert self._writer is not None
        try:
            if method >= len(self._handlers):
                raise GatewayAbort(
                    grpc.StatusCode.UNIMPLEMENTED, f"unknown front link method {method}"
                )
            try:
                token, cn, raw = split_request(body)
            except (ValueError, UnicodeDecodeError) as exc:
                raise GatewayAbort(grpc.StatusCode.INVALID_ARGUMENT, f"front link: {exc}") from None
            response = await self._handlers[method](raw, link_context(token, cn))
        except GatewayAbort as exc:
            self._writer.write(call_id, exc.code.value[0], exc.message.encode())
        except Exception as exc:  # the service translates its own errors: this is a bug
            log.exception("unexpected error serving a call from a front", exc_info=exc)
            self._writer.write(call_id, grpc.StatusCode.UNKNOWN.value[0], str(exc).encode())
        else:
            self._writer.write(call_id, 0, response)


def _exited(proc: subprocess.Popen[bytes]) -> asyncio.Future[int]:
    """A future of ``proc``'s exit status, resolved when it exits (a pidfd on the event loop,
    no thread); ``proc`` is reaped then."""
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[int] = loop.create_future()
    if proc.poll() is not None:
        fut.set_result(proc.returncode)
        return fut
    pidfd = os.pidfd_open(proc.pid)

    def ready() -> None:
        loop.remove_reader(pidfd)
        os.close(pidfd)
        if not fut.done():
            fut.set_result(proc.wait())

    def forget(_: asyncio.Future[int]) -> None:
        if fut.cancelled():
            loop.remove_reader(pidfd)
            os.close(pidfd)

    loop.add_reader(pidfd, ready)
    fut.add_done_callback(forget)
    return fut
