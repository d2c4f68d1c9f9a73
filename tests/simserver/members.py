"""The simulated members: the real ``raftkv.server.member.Member`` in simulated processes.

Owns: ``SimMember`` (one member's data dir, configuration and current incarnation: start,
crash, restart), ``SimWorker`` (the WAL fdatasync runner: the call made at once, its answer
after a seeded disk latency, or a failing fsync when armed) and the disk's crash model.

Contracts:
- each incarnation is a new ``Process`` with its own seeded ``MemberEnvironment`` (virtual
  clock, entropy, simulated transport, ``SimWorker``); nothing of a crashed incarnation runs
  again;
- a crash keeps what the member made durable and loses or tears the rest: the LMDB batch not
  yet committed is dropped, and of the WAL tail's bytes written after its last fdatasync a
  seeded prefix survives (the rest reads back as the zeros of the preallocated segment);
  snapshot files and received backends are durable once renamed, as on a real disk;
- a member that stopped by itself (a failed fsync, a fatal apply error) is crashed the same
  way, and ``stopped_because`` says why.
"""

from __future__ import annotations

import asyncio
import os
import random
from collections.abc import Callable
from typing import Any, TypeVar

from raftkv.peer.security import PLAINTEXT, PeerSecurity
from raftkv.server.config import ServerConfig
from raftkv.server.environment import (
    BackendFetcher,
    MemberEnvironment,
    MemberTransport,
    ReadyObserver,
)
from raftkv.server.member import Member
from tests.simserver.loop import Process, SimClock, VirtualLoop
from tests.simserver.network import SimNetwork, SimTransport

T = TypeVar("T")

FSYNC_MIN = 0.0002
FSYNC_MAX = 0.004


class SimWorker:
    """``BlockingRunner`` of a simulated member: runs the call at once; its result is due after
    a seeded latency, in submission order.  ``fail_next`` makes the next call fail as a failing
    fdatasync does (``OSError(EIO)``) without running it; ``no_space_next`` is read by the
    simulation's ``walNoSpace`` failpoint (the WAL's write then fails with ENOSPC)."""

    def __init__(self, loop: VirtualLoop, rng: random.Random) -> None:
        self.loop = loop
        self.rng = rng
        self.fail_next = False
        self.no_space_next = False  # the next WAL write finds the disk full (``walNoSpace``)
        self.failed_at: float | None = None  # when the disk failed (either fault above)
        self._due = 0.0
        self._closed = False

    def run(self, fn: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        if self._closed:
            raise RuntimeError("the worker is closed")
        fut: asyncio.Future[T] = self.loop.create_future()
        self._due = max(self._due, self.loop.time()) + self.rng.uniform(FSYNC_MIN, FSYNC_MAX)
        if self.fail_next:
            self.fail_next = False
            self.failed_at = self.loop.time()
            self.loop.call_at(
                self._due, _settle, fut, None, OSError(5, "fsync: input/output error")
            )
            return fut
        try:
            value = fn(*args)
        except Exception as exc:
            self.loop.call_at(self._due, _settle, fut, None, exc)
        else:
            self.loop.call_at(self._due, _settle, fut, value, None)
        return fut

    def close(self) -> None:
        self._closed = True


def _settle(fut: asyncio.Future[Any], value: Any, exc: BaseException | None) -> None:
    if fut.done():
        return
    if exc is not None:
        fut.set_exception(exc)
    else:
        fut.set_result(value)


async def _no_backend_fetch(
    url: str, path: str, *, config: ServerConfig, token: str | None, timeout: float
) -> None:
    raise OSError(f"connect to {url}: no backend fetch in this simulation")


class SimMember:
    def __init__(
        self,
        *,
        index: int,
        config: ServerConfig,
        loop: VirtualLoop,
        network: SimNetwork,
        seed: int,
    ) -> None:
        self.index = index
        self.name = config.name
        self.config = config
        self.loop = loop
        self.network = network
        self.seed = seed
        self.clock = SimClock(loop)
        self.incarnation = 0
        self.process: Process | None = None
        self.member: Member | None = None
        self.worker: SimWorker | None = None
        self.started = False
        self.stopped_because: str | None = None
        self.start_error: Exception | None = None  # why the last start failed
        # It refused to start on a corrupt stored value (a disk fault): it stays down, as an
        # operator would leave it until the member is replaced or its data restored.
        self.broken = False
        self.disk_rng = random.Random(f"{seed}-{self.name}-disk")
        self.lost_bytes = 0  # WAL bytes written but not synced that crashes took away
        self.removed = False  # removed from the cluster: stops, never comes back
        self.removal_asked = False  # an operator asked to remove it (the answer may be lost)
        self.learner = False  # added as a learner and not yet promoted
        self.known_id: int | None = None  # its member ID, once known
        # Called as a crash begins, while the incarnation's backend is still open: the
        # simulation reads what the crash will keep (``Backend.get_durable``).
        self.on_crash: Callable[[SimMember], None] | None = None
        self.ready_observer: ReadyObserver | None = None  # every incarnation's Readies
        self.fetch_backend: BackendFetcher = _no_backend_fetch  # repair's fetch (the simulation's)

    @property
    def up(self) -> bool:
        """Started and still running (not crashed, not stopped by itself)."""
        m = self.member
        return self.started and m is not None and not m.stopped.is_set() and not self.removed

    @property
    def member_id(self) -> int:
        """Its member ID (once known: a crashed or broken member keeps the last one)."""
        if self.member is not None:
            return self.member.member_id
        assert self.known_id is not None
        return self.known_id

    def _environment(self) -> MemberEnvironment:
        tag = f"{self.seed}-{self.name}-{self.incarnation}"
        self.worker = SimWorker(self.loop, random.Random(f"{tag}-fsync"))
        worker = self.worker
        network = self.network

        def transport(**kw: Any) -> MemberTransport:
            return SimTransport(network, **kw)

        async def fetch_cluster_info(
            url: str, *, timeout: float, security: PeerSecurity = PLAINTEXT
        ) -> bytes:
            await asyncio.sleep(network.delay())
            peer = network.at_url(url)
            if peer is None or peer.cluster_info is None:
                raise OSError(f"connect to {url}: connection refused")
            return peer.cluster_info()

        return MemberEnvironment(
            clock=self.clock,
            entropy=random.Random(f"{tag}-entropy"),
            peer_transport=transport,
            ready_observer=self.ready_observer,
            fetch_backend=self.fetch_backend,
            serial_worker=lambda _name: worker,
            fetch_cluster_info=fetch_cluster_info,
        )

    def start(self) -> asyncio.Task[None]:
        """Start a new incarnation; the task ends once the member serves (or failed to)."""
        assert self.member is None
        self.incarnation += 1
        self.stopped_because = None
        self.start_error = None
        self.started = False
        self.process = Process(f"{self.name}#{self.incarnation}")
        return self.process.spawn(self.loop, self._start())

    async def _start(self) -> None:
        """Start the incarnation; a start that fails leaves ``stopped_because`` saying why (the
        simulation decides whether that is allowed)."""
        self.member = Member(self.config, self._environment())
        try:
            await self.member.start()
        except Exception as exc:
            self.start_error = exc
            self.stopped_because = f"could not start: {exc!r}"
            return
        self.started = True
        self.known_id = self.member.member_id

    def crash(self) -> None:
        """Kill the incarnation: nothing of it runs again; its disk keeps what was durable."""
        if self.process is None:
            return
        if self.on_crash is not None:
            self.on_crash(self)
        self.process.kill()
        m = self.member
        if m is not None and m.fatal_error is not None and self.stopped_because is None:
            self.stopped_because = str(m.fatal_error)
        if m is not None and m.wal is not None:  # also when the start was still under way
            path, synced, written = m.wal.abandon()
            self._lose_unsynced(path, synced, written)
        if m is not None and hasattr(m, "applier"):
            m.applier.abandon()
        self.member = None
        self.process = None
        self.started = False

    def _lose_unsynced(self, path: str, synced: int, written: int) -> None:
        """Keep a seeded prefix of what was written after the last sync.  ``written`` is what
        the WAL counts; a write that failed half-way (a full disk) left more in the file, as
        unsynced as the rest (the segment is preallocated: its data ends at its last non-zero
        byte)."""
        with open(path, "rb") as f:
            written = max(written, len(f.read().rstrip(b"\0")))
        if written <= synced:
            return
        keep = synced + self.disk_rng.randint(0, written - synced)
        if keep < written:
            fd = os.open(path, os.O_WRONLY)
            try:
                os.pwrite(fd, bytes(written - keep), keep)
            finally:
                os.close(fd)
        self.lost_bytes += written - keep
