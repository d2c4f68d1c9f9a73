"""What a member takes from the world outside its own code: time, randomness, peers, a worker.

``MemberEnvironment`` bundles the seams a ``Member`` is built with.  Production passes
``PRODUCTION`` (the machine's clock, the OS's randomness, the TCP peer transport, a worker
thread for the WAL's fdatasync); the simulator (``tests/simserver``) passes simulated ones
driven by one seed, and runs the member on an event loop whose time is its clock's.

Contracts:
- the member's own code reads time only through ``clock``, draws randomness that decides
  anything (Raft's election jitter, lease IDs, read-index contexts) only from ``entropy``,
  reaches peers only through the transport ``peer_transport`` builds (and, to join a running
  cluster, ``fetch_cluster_info``; to repair itself, ``fetch_backend``), and hands the WAL's
  fdatasync only to the runner ``serial_worker`` builds;
- other blocking calls go through the event loop's executor (``asyncio.to_thread``), which is
  the loop's own seam: a simulated loop runs them in place;
- ``MemberTransport`` is what the server layer uses of a peer transport; ``PeerTransport`` is
  the production one;
- ``ready_observer`` only observes (the simulator's Raft safety checks): it must not change
  the Ready, the node or the storage it is shown.
"""

from __future__ import annotations

import asyncio
import random
import secrets
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from raftkv.clock import SYSTEM_CLOCK, Clock
from raftkv.peer.outgoing import PeerStats, fetch_cluster_info
from raftkv.peer.security import PLAINTEXT, PeerSecurity
from raftkv.peer.transport import PeerTransport
from raftkv.raft.rawnode import RawNode
from raftkv.raft.storage import MemoryStorage
from raftkv.raft.types import Message, Ready
from raftkv.server.backend_fetch import fetch_backend
from raftkv.server.config import ServerConfig
from raftkv.server.worker import SerialWorker

T = TypeVar("T")

PeerHandler = Callable[[int, bytes], Awaitable[bytes]]
"""Answers one peer request: (the asking member's ID, payload) -> answer payload."""


class Entropy(Protocol):
    """Random draws that decide something (``random.Random``'s methods of the same names)."""

    def getrandbits(self, k: int, /) -> int: ...

    def randbytes(self, n: int, /) -> bytes: ...


class MemberTransport(Protocol):
    """The member's link to its peers: Raft messages, backend snapshots, typed requests.

    ``request`` raises ``raftkv.peer.transport.PeerRequestError`` when the peer does not answer
    within ``timeout`` or answers with an error."""

    cluster_info: Callable[[], bytes] | None
    on_unknown_peer: Callable[[int], None] | None

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def send(self, messages: Sequence[Message]) -> None: ...

    def send_snapshot(self, m: Message, db_path: str) -> None: ...

    def register_handler(self, kind: str, handler: PeerHandler) -> None: ...

    async def request(self, peer_id: int, kind: str, payload: bytes, timeout: float) -> bytes: ...

    def add_peer(self, peer_id: int, urls: Sequence[str]) -> None: ...

    def update_peer(self, peer_id: int, urls: Sequence[str]) -> None: ...

    def remove_peer(self, peer_id: int) -> None: ...

    def set_removed(self, member_ids: set[int]) -> None: ...

    def is_connected(self, peer_id: int) -> bool: ...

    def peer_stats(self, peer_id: int) -> PeerStats: ...


class PeerTransportFactory(Protocol):
    """Builds a member's transport.  ``check_snapshot(path)`` (blocking; raises to refuse) is
    run on every received snapshot file before it is acknowledged and ``on_snapshot`` is
    called: a refused file is deleted and the sender told the snapshot failed."""

    def __call__(
        self,
        *,
        member_id: int,
        cluster_id: int,
        listen_urls: Sequence[str],
        on_message: Callable[[Message], None],
        on_snapshot: Callable[[Message, str], None],
        check_snapshot: Callable[[str], None],
        on_unreachable: Callable[[int], None],
        on_snapshot_status: Callable[[int, bool], None],
        snapshot_dir: str,
        on_removed: Callable[[], None] | None = None,
        security: PeerSecurity = PLAINTEXT,
    ) -> MemberTransport: ...


class ClusterInfoFetcher(Protocol):
    """Asks the member at a peer URL for its cluster's member list (a member joining with
    ``--initial-cluster-state existing``); ``raftkv.peer.outgoing.fetch_cluster_info``'s
    signature and errors."""

    async def __call__(
        self, url: str, *, timeout: float, security: PeerSecurity = PLAINTEXT
    ) -> bytes: ...


class BackendFetcher(Protocol):
    """Streams the backend of the member serving client URL ``url`` into the file ``path``
    (repair's source; ``raftkv.server.backend_fetch.fetch_backend``'s signature and errors)."""

    async def __call__(
        self, url: str, path: str, *, config: ServerConfig, token: str | None, timeout: float
    ) -> None: ...


class BlockingRunner(Protocol):
    """Runs blocking calls one at a time, in order, off the event loop (``SerialWorker``)."""

    def run(self, fn: Callable[..., T], *args: Any) -> asyncio.Future[T]: ...

    def close(self) -> None: ...


SYSTEM_ENTROPY: Entropy = secrets.SystemRandom()
"""The OS's randomness (``os.urandom``)."""


class ReadyObserver(Protocol):
    """Sees each Ready of member ``member_id`` once it is durable (its entries, hard state and
    snapshot written and synced, and in ``storage``), with the node that made it: the
    simulator checks Raft's safety properties there.  Production has none."""

    def __call__(
        self, member_id: int, rd: Ready, node: RawNode, storage: MemoryStorage
    ) -> None: ...


@dataclass(frozen=True)
class MemberEnvironment:
    clock: Clock = SYSTEM_CLOCK
    entropy: Entropy = SYSTEM_ENTROPY
    peer_transport: PeerTransportFactory = PeerTransport
    serial_worker: Callable[[str], BlockingRunner] = SerialWorker
    fetch_cluster_info: ClusterInfoFetcher = fetch_cluster_info
    fetch_backend: BackendFetcher = fetch_backend
    ready_observer: ReadyObserver | None = None


PRODUCTION = MemberEnvironment()


def seeded_entropy(seed: int) -> Entropy:
    """A reproducible ``Entropy`` (simulations and tests)."""
    return random.Random(seed)
