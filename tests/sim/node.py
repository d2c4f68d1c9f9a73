"""One simulated cluster member: a RawNode, its disk, its state machine, its Ready loop.

Owns: ``SimNode`` — ticking, stepping messages, the Ready/advance cycle with a
simulated fsync, applying committed entries to the ``KVStateMachine``,
answering waiting clients (writes on apply, reads once a ReadState's index is
applied), local snapshots and log compaction, crash and restart.

Contracts:
- at most one Ready is in flight; between ``ready()`` and ``advance()`` the node
  keeps ticking and stepping messages (as etcd's node loop does);
- a Ready's messages leave only after its records are durable, except the
  leader's MsgApp which may leave at once (``Raft thesis §10.2.1``) when the
  seed enables it; committed entries are applied after the write is durable;
- everything volatile (RawNode, state machine, waiting clients) is lost on a
  crash; a restart rebuilds the state machine from the newest durable snapshot (local
  or Raft's) and passes its index as ``Config.applied``; events of an older
  incarnation are ignored;
- local snapshots are taken every ``snapshot_every`` entries; one becomes the Raft
  snapshot (shipped to lagging peers, the log compacted behind it) only once the guard
  confirmed this node's digest at or past its index (``promote_snapshot``);
- each applied entry goes through the simulation's guard (reference chain, armed apply
  fault); apply digests up to the last local snapshot stay readable across restarts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from raftkv.raft import RawNode
from raftkv.raft.config import Config
from raftkv.raft.errors import ProposalDroppedError, RaftError, StepPeerNotFoundError
from raftkv.raft.types import (
    ConfChangeType,
    Entry,
    Message,
    MessageType,
    ReadState,
    Ready,
    Snapshot,
    SnapshotMetadata,
    StateType,
)
from tests.sim.disk import SimDisk
from tests.sim.invariants import Violation
from tests.sim.kv import Command, KVStateMachine

if TYPE_CHECKING:
    from tests.sim.cluster import Simulation

DURABLE_DIGESTS = 4096


@dataclass(frozen=True, slots=True)
class PendingRead:
    client: int
    req: int
    key: str


class SimNode:
    def __init__(self, sim: Simulation, node_id: int, tick_interval: int) -> None:
        self.sim = sim
        self.id = node_id
        self.tick_interval = tick_interval
        self.disk = SimDisk()
        self.raw: RawNode | None = None
        self.sm = KVStateMachine()
        self.incarnation = 0
        self.busy = False
        self.up = False
        self.removed = False
        self.waiters: set[tuple[int, int]] = set()
        self.reads: dict[bytes, PendingRead] = {}
        self.ready_reads: list[ReadState] = []
        self._read_seq = 0
        # Apply digests of indexes up to the last local snapshot, durable with it (the last
        # DURABLE_DIGESTS of them): what a restarted member still answers about its past.
        self.durable_digests: dict[int, bytes] = {}

    # -- life cycle -------------------------------------------------------------

    def start(self) -> None:
        """(Re)start from the durable storage."""
        assert not self.up and not self.removed
        snap = self.disk.recovery_snapshot()
        meta = snap.metadata
        self.sm = KVStateMachine.decode(snap.data, meta.index, meta.conf_state)
        if meta.index:
            self.sim.guard.after_replace(self)
            self.sim.guard.on_recovered(self, meta.index)
        cfg = Config(
            id=self.id,
            storage=self.disk.storage,
            election_tick=self.sim.params.election_tick,
            heartbeat_tick=self.sim.params.heartbeat_tick,
            max_size_per_msg=self.sim.params.max_size_per_msg,
            max_inflight_msgs=self.sim.params.max_inflight_msgs,
            pre_vote=self.sim.params.pre_vote,
            check_quorum=self.sim.params.check_quorum,
            disable_proposal_forwarding=not self.sim.params.forward_proposals,
            applied=meta.index,
            seed=self.sim.rng.randrange(1 << 30),
            logger=self.sim.raft_logger(self.id),
        )
        self.raw = RawNode(cfg)
        self.up = True
        self.incarnation += 1
        inc = self.incarnation
        self.sim.sched.after(self.sim.rng.randint(1, self.tick_interval), lambda: self._tick(inc))
        self.pump()

    def crash(self) -> None:
        """Power loss: everything not synced is lost (maybe a torn prefix survives)."""
        if not self.up:
            return
        persisted = self.disk.crash(self.sim.rng, self.sim.params.torn_write)
        if persisted is not None:
            if persisted.snapshot is not None:
                self.sim.monitor.on_snapshot(self.id, persisted.snapshot)
            self.sim.monitor.on_durable_entries(self.id, persisted.entries, self.disk.storage)
        self.up = False
        self.busy = False
        self.raw = None
        self.incarnation += 1
        self.waiters.clear()
        self.reads.clear()
        self.ready_reads.clear()

    def _tick(self, inc: int) -> None:
        if inc != self.incarnation or self.raw is None:
            return
        self.raw.tick()
        self.pump()
        self.sim.sched.after(self.tick_interval, lambda: self._tick(inc))

    # -- inputs -----------------------------------------------------------------

    def step(self, msg: Message) -> None:
        if self.raw is None:
            return
        try:
            self.raw.step(msg)
        except (StepPeerNotFoundError, ProposalDroppedError):
            return
        self.pump()

    def propose(self, client: int, req: int, cmd: Command) -> bool:
        """False when the proposal was dropped (the client retries elsewhere)."""
        assert self.raw is not None
        try:
            self.raw.propose(cmd.encode())
        except ProposalDroppedError:
            return False
        self.waiters.add((client, req))
        self.pump()
        return True

    def read(self, client: int, req: int, key: str) -> None:
        assert self.raw is not None
        self._read_seq += 1
        ctx = f"{client}:{req}:{self.incarnation}:{self._read_seq}".encode()
        self.reads[ctx] = PendingRead(client, req, key)
        self.raw.read_index(ctx)
        self.pump()

    # -- the Ready cycle ----------------------------------------------------------

    def pump(self) -> None:
        raw = self.raw
        if raw is None or self.busy or not raw.has_ready():
            return
        rd = raw.ready()
        sim = self.sim
        if rd.soft_state is not None:
            sim.on_role(self, rd.soft_state.raft_state, raw.term)
        later = rd.messages
        if sim.params.early_app and raw.state == StateType.LEADER:
            early = tuple(m for m in rd.messages if m.type == MessageType.MSG_APP)
            later = tuple(m for m in rd.messages if m.type != MessageType.MSG_APP)
            for m in early:
                sim.send(m)
        delay = sim.rng.randint(1, sim.params.fsync_max) if self.disk.write(rd) else 0
        self.busy = True
        inc = self.incarnation
        sim.sched.after(delay, lambda: self._finish(rd, later, inc))

    def _finish(self, rd: Ready, messages: tuple[Message, ...], inc: int) -> None:
        if inc != self.incarnation or self.raw is None:
            return
        raw = self.raw
        sim = self.sim
        mon = sim.monitor
        storage = self.disk.storage
        persisted = self.disk.sync()
        if persisted.snapshot is not None:
            mon.on_snapshot(self.id, persisted.snapshot)
        mon.on_durable_entries(self.id, persisted.entries, storage)
        if persisted.hard_state is not None:
            mon.on_durable_commit(self.id, persisted.hard_state.commit, storage)
        if raw.state == StateType.LEADER:
            mon.on_leader_persisted(self.id, raw.term, storage)
        for m in messages:
            sim.send(m)
        if not rd.snapshot.is_empty():
            meta = rd.snapshot.metadata
            if meta.index <= self.sm.applied:
                raise Violation(
                    f"node {self.id} was handed snapshot {meta.index} at applied {self.sm.applied}"
                )
            self.sm = KVStateMachine.decode(rd.snapshot.data, meta.index, meta.conf_state)
            self.durable_digests.clear()  # its past is not the sender's
            self.disk.local = rd.snapshot
            self.disk.candidates.clear()
            sim.guard.after_replace(self)
            sim.guard.on_installed(self, meta.index)
            sim.trace(f"snap {self.id} {meta.index}")
        mon.on_committed_entries(self.id, rd.committed_entries)
        removed_self = False
        for e in rd.committed_entries:
            removed_self |= self._apply(e)
        for rs in rd.read_states:
            if rs.request_ctx in self.reads:
                self.ready_reads.append(rs)
        self._serve_reads()
        raw.advance(rd)
        self.busy = False
        if removed_self:
            sim.decommission(self.id, "applied its own removal")
            return
        self._maybe_snapshot()
        self.pump()

    def _apply(self, e: Entry) -> bool:
        """Apply one committed entry; True when it removed this node."""
        sm = self.sm
        if e.index != sm.applied + 1:
            raise Violation(
                f"node {self.id} handed committed entry {e.index} but applied is {sm.applied}"
            )
        sim = self.sim
        sim.guard.reference_apply(e)
        out = sm.apply_entry(e, sim.guard.armed_fault(self))
        if out.hit:
            sim.guard.on_fault_hit(self, e.index)
        removed_self = False
        cc = out.conf_change
        if cc is not None:
            assert self.raw is not None
            sm.conf_state = self.raw.apply_conf_change(cc)
            sim.on_conf_applied(self, cc, e.index)
            removed_self = cc.type == ConfChangeType.REMOVE_NODE and cc.node_id == self.id
        applied = out.applied
        if applied is not None:
            cmd = applied.command
            if applied.fresh:
                sim.on_effect(cmd.client, cmd.req)
            if applied.answer and (cmd.client, cmd.req) in self.waiters:
                self.waiters.discard((cmd.client, cmd.req))
                sim.reply(self.id, cmd.client, cmd.req, applied.result)
        sim.guard.after_apply(self)
        return removed_self

    def _serve_reads(self) -> None:
        if not self.ready_reads:
            return
        keep: list[ReadState] = []
        for rs in self.ready_reads:
            if rs.index > self.sm.applied:
                keep.append(rs)
                continue
            pending = self.reads.pop(rs.request_ctx, None)
            if pending is not None:
                value = self.sm.get(pending.key)
                self.sim.reply(self.id, pending.client, pending.req, value)
        self.ready_reads = keep

    def _maybe_snapshot(self) -> None:
        """Take a local snapshot every ``snapshot_every`` entries; hand confirmed ones to Raft."""
        disk = self.disk
        sm = self.sm
        if sm.applied - disk.recovery_snapshot().metadata.index >= self.sim.params.snapshot_every:
            term = disk.storage.term(sm.applied)
            meta = SnapshotMetadata(index=sm.applied, term=term, conf_state=sm.conf_state)
            snap = Snapshot(metadata=meta, data=sm.encode())
            disk.local = snap
            disk.candidates.append(snap)
            self._persist_digests()
        self.promote_snapshot()

    def promote_snapshot(self) -> None:
        """Make the newest local snapshot at or below the guard's confirmed index for this node
        its Raft snapshot and compact the log behind it.

        What a node ships to its peers (and the log prefix it forgets) is therefore always state
        a majority of voters was seen to agree on: a diverged state is never copied, and while a
        mismatch is unresolved the log stays long enough for a lagging voter to apply the
        disputed entries itself rather than receive either side's state.
        """
        disk = self.disk
        confirmed = self.sim.guard.confirmed.get(self.id, 0)
        chosen = None
        for snap in disk.candidates:
            if snap.metadata.index <= confirmed:
                chosen = snap
        if chosen is None:
            return
        index = chosen.metadata.index
        disk.candidates = [c for c in disk.candidates if c.metadata.index > index]
        storage = disk.storage
        try:
            storage.create_snapshot(index, chosen.metadata.conf_state, chosen.data)
        except RaftError:
            return
        compact_to = index - self.sim.params.keep_entries
        if compact_to >= storage.first_index():
            storage.compact(compact_to)
        self.sim.trace(f"compact {self.id} {index} {compact_to}")

    # -- apply digests as the guard sees them --------------------------------------------

    def _persist_digests(self) -> None:
        chain = self.sm.chain
        durable = self.durable_digests
        start = max(max(durable, default=0) + 1, chain.oldest_index())
        for i in range(start, self.sm.applied + 1):
            digest = chain.digest_at(i)
            assert digest is not None
            durable[i] = digest
        while len(durable) > DURABLE_DIGESTS:
            del durable[next(iter(durable))]  # inserted in index order

    def digest_range(self) -> tuple[int, int]:
        """(oldest index whose apply digest this member can tell, latest applied index)."""
        chain = self.sm.chain
        oldest = min(self.durable_digests, default=chain.oldest_index())
        return min(oldest, chain.oldest_index()), chain.latest()[0]

    def digest_at(self, index: int) -> bytes | None:
        found = self.sm.chain.digest_at(index)
        return found if found is not None else self.durable_digests.get(index)
