"""The simulated network between members: links with delay, loss, duplication, partitions.

Owns: ``SimNetwork`` (the links and their faults, one ``random.Random`` from the seed) and
``SimTransport`` (one member's ``raftkv.server.environment.MemberTransport`` on it: Raft
messages, backend snapshots as files, typed requests).

Contracts:
- a Raft message is encoded with the real codec when sent and decoded on delivery, so no
  member ever holds another's objects; it arrives after a delay drawn per message (so
  messages are reordered), or never (loss), or twice (duplication), and never across a link
  that is cut when it is sent or when it arrives;
- a message, snapshot or answer reaches a member only while the process it was sent to is
  alive (a restarted member is a new process: what was in flight to the old one is lost), and
  is handled in that member's process;
- a send to a peer the link does not reach is reported unreachable (at most every 0.1 s per
  peer, as the real transport does); a snapshot that does not arrive is reported failed, after
  the peer is reported unreachable;
- a snapshot that arrives is checked as the real transport checks it: ``check_snapshot`` runs
  on the written file before it is renamed and handed to ``on_snapshot``; a file it refuses is
  deleted, ``on_snapshot`` is not called, the network's faults count "snapshot refused" and
  the sender is told, after a delay, as for a lost one.  The check runs in place on the
  virtual loop, like the snapshot's file I/O (no thread);
- ``request`` raises ``PeerRequestError`` when the peer is unknown, the answer does not come
  within ``timeout`` or the handler failed (with ``"<kind>: <error>"``, the real transport's
  text);
- a member that sends to a peer that counts it removed is told ``on_removed``.
"""

from __future__ import annotations

import asyncio
import contextvars
import os
import random
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from raftkv.peer.outgoing import PeerStats
from raftkv.peer.security import PLAINTEXT, PeerSecurity
from raftkv.peer.snapshot import snapshot_db_name
from raftkv.peer.transport import PeerRequestError
from raftkv.raft.codec import decode_message, encode_message
from raftkv.raft.types import LOCAL_MESSAGES, Message, MessageType
from raftkv.server.environment import PeerHandler
from tests.simserver.loop import CURRENT_PROCESS, Process, VirtualLoop

UNREACHABLE_INTERVAL = 0.1


@dataclass
class NetworkParams:
    """Delays are seconds; probabilities apply per message."""

    delay_min: float = 0.0005
    delay_max: float = 0.005
    loss: float = 0.0
    duplicate: float = 0.0
    snapshot_delay: float = 0.05


class SimNetwork:
    def __init__(self, loop: VirtualLoop, rng: random.Random) -> None:
        self.loop = loop
        self.rng = rng
        self.params = NetworkParams()
        # (sender, receiver, index) of each backend copy accepted by its receiver
        # (sender, receiver, Raft snapshot index, the received backend file's path)
        self.on_snapshot_arrived: Callable[[int, int, int, str], None] | None = None
        self.faults: Counter[str] = Counter()  # messages lost, duplicated, cut in flight
        self._endpoints: dict[int, SimTransport] = {}
        self._cut: set[tuple[int, int]] = set()  # (from, to) pairs that carry nothing
        self._context = contextvars.Context()  # in flight: no process's callback

    # -- faults -------------------------------------------------------------------------------

    def cut(self, frm: int, to: int) -> None:
        """One-way: nothing from ``frm`` reaches ``to``."""
        self._cut.add((frm, to))

    def partition(self, side: Sequence[int], others: Sequence[int]) -> None:
        for a in side:
            for b in others:
                self.cut(a, b)
                self.cut(b, a)

    def heal(self) -> None:
        self._cut.clear()
        self.params.loss = self.params.duplicate = 0.0

    def reaches(self, frm: int, to: int) -> bool:
        dst = self._endpoints.get(to)
        return (frm, to) not in self._cut and dst is not None and dst.alive

    # -- endpoints ----------------------------------------------------------------------------

    def attach(self, t: SimTransport) -> None:
        self._endpoints[t.member_id] = t

    def at_url(self, url: str) -> SimTransport | None:
        """The live member listening on peer ``url``."""
        for t in self._endpoints.values():
            if t.alive and url in t.listen_urls:
                return t
        return None

    def endpoint(self, member_id: int) -> SimTransport | None:
        t = self._endpoints.get(member_id)
        return t if t is not None and t.alive else None

    def delay(self) -> float:
        p = self.params
        return p.delay_min + self.rng.random() * (p.delay_max - p.delay_min)

    def deliver_later(
        self,
        frm: int,
        to: int,
        delay: float,
        deliver: Callable[[SimTransport], None],
        on_lost: Callable[[], None] | None = None,
    ) -> None:
        """After ``delay``, call ``deliver(destination)`` in the destination's process if the
        link carried it (it reached ``to`` when sent and when due, and ``to`` is the same live
        process); otherwise ``on_lost()``, in the network's own context.  What is in flight
        does not depend on the sender staying alive."""
        dst = self._endpoints.get(to) if self.reaches(frm, to) else None

        def arrive() -> None:
            if dst is not None and self.reaches(frm, to) and self._endpoints.get(to) is dst:
                dst.process.context.run(deliver, dst)
                return
            self.faults["cut in flight"] += 1
            if on_lost is not None:
                on_lost()

        self.loop.call_later(delay, arrive, context=self._context)

    def message(self, m: Message) -> None:
        """Send one Raft message with the seed's loss, delay and duplication."""
        p = self.params
        if p.loss and self.rng.random() < p.loss:
            self.faults["message lost"] += 1
            return
        copies = 1
        if p.duplicate and self.rng.random() < p.duplicate:
            self.faults["message duplicated"] += 1
            copies = 2
        data = encode_message(m)
        for _ in range(copies):
            self.deliver_later(m.frm, m.to, self.delay(), lambda dst: dst.receive(data))


class SimTransport:
    """One member's peer transport on the simulated network (built by the member through
    ``MemberEnvironment.peer_transport``)."""

    def __init__(
        self,
        network: SimNetwork,
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
    ) -> None:
        process = CURRENT_PROCESS.get()
        if process is None:
            raise RuntimeError("a simulated transport is built inside a simulated process")
        self.process: Process = process
        self.network = network
        self.member_id = member_id
        self.cluster_id = cluster_id
        self.listen_urls = list(listen_urls)
        self.cluster_info: Callable[[], bytes] | None = None
        self.on_unknown_peer: Callable[[int], None] | None = None
        self._on_message = on_message
        self._on_snapshot = on_snapshot
        self._check_snapshot = check_snapshot
        self._on_unreachable = on_unreachable
        self._on_snapshot_status = on_snapshot_status
        self._on_removed = on_removed
        self.snapshot_dir = snapshot_dir
        self._handlers: dict[str, PeerHandler] = {}
        self._peers: set[int] = set()
        self._removed: set[int] = set()
        self._last_unreachable: dict[int, float] = {}
        self._started = False
        self._stopped = False

    @property
    def alive(self) -> bool:
        return self._started and not self._stopped and self.process.alive

    async def start(self) -> None:
        self._started = True
        self.network.attach(self)

    async def stop(self) -> None:
        self._stopped = True

    # -- peers --------------------------------------------------------------------------------

    def add_peer(self, peer_id: int, urls: Sequence[str]) -> None:
        self._peers.add(peer_id)

    def update_peer(self, peer_id: int, urls: Sequence[str]) -> None:
        self._peers.add(peer_id)

    def remove_peer(self, peer_id: int) -> None:
        self._peers.discard(peer_id)

    def set_removed(self, member_ids: set[int]) -> None:
        self._removed = set(member_ids)

    def is_connected(self, peer_id: int) -> bool:
        return peer_id in self._peers and self.network.reaches(self.member_id, peer_id)

    def peer_stats(self, peer_id: int) -> PeerStats:
        return PeerStats()

    # -- Raft messages --------------------------------------------------------------------------

    def send(self, messages: Sequence[Message]) -> None:
        for m in messages:
            if m.type in LOCAL_MESSAGES:
                raise ValueError(f"{m.type.name} is local and never sent to a peer")
            if m.type is MessageType.MSG_SNAP:
                asyncio.get_running_loop().call_soon(self._on_snapshot_status, m.to, False)
                continue
            if m.to not in self._peers:
                continue
            if not self.network.reaches(self.member_id, m.to):
                self._report_unreachable(m.to)
                continue
            self.network.message(m)

    def receive(self, data: bytes) -> None:
        m = decode_message(data)
        if m.frm in self._removed:
            sender = self.network.endpoint(m.frm)
            if sender is not None and sender._on_removed is not None:
                self.network.loop.call_soon(sender._on_removed, context=sender.process.context)
            return
        if m.frm not in self._peers:
            # As the real transport: a stream from a member it does not know is refused, and
            # the member told.
            if self.on_unknown_peer is not None:
                self.on_unknown_peer(m.frm)
            return
        self._on_message(m)

    def _report_unreachable(self, peer_id: int) -> None:
        now = self.network.loop.time()
        last = self._last_unreachable.get(peer_id)
        if last is not None and now - last < UNREACHABLE_INTERVAL:
            return
        self._last_unreachable[peer_id] = now
        self.network.loop.call_soon(self._on_unreachable, peer_id)

    # -- snapshots ----------------------------------------------------------------------------

    def send_snapshot(self, m: Message, db_path: str) -> None:
        if m.type is not MessageType.MSG_SNAP or m.snapshot is None:
            raise ValueError("send_snapshot needs a MsgSnap carrying snapshot metadata")
        with open(db_path, "rb") as f:
            db = f.read()
        data = encode_message(m)
        md = m.snapshot.metadata
        net = self.network
        to = m.to
        me = self.process.context

        def arrive(dst: SimTransport) -> None:
            final = os.path.join(dst.snapshot_dir, snapshot_db_name(md.index, md.term))
            tmp = final + ".part"
            with open(tmp, "wb") as f:
                f.write(db)
                f.flush()
                os.fsync(f.fileno())
            try:
                dst._check_snapshot(tmp)
            except Exception:
                os.unlink(tmp)
                net.faults["snapshot refused"] += 1
                net.loop.call_later(net.delay(), self._snapshot_failed, to, context=me)
                return
            os.replace(tmp, final)
            if net.on_snapshot_arrived is not None:
                net.on_snapshot_arrived(self.member_id, to, md.index, final)
            dst._on_snapshot(decode_message(data), final)
            net.loop.call_later(net.delay(), self._on_snapshot_status, to, True, context=me)

        def lost() -> None:
            net.loop.call_soon(self._snapshot_failed, to, context=me)

        net.deliver_later(self.member_id, to, net.params.snapshot_delay, arrive, lost)

    def _snapshot_failed(self, to: int) -> None:
        """A failed send reports the peer unreachable before its status (as the real one)."""
        self._last_unreachable.pop(to, None)
        self._report_unreachable(to)
        self.network.loop.call_soon(self._on_snapshot_status, to, False)

    # -- requests -----------------------------------------------------------------------------

    def register_handler(self, kind: str, handler: PeerHandler) -> None:
        self._handlers[kind] = handler

    async def request(self, peer_id: int, kind: str, payload: bytes, timeout: float) -> bytes:
        if peer_id not in self._peers:
            raise PeerRequestError(f"unknown peer {peer_id:x}")
        net = self.network
        loop = net.loop
        answer: asyncio.Future[tuple[bool, bytes]] = loop.create_future()

        def answered(ok: bool, body: bytes) -> None:
            if not answer.done():
                answer.set_result((ok, body))

        def arrive(dst: SimTransport) -> None:
            dst.process.spawn(loop, dst._serve(self, kind, payload, answered))

        net.deliver_later(self.member_id, peer_id, net.delay(), arrive)
        try:
            async with asyncio.timeout(timeout):
                ok, body = await answer
        except TimeoutError:
            raise PeerRequestError(
                f"request {kind!r} to peer {peer_id:x} timed out after {timeout}s"
            ) from None
        if not ok:
            raise PeerRequestError(body.decode(errors="replace"))
        return body

    async def _serve(
        self,
        asker: SimTransport,
        kind: str,
        payload: bytes,
        answered: Callable[[bool, bytes], None],
    ) -> None:
        handler = self._handlers.get(kind)
        if handler is None:
            ok, body = False, f"no handler for {kind!r}".encode()
        else:
            try:
                ok, body = True, await handler(asker.member_id, payload)
            except Exception as exc:  # the handler's failure becomes the caller's error
                ok, body = False, f"{kind}: {exc}".encode()
        net = self.network
        net.deliver_later(
            self.member_id, asker.member_id, net.delay(), lambda _asker: answered(ok, body)
        )
