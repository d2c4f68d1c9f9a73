"""The Raft Ready loop of one member: persist, send, apply, advance.

Owns: the ``RawNode`` and everything that feeds it (ticks, peer messages, proposals, read
requests) and everything it asks for (WAL and snapshot writes, messages to peers, entries to
apply, snapshots to send and install).

Contracts (the order the Raft contract demands):
- a Ready's snapshot, entries, term and vote are durable (WAL fdatasync, snapshot file fsync)
  before any of its messages leave, except the leader's own MsgApp messages, which may go out
  while the leader persists (Raft thesis §10.2.1: the leader counts itself only once persisted);
  the WAL write is made on the event loop, its fdatasync in one dedicated thread
  (``SerialWorker``);
  a hard state that only moves the commit index is written but not synced (etcd's MustSync);
- while the pipeline is busy, Ready iterations start at most every ``_pace`` seconds, an
  interval that grows with the load up to ``READY_BATCH_INTERVAL``;
- committed entries are applied in index order, exactly once per member lifetime (the state
  machine skips entries at or below its durable consistent index after a restart), by one
  apply task fed through a queue: as in etcd, a Ready is acknowledged (``advance``) once it is
  persisted and sent, so the next Ready's WAL write overlaps this one's apply; queued entry
  batches are merged into one backend transaction.  A Ready carrying a conf change or a
  snapshot waits for the queue to drain before ``advance``, so the core never sees a
  membership change out of order with its own; while entries are in flight, apply batches
  start at most every ``_pace`` seconds, up to ``APPLY_COALESCE_INTERVAL``;
- an apply batch joins the backend's pending batch, which the state machine commits to the
  file (one LMDB commit and fdatasync) when it is due by size or age, and which the apply
  task commits once its deadline (``commit_deadline``) passes with nothing more to apply, so
  applied entries reach the file within ``--backend-batch-interval``; until then the WAL
  holds them, and a restart re-applies them;
- a corrupt stored value met while applying parks the apply loop (the batch is kept) and tells
  ``on_apply_corruption``; ``resume_apply`` retries it once the state was replaced; a Raft
  snapshot received meanwhile replaces the batches queued before it and resumes apply;
- proposals are queued by ``propose`` and stepped at the top of the next loop iteration as one
  batch (one MsgProp, forwarded as one message by a follower); a proposal the core refuses
  fails its waiter with ``ProposalDroppedError``, so none is silently lost;
- the RawNode is touched only from the event loop thread; the WAL and snapshot files only by
  the current Ready's persistence, whose steps (on the loop or in a worker thread) run one after
  the other, so they are never used concurrently;
- before the log is compacted to a snapshot index, the state machine has durably committed
  everything up to that index (``force_commit``), so a restart never needs an entry that was
  released; before its backend file is copied for a follower, its pending batch is committed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

from raftkv.clock import SYSTEM_CLOCK, Clock
from raftkv.guard.vouch import REFUSED, CopyDecision, CopyVouch
from raftkv.mvcc.errors import BackendCorruptionError
from raftkv.raft import RawNode
from raftkv.raft.errors import ProposalDroppedError, RaftError
from raftkv.raft.storage import MemoryStorage
from raftkv.raft.types import (
    ConfChange,
    ConfState,
    Entry,
    EntryType,
    Message,
    MessageType,
    ReadState,
    Ready,
    Snapshot,
    StateType,
)
from raftkv.server.environment import BlockingRunner
from raftkv.server.worker import SerialWorker
from raftkv.snap import Snapshotter
from raftkv.wal import WAL, WalSnapshot

log = logging.getLogger("raftkv.raft_node")

PROPOSAL_BATCH_BYTES = 1 << 20
"""Proposals queued between two Ready iterations are stepped together as few MsgProp as
possible; a MsgProp is closed once its data reaches this many bytes."""

READY_BATCH_INTERVAL = 0.008
"""While the pipeline is busy (see ``RaftNode._pipeline_busy``), Ready iterations start at
most every ``RaftNode._pace(READY_BATCH_INTERVAL)`` seconds, so proposals and appended entries
arriving meanwhile share one WAL fdatasync, one MsgApp per follower and one acknowledgement; a
lone client never waits for it."""

PACING_PER_REQUEST = 0.0002
"""Seconds of pacing per unit of load (``RaftNode._pace``): the requests waiting on this
member plus the entries in flight.  A fixed interval could not serve both ends: 4 ms made ten
clients wait for it on every step (653 puts/s where no pacing gives 1,148), while a hundred
clients want longer batches (8 ms: 3,138 puts/s and 0.41 ms of the members' CPU per put,
against 2,880 and 0.44 with 4 ms).  Against a fixed 4 ms (and 15 ms between apply batches),
load-proportional pacing gives ten clients 1.66x the puts/s and a hundred 1.12x, with 9 % less
CPU per put; a lone client is unchanged (bench/README.md)."""

READ_INDEX_RETRY = 0.5
"""Seconds before a read index request still unanswered is sent again (etcd's
``readIndexRetryTime``)."""

APPLY_COALESCE_INTERVAL = 0.004
"""While entries are in flight (appended, not yet committed), apply batches start at most every
``RaftNode._pace(APPLY_COALESCE_INTERVAL)`` seconds: under load fewer, larger batches cost
less CPU per entry, in apply and in answering the clients they release together.  With nothing
in flight (a lone client) a committed entry is applied at once."""


class FatalStateMachineError(RuntimeError):
    """The state machine cannot go on (an entry it cannot apply, a data dir it must not
    read): the member stops.  The message says why in full; it is logged without a
    traceback."""


class StorageVersionError(FatalStateMachineError):
    """The data dir was written by a newer raftkv; the message names both versions."""


class StateMachine(Protocol):
    """What the Ready loop needs from the member's applied state."""

    def apply_entries(self, entries: Sequence[Entry]) -> None: ...

    def applied_index(self) -> int: ...

    def snapshot_data(self) -> bytes: ...

    def force_commit(self) -> None: ...

    def commit_pending(self) -> None: ...

    def commit_deadline(self) -> float | None: ...

    def copy_backend(self, path: str) -> int: ...

    def stamp_copy(self, path: str, vouch: CopyVouch | None) -> None: ...

    def install_snapshot(self, snap: Snapshot, db_path: str | None) -> None: ...


class Transport(Protocol):
    def send(self, messages: Sequence[Message]) -> None: ...

    def send_snapshot(self, m: Message, db_path: str) -> None: ...


class RaftNode:
    def __init__(
        self,
        *,
        node: RawNode,
        storage: MemoryStorage,
        wal: WAL,
        snapshotter: Snapshotter,
        snap_dir: str,
        conf_state: ConfState,
        snapshot_index: int,
        tick_interval: float,
        snapshot_count: int,
        snapshot_catchup_entries: int,
        clock: Clock = SYSTEM_CLOCK,
        new_worker: Callable[[str], BlockingRunner] = SerialWorker,
    ) -> None:
        """``new_worker`` builds, at ``start``, the runner of the WAL's fdatasync."""
        self.node = node
        self.storage = storage
        self.wal = wal
        self.snapshotter = snapshotter
        self.snap_dir = snap_dir
        self.conf_state = conf_state
        self.snapshot_index = snapshot_index
        # The last index applied from the log (entries or a snapshot), always in the log or
        # at its snapshot; the state machine's applied index may be ahead of it.
        self.log_applied = snapshot_index
        self.tick_interval = tick_interval
        self.snapshot_count = snapshot_count
        # Entries kept behind a snapshot so slow followers catch up by entries rather than a
        # whole snapshot (etcd's SnapshotCatchUpEntries).
        self.snapshot_catchup_entries = snapshot_catchup_entries
        self.clock = clock  # the backend batch's deadline is on it
        self.lead = 0
        self.is_leader = False
        self.transport: Transport | None = None
        self.state_machine: StateMachine | None = None
        # The requests on this member waiting for their entries to be applied (the member's
        # proposer registry): with the entries in flight, the load that sets the pacing.
        self.waiting: Callable[[], int] = lambda: 0
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._background: set[asyncio.Task[None]] = set()
        self._stopped = False
        self._read_waiters: dict[bytes, asyncio.Future[int]] = {}
        self._applied_waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._received_snapshots: dict[int, str] = {}
        self._leader_waiters: list[asyncio.Future[None]] = []
        self._apply_queue: deque[tuple[Snapshot | None, Sequence[Entry]]] = deque()
        self._apply_wake = asyncio.Event()
        self._apply_idle = asyncio.Event()
        self._apply_idle.set()
        self._last_apply = 0.0
        self._last_ready = 0.0
        self._new_worker = new_worker
        self._wal_worker: BlockingRunner | None = None
        # Proposals queued since the last Ready iteration, stepped as one MsgProp; each has
        # the future its proposer awaits, which gets ProposalDroppedError if the batch drops.
        self._proposals: list[bytes] = []
        self._proposal_waiters: list[asyncio.Future[Any]] = []
        self.on_fatal: Callable[[BaseException], None] | None = None
        # False while this member's state must not be copied to others (named diverged).
        self.may_send_snapshot: Callable[[], bool] = lambda: True
        # Whether this member's state at a backend copy's index (its apply digest there) may
        # go to member ``to``, and how the copy is stamped (``raftkv.guard.vouch``).
        self.confirm_snapshot: Callable[[int, int], Awaitable[CopyDecision]] | None = None
        # Told when apply met a corrupt stored value and parked (see ``_apply_loop``).
        self.on_apply_corruption: Callable[[BackendCorruptionError], None] | None = None
        # Told when a backend copy for a follower met a corrupt stored value (not sent).
        self.on_backend_corruption: Callable[[BackendCorruptionError], None] | None = None
        # Each Ready once it is durable (``MemberEnvironment.ready_observer``).
        self.on_persisted: Callable[[Ready], None] | None = None
        self._apply_resume = asyncio.Event()
        self._apply_resume.set()
        # Called with (this member is leader) whenever the leader changes.
        self.on_leader_change: Callable[[bool], None] | None = None

    # -- lifecycle ------------------------------------------------------------------------

    def start(self, transport: Transport, state_machine: StateMachine) -> None:
        self.transport = transport
        self.state_machine = state_machine
        self._wal_worker = self._new_worker("raftkv-wal-sync")
        self._tasks = [
            asyncio.create_task(self._tick_loop(), name="raft-tick"),
            asyncio.create_task(self._ready_loop(), name="raft-ready"),
            asyncio.create_task(self._apply_loop(), name="raft-apply"),
        ]

    async def stop(self) -> None:
        self._stopped = True
        self._wake.set()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for fut in self._read_waiters.values():
            if not fut.done():
                fut.cancel()
        for waiter in self._proposal_waiters:
            if not waiter.done():
                waiter.cancel()
        if self._wal_worker is not None:
            # A cancelled Ready may have left an fdatasync running: let it end before closing.
            await self._wal_worker.run(lambda: None)
            self._wal_worker.close()
        self.wal.close()

    # -- inputs ---------------------------------------------------------------------------

    def step(self, m: Message) -> None:
        try:
            self.node.step(m)
        except RaftError as exc:
            log.debug("dropped %s from %x: %s", m.type.name, m.frm, exc)
            return
        self._wake.set()

    def receive_snapshot(self, m: Message, db_path: str) -> None:
        assert m.snapshot is not None
        self._received_snapshots[m.snapshot.metadata.index] = db_path
        self.step(m)

    def report_unreachable(self, peer_id: int) -> None:
        self.node.report_unreachable(peer_id)
        self._wake.set()

    def report_snapshot(self, peer_id: int, ok: bool) -> None:
        self.node.report_snapshot(peer_id, ok)
        self._wake.set()

    def propose(self, data: bytes, waiter: asyncio.Future[Any]) -> None:
        """Queue ``data``; the Ready loop steps everything queued as one proposal batch.

        Raises ProposalDroppedError at once when no leader is known; when the core refuses
        the batch later (leadership transfer, uncommitted size limit), ``waiter`` gets a
        ProposalDroppedError instead.
        """
        if self.node.lead == 0:
            raise ProposalDroppedError("raft proposal dropped: no leader")
        self._proposals.append(data)
        self._proposal_waiters.append(waiter)
        self._wake.set()

    def _flush_proposals(self) -> None:
        """Step the queued proposals, at most ``PROPOSAL_BATCH_BYTES`` of data per MsgProp
        (a follower forwards each MsgProp to the leader as one message)."""
        datas, waiters = self._proposals, self._proposal_waiters
        self._proposals, self._proposal_waiters = [], []
        start = size = 0
        for i, data in enumerate(datas):
            size += len(data)
            if size >= PROPOSAL_BATCH_BYTES or i == len(datas) - 1:
                self._propose_batch(datas[start : i + 1], waiters[start : i + 1])
                start, size = i + 1, 0

    def _propose_batch(self, datas: list[bytes], waiters: list[asyncio.Future[Any]]) -> None:
        try:
            self.node.propose_many(datas)
        except ProposalDroppedError as exc:
            for fut in waiters:
                if not fut.done():
                    fut.set_exception(ProposalDroppedError(str(exc)))

    def propose_conf_change(self, cc: ConfChange) -> None:
        self.node.propose_conf_change(cc)
        self._wake.set()

    def conf_change_blocked(self) -> str:
        """On the leader, why a conf change cannot be proposed now: ``"pending"`` (one is
        committed or in flight and not yet applied), ``"term-start"`` (only this term's first
        entry is not applied yet: it clears by itself within a heartbeat or two), ``""``."""
        r = self.node.raft
        if r.pending_conf_index <= r.log.applied:
            return ""
        lo = r.log.applied + 1
        hi = min(r.pending_conf_index, r.log.last_index()) + 1
        if any(e.type == EntryType.CONF_CHANGE for e in r.log.slice(lo, hi, None)):
            return "pending"
        return "term-start"

    def apply_conf_change(self, cc: ConfChange) -> ConfState:
        """Called by the state machine while applying a committed conf change entry."""
        self.conf_state = self.node.apply_conf_change(cc)
        return self.conf_state

    def transfer_leader(self, transferee: int) -> None:
        self.node.transfer_leader(transferee)
        self._wake.set()

    async def read_index(self, ctx: bytes) -> int:
        """The commit index a linearizable read must wait for (one heartbeat round).

        A request lost on its way (a follower forwarded it to a leader that stepped down) is
        sent again every ``READ_INDEX_RETRY`` seconds until answered, as etcd does; the
        caller bounds the whole wait."""
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._read_waiters[ctx] = fut
        try:
            while True:
                self.node.read_index(ctx)
                self._wake.set()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(READ_INDEX_RETRY):
                        return await asyncio.shield(fut)
                log.debug(
                    "no answer to a read index request in %.1fs: sending it again", READ_INDEX_RETRY
                )
        finally:
            self._read_waiters.pop(ctx, None)

    async def wait_applied(self, index: int) -> None:
        assert self.state_machine is not None
        if self.state_machine.applied_index() >= index:
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._applied_waiters.append((index, fut))
        await fut

    async def wait_leader(self) -> None:
        if self.lead:
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._leader_waiters.append(fut)
        await fut

    # -- loops ----------------------------------------------------------------------------

    async def _tick_loop(self) -> None:
        while not self._stopped:
            await asyncio.sleep(self.tick_interval)
            self.node.tick()
            self._wake.set()

    async def _ready_loop(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while not self._stopped:
                if not self._proposals and not self.node.has_ready():
                    await self._wake.wait()
                    self._wake.clear()
                    continue
                if self._pipeline_busy():
                    # Under load, let work gather: one Ready (one WAL fdatasync, one MsgApp
                    # per follower, one acknowledgement) for many proposals costs far less
                    # CPU than many Readies of one or two entries each.
                    wait = self._last_ready + self._pace(READY_BATCH_INTERVAL) - loop.time()
                    if wait > 0:
                        await asyncio.sleep(wait)
                self._last_ready = loop.time()
                if self._proposals:
                    self._flush_proposals()
                if self.node.has_ready():
                    await self._process_ready(self.node.ready())
        except Exception as exc:  # not CancelledError or GeneratorExit: those end the task
            self._fail("raft ready loop", exc)
            raise

    def _pipeline_busy(self) -> bool:
        """True while more entries are in flight (in the log, not yet known committed) than
        one lone client can have, so a lone sequential client's latency is untouched by
        ``READY_BATCH_INTERVAL``."""
        log_ = self.node.raft.log
        return log_.last_index() - log_.committed >= 2

    def _fail(self, where: str, exc: BaseException) -> None:
        if isinstance(exc, FatalStateMachineError):
            log.critical("%s stopped: %s", where, exc)
        else:
            # the cause follows in one line (the traceback at debug); the process's last line
            # says the member stopped
            log.error("%s failed", where, exc_info=exc)
        if self.on_fatal is not None:
            self.on_fatal(exc)

    async def _apply_loop(self) -> None:
        assert self.state_machine is not None
        loop = asyncio.get_running_loop()
        try:
            while True:
                if not self._apply_queue:
                    self._apply_idle.set()
                    await self._idle_until_work()
                    continue
                wait = self._last_apply + self._pace(APPLY_COALESCE_INTERVAL) - loop.time()
                if wait > 0 and self._apply_queue[0][0] is None and self._entries_in_flight():
                    await asyncio.sleep(wait)
                    continue
                self._last_apply = loop.time()
                snap, entries = self._apply_queue.popleft()
                if snap is not None:
                    db_path = self._received_snapshots.pop(snap.metadata.index, None)
                    self.state_machine.install_snapshot(snap, db_path)
                    self.conf_state = snap.metadata.conf_state
                    self.snapshot_index = self.log_applied = snap.metadata.index
                batch = list(entries)
                while self._apply_queue and self._apply_queue[0][0] is None:
                    batch.extend(self._apply_queue.popleft()[1])
                if batch:
                    try:
                        self.state_machine.apply_entries(batch)
                    except BackendCorruptionError as exc:
                        # The stored state is damaged: applying on would diverge, stopping
                        # would crash-loop. Park with the batch kept until the state is
                        # replaced (member repair), then retry it (entries already applied
                        # are skipped by the consistent index).
                        self._apply_queue.appendleft((None, batch))
                        await self._park(exc)
                        continue
                    self.log_applied = batch[-1].index
                self._release_applied_waiters()
                await asyncio.sleep(0)  # let the loop serve requests between batches
        except Exception as exc:  # not CancelledError or GeneratorExit: those end the task
            self._fail("apply loop", exc)
            raise

    async def _idle_until_work(self) -> None:
        """Wait for entries to apply; meanwhile commit the state machine's pending batch once
        it is due."""
        assert self.state_machine is not None
        due = self.state_machine.commit_deadline()
        if due is not None:
            left = due - self.clock.monotonic()
            if left <= 0:
                self.state_machine.commit_pending()
                return
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(left):
                    await self._apply_wake.wait()
        else:
            await self._apply_wake.wait()
        self._apply_wake.clear()

    def _supersede_parked_batches(self) -> None:
        """A snapshot arrived while apply is parked on a corrupt stored value: it replaces the
        whole state, the corrupt value included, and covers every entry queued before it (a
        follower is sent one only past its commit index).  Those batches are dropped and apply
        resumes with the install; otherwise the Ready loop, which waits for a snapshot to be
        installed, would wait for ever.  The member stays fenced until a repair verifies its
        state."""
        while self._apply_queue and self._apply_queue[0][0] is None:
            self._apply_queue.popleft()
        log.warning("a snapshot replaces the state apply parked on; apply resumes")
        self._apply_resume.set()

    async def _park(self, exc: BackendCorruptionError) -> None:
        log.error("apply stopped: the backend is corrupt (%s); waiting for a repair", exc)
        self._apply_resume.clear()
        if self.on_apply_corruption is not None:
            self.on_apply_corruption(exc)
        await self._apply_resume.wait()
        log.warning("apply resumed after the state was replaced")

    @property
    def apply_parked(self) -> bool:
        """True while apply waits for the corrupt state to be replaced."""
        return not self._apply_resume.is_set()

    def resume_apply(self) -> None:
        """The state machine's state was replaced: retry the parked batch."""
        self._apply_resume.set()

    def _pace(self, cap: float) -> float:
        """The pacing interval under the current load (``PACING_PER_REQUEST``), at most
        ``cap``: the requests waiting on this member, the proposals not yet stepped and the
        entries appended but not known committed."""
        log_ = self.node.raft.log
        load = self.waiting() + len(self._proposals) + log_.last_index() - log_.committed
        return min(cap, load * PACING_PER_REQUEST)

    def _entries_in_flight(self) -> bool:
        log_ = self.node.raft.log
        return bool(self._proposals) or log_.last_index() > log_.committed

    async def _process_ready(self, rd: Ready) -> None:
        assert self.transport is not None and self.state_machine is not None
        if rd.soft_state is not None:
            self._update_leader(rd.soft_state.lead, rd.soft_state.raft_state == StateType.LEADER)
        if self.is_leader:
            self._send(rd.messages)
        await self._persist(rd)
        if self.on_persisted is not None:
            self.on_persisted(rd)
        if not self.is_leader:
            self._send(rd.messages)
        has_snapshot = not rd.snapshot.is_empty()
        if rd.committed_entries or has_snapshot:
            self._apply_queue.append((rd.snapshot if has_snapshot else None, rd.committed_entries))
            if has_snapshot and self.apply_parked:
                self._supersede_parked_batches()
            self._apply_idle.clear()
            self._apply_wake.set()
            if has_snapshot or any(e.type == EntryType.CONF_CHANGE for e in rd.committed_entries):
                await self._apply_idle.wait()
        self._release_read_states(rd.read_states)
        self.node.advance(rd)
        await self._maybe_snapshot()

    async def _persist(self, rd: Ready) -> None:
        snap = rd.snapshot
        if not snap.is_empty():
            md = snap.metadata
            await asyncio.to_thread(self.snapshotter.save, snap)
            await asyncio.to_thread(
                self.wal.save_snapshot, WalSnapshot(md.index, md.term, md.conf_state)
            )
        if rd.must_sync:
            assert self._wal_worker is not None
            self.wal.write(rd.hard_state, rd.entries)
            await self._wal_worker.run(self.wal.sync)
        elif rd.hard_state is not None:
            # Only the commit index moved: written, not synced (etcd's MustSync). A commit
            # index lost in a crash is learnt again from the leader; nothing else in this
            # Ready depends on it being durable.
            self.wal.save(rd.hard_state, (), sync=False)
        if not snap.is_empty():
            self.storage.apply_snapshot(snap)
        if rd.hard_state is not None:
            self.storage.set_hard_state(rd.hard_state)
        if rd.entries:
            self.storage.append(rd.entries)

    def _send(self, messages: Sequence[Message]) -> None:
        if not messages:
            return
        assert self.transport is not None
        plain = [m for m in messages if m.type != MessageType.MSG_SNAP]
        if plain:
            self.transport.send(plain)
        for m in messages:
            if m.type == MessageType.MSG_SNAP:
                task = asyncio.create_task(self._send_snapshot(m))
                self._background.add(task)
                task.add_done_callback(self._background.discard)

    async def _send_snapshot(self, m: Message) -> None:
        assert self.transport is not None and self.state_machine is not None
        if not self.may_send_snapshot():
            log.warning("not sending a snapshot to %x: this member's state is fenced", m.to)
            self.report_snapshot(m.to, False)
            return
        path = os.path.join(self.snap_dir, f"outgoing-{m.to:x}-{m.index:016x}.db.tmp")
        try:
            self.state_machine.commit_pending()
            index = await asyncio.to_thread(self.state_machine.copy_backend, path)
        except OSError as exc:
            log.error("cannot copy the backend for a snapshot to %x: %s", m.to, exc)
            self.report_snapshot(m.to, False)
            return
        except BackendCorruptionError as exc:
            # A value corrupted at rest here must not become another member's state.
            log.error("not sending a snapshot to %x: this member's backend is corrupt", m.to)
            with contextlib.suppress(OSError):
                os.remove(path)
            if self.on_backend_corruption is not None:
                self.on_backend_corruption(exc)
            self.report_snapshot(m.to, False)
            return
        if self.confirm_snapshot is not None:
            decision = await self.confirm_snapshot(index, m.to)
            if decision.send:
                try:
                    await asyncio.to_thread(self.state_machine.stamp_copy, path, decision.vouch)
                except OSError as exc:
                    log.error("cannot stamp the backend copy for a snapshot to %x: %s", m.to, exc)
                    decision = REFUSED
            if not decision.send:
                # A disputed state must not become another member's (an apply fault here not
                # yet detected would spread): Raft asks again later.  The guard logged why.
                log.debug("not sending a snapshot to %x yet (index %d)", m.to, index)
                with contextlib.suppress(OSError):
                    os.remove(path)
                self.report_snapshot(m.to, False)
                return
        self.transport.send_snapshot(m, path)

    def _update_leader(self, lead: int, is_leader: bool) -> None:
        assert self.state_machine is not None
        changed = lead != self.lead or is_leader != self.is_leader
        self.lead, self.is_leader = lead, is_leader
        if changed:
            log.info("leader is now %x (this member leader: %s)", lead, is_leader)
            if self.on_leader_change is not None:
                self.on_leader_change(is_leader)
        if lead:
            for fut in self._leader_waiters:
                if not fut.done():
                    fut.set_result(None)
            self._leader_waiters.clear()

    def _release_read_states(self, read_states: Sequence[ReadState]) -> None:
        for rs in read_states:
            read_fut = self._read_waiters.get(rs.request_ctx)
            if read_fut is not None and not read_fut.done():
                read_fut.set_result(rs.index)

    def _release_applied_waiters(self) -> None:
        assert self.state_machine is not None
        if self._applied_waiters:
            applied = self.state_machine.applied_index()
            still: list[tuple[int, asyncio.Future[None]]] = []
            for index, fut in self._applied_waiters:
                if index <= applied:
                    if not fut.done():
                        fut.set_result(None)
                else:
                    still.append((index, fut))
            self._applied_waiters = still

    async def _maybe_snapshot(self) -> None:
        """Snapshot at the last entry applied from the log: the state machine's own index can
        be ahead of the log (a received backend is newer than the Raft snapshot that carried
        it, as etcd's: the entries up to it arrive after, and apply skips them)."""
        applied = self.log_applied
        if applied - self.snapshot_index < self.snapshot_count:
            return
        await self.create_snapshot(applied)

    async def create_snapshot(self, applied: int) -> None:
        """Snapshot the raft state at ``applied`` and compact the log behind it."""
        assert self.state_machine is not None
        # On this thread: the pending batch belongs to it (one fdatasync per snapshot).
        self.state_machine.force_commit()
        snap = self.storage.create_snapshot(
            applied, self.conf_state, self.state_machine.snapshot_data()
        )
        md = snap.metadata
        await asyncio.to_thread(self.snapshotter.save, snap)
        await asyncio.to_thread(
            self.wal.save_snapshot, WalSnapshot(md.index, md.term, md.conf_state)
        )
        self.snapshot_index = applied
        compact_to = applied - self.snapshot_catchup_entries
        if compact_to > self.storage.first_index():
            self.storage.compact(compact_to)
        await asyncio.to_thread(self.wal.release_lock_to, md.index)
        log.info("saved snapshot at index %d, log compacted to %d", applied, max(compact_to, 0))
