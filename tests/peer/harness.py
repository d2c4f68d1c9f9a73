"""Shared fixtures for the peer transport tests: a transport plus recorded callbacks.

Owns: ``Node`` (one ``PeerTransport`` on 127.0.0.1 with everything its
callbacks saw), ``wait_until`` (bounded polling), message builders and raw
protocol helpers for tests that play a misbehaving peer.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from raftkv.peer import PeerTransport, framing
from raftkv.peer.framing import Hello, StreamKind
from raftkv.raft.types import Entry, Message, MessageType
from tests.cluster.harness import free_ports

CLUSTER = 0xC1C1


class ListHandler(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []
        self.warnings: list[str] = []  # the lines logged at WARNING or above

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())
        if record.levelno >= logging.WARNING:
            self.warnings.append(record.getMessage())

    def text(self) -> str:
        return "\n".join(self.lines)


class Node:
    """A transport plus every callback it made, in order."""

    def __init__(
        self,
        member_id: int,
        snapshot_dir: str,
        *,
        cluster_id: int = CLUSTER,
        port: int = 0,
        scheme: str = "http",
        **kwargs: Any,
    ) -> None:
        self.id = member_id
        self.received: list[Message] = []
        self.snapshots: list[tuple[Message, str]] = []
        self.unreachable: list[int] = []
        self.snap_status: list[tuple[int, bool]] = []
        self.removed_calls = 0
        self.log = ListHandler()
        logger = logging.getLogger(f"tests.peer.node{member_id}.{id(self)}")
        logger.setLevel(logging.DEBUG)
        logger.propagate = False
        logger.addHandler(self.log)
        self.t = PeerTransport(
            member_id=member_id,
            cluster_id=cluster_id,
            listen_urls=[f"{scheme}://127.0.0.1:{port}"],
            on_message=self.received.append,
            on_snapshot=lambda m, p: self.snapshots.append((m, p)),
            on_unreachable=self.unreachable.append,
            on_snapshot_status=lambda peer, ok: self.snap_status.append((peer, ok)),
            snapshot_dir=snapshot_dir,
            logger=logger,
            on_removed=self._removed,
            **kwargs,
        )

    def _removed(self) -> None:
        self.removed_calls += 1

    @property
    def port(self) -> int:
        return self.t.addresses[0][1]

    def know(self, member_id: int) -> None:
        """Add ``member_id`` to this node's configuration at an address nobody listens on, for
        tests that play that member over a raw connection (strangers are refused)."""
        self.t.add_peer(member_id, [f"http://127.0.0.1:{free_port()}"])


async def wait_until(pred: Callable[[], bool], timeout: float = 10.0, what: str = "") -> None:
    """Poll ``pred`` every 10 ms; fail the test if it is still false after ``timeout``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not pred():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what or pred}")
        await asyncio.sleep(0.01)


async def mesh(nodes: list[Node], timeout: float = 10.0) -> None:
    """Add every node as a peer of every other one and wait for all streams."""
    for a in nodes:
        for b in nodes:
            if a is not b:
                a.t.add_peer(b.id, b.t.urls)
    for a in nodes:
        others = [b.id for b in nodes if b is not a]
        assert await a.t.wait_connected(others, timeout)


def app(frm: int, to: int, index: int, payload: bytes = b"x" * 16) -> Message:
    return Message(
        type=MessageType.MSG_APP,
        to=to,
        frm=frm,
        term=3,
        log_term=3,
        index=index,
        commit=index,
        entries=(Entry(3, index + 1, data=payload),),
    )


def free_port() -> int:
    """A port nobody listens on (bound then released)."""
    return free_ports(1)[0]


async def raw_connect(
    port: int, stream: StreamKind, frm: int, to: int, cluster_id: int = CLUSTER
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Dial like a peer would and complete the handshake; return the open stream."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(framing.encode_hello(Hello(framing.PROTOCOL_VERSION, stream, cluster_id, frm, to)))
    kind, _ = await asyncio.wait_for(framing.read_frame(reader), 5)
    assert kind is framing.FrameKind.HELLO_OK
    return reader, writer
