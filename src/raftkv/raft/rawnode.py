"""The application-facing handle on one Raft node.

Owns: ``RawNode`` (the public API: tick/campaign/propose/step, the
Ready/advance cycle, reads, transfers, status) and ``Status``.

Contracts (see ``Ready``'s docstring for the caller's duties):
- ``ready()`` hands out everything accumulated since the previous ``ready()``;
  the caller must call ``advance(rd)`` with that Ready before the next
  ``ready()``;
- ``advance`` tells the core that ``rd.entries``/``rd.snapshot`` are durable
  and that ``rd.committed_entries`` were applied; until then those entries are
  "being applied" and the node refuses a leader's snapshot (its conf changes
  must be applied against the configuration they were committed in);
- messages to the node itself never appear in ``Ready.messages``;
- appends are broadcast when the Ready is assembled, so proposals made
  between two Readys share one MsgApp per follower;
- the transport must call ``report_snapshot`` for every MsgSnap it sent
  (delivered or failed); a follower waiting for a snapshot is paused until then
  or until it acknowledges the snapshot.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from raftkv.raft.codec import encode_conf_change
from raftkv.raft.config import Config
from raftkv.raft.core import Raft
from raftkv.raft.errors import ProposalDroppedError, StepLocalMsgError, StepPeerNotFoundError
from raftkv.raft.progress import ProgressStatus
from raftkv.raft.types import (
    EMPTY_SNAPSHOT,
    LOCAL_MESSAGES,
    NONE,
    RESPONSE_MESSAGES,
    ConfChange,
    ConfState,
    Entry,
    EntryType,
    HardState,
    Message,
    MessageType,
    Ready,
    SoftState,
    StateType,
)

MT = MessageType


@dataclass(frozen=True, slots=True)
class Status:
    """A consistent view of one node; ``progress`` is filled on the leader only."""

    id: int
    hard_state: HardState
    soft_state: SoftState
    applied: int
    lead_transferee: int = NONE
    progress: dict[int, ProgressStatus] = field(default_factory=dict)
    conf_state: ConfState = field(default_factory=ConfState)


class RawNode:
    """Thread-unsafe, I/O-free driver of one ``Raft``; see the module docstring."""

    def __init__(self, config: Config) -> None:
        self.raft = Raft(config)
        self._prev_soft = self.raft.soft_state()
        self._prev_hard = self.raft.hard_state()

    # -- properties -------------------------------------------------------------

    @property
    def id(self) -> int:
        return self.raft.id

    @property
    def lead(self) -> int:
        return self.raft.lead

    @property
    def term(self) -> int:
        return self.raft.term

    @property
    def state(self) -> StateType:
        return self.raft.state

    # -- input ----------------------------------------------------------------------

    def tick(self) -> None:
        self.raft.tick()

    def campaign(self) -> None:
        """Start an election now (a pre-election first when pre-vote is enabled)."""
        self.raft.step(Message(type=MT.MSG_HUP, frm=self.raft.id))

    def propose(self, data: bytes) -> None:
        """Propose ``data``; raises ProposalDroppedError when it cannot be accepted."""
        self.raft.step(
            Message(
                type=MT.MSG_PROP, frm=self.raft.id, entries=(Entry(0, 0, EntryType.NORMAL, data),)
            )
        )

    def propose_many(self, datas: Sequence[bytes]) -> None:
        """Propose several entries at once (one step, one broadcast); all or none."""
        if not datas:
            return
        ents = tuple(Entry(0, 0, EntryType.NORMAL, d) for d in datas)
        self.raft.step(Message(type=MT.MSG_PROP, frm=self.raft.id, entries=ents))

    def propose_conf_change(self, cc: ConfChange) -> None:
        """Propose a membership change; at most one may be pending (uncommitted/unapplied)."""
        data = encode_conf_change(cc)
        self.raft.step(
            Message(
                type=MT.MSG_PROP,
                frm=self.raft.id,
                entries=(Entry(0, 0, EntryType.CONF_CHANGE, data),),
            )
        )

    def apply_conf_change(self, cc: ConfChange) -> ConfState:
        """Apply a committed conf change (when its entry is applied); returns the new ConfState."""
        return self.raft.apply_conf_change(cc)

    def step(self, m: Message) -> None:
        """Feed a message received from a peer.

        Raises StepLocalMsgError for local-only kinds and StepPeerNotFoundError
        for a response from a node outside the configuration.  A forwarded
        proposal that the leader refuses is dropped silently.
        """
        if m.type in LOCAL_MESSAGES:
            raise StepLocalMsgError()
        if m.type in RESPONSE_MESSAGES and m.frm not in self.raft.trk.progress:
            raise StepPeerNotFoundError()
        try:
            self.raft.step(m)
        except ProposalDroppedError:
            if m.type != MT.MSG_PROP:
                raise

    def read_index(self, request_ctx: bytes) -> None:
        """Request a read index; the ReadState with ``request_ctx`` arrives in a later Ready.

        ``request_ctx`` must be non-empty and unique among pending reads.
        """
        if not request_ctx:
            raise ValueError("read_index needs a non-empty request context")
        self.raft.step(Message(type=MT.MSG_READ_INDEX, context=request_ctx))

    def transfer_leader(self, transferee: int) -> None:
        """Ask the leader (directly or via this follower) to hand leadership to ``transferee``."""
        self.raft.step(Message(type=MT.MSG_TRANSFER_LEADER, frm=transferee))

    def report_unreachable(self, node_id: int) -> None:
        """A message to ``node_id`` could not be sent: stop optimistic replication to it."""
        self.raft.step(Message(type=MT.MSG_UNREACHABLE, frm=node_id))

    def report_snapshot(self, node_id: int, ok: bool) -> None:
        """The transport finished sending a MsgSnap to ``node_id`` (``ok``) or gave up."""
        self.raft.step(Message(type=MT.MSG_SNAP_STATUS, frm=node_id, reject=not ok))

    # -- output ---------------------------------------------------------------------

    def has_ready(self) -> bool:
        r = self.raft
        r.flush()
        log = r.log
        if r.msgs or log.unstable.entries or log.unstable.snapshot is not None or r.read_states:
            return True
        if r.lead != self._prev_soft.lead or r.state != self._prev_soft.raft_state:
            return True
        ph = self._prev_hard
        if r.term != ph.term or r.vote != ph.vote or log.committed != ph.commit:
            return True
        return log.has_next_ents()

    def ready(self) -> Ready:
        r = self.raft
        r.flush()
        log = r.log
        ss = r.soft_state()
        hs = r.hard_state()
        soft = None if ss == self._prev_soft else ss
        hard = None if hs == self._prev_hard else hs
        entries = tuple(log.unstable.entries)
        snap = log.unstable.snapshot
        ph = self._prev_hard
        committed = tuple(log.next_ents())
        if committed:
            log.accept_applying(committed[-1].index)
        rd = Ready(
            soft_state=soft,
            hard_state=hard,
            read_states=tuple(r.read_states),
            entries=entries,
            snapshot=snap if snap is not None else EMPTY_SNAPSHOT,
            committed_entries=committed,
            messages=tuple(r.msgs),
            must_sync=bool(entries) or snap is not None or hs.term != ph.term or hs.vote != ph.vote,
        )
        r.msgs = []
        r.read_states = []
        if soft is not None:
            self._prev_soft = ss
        if hard is not None:
            self._prev_hard = hs
        return rd

    def advance(self, rd: Ready) -> None:
        r = self.raft
        log = r.log
        persisted = False
        if not rd.snapshot.is_empty():
            idx = rd.snapshot.metadata.index
            log.stable_snap_to(idx)
            if idx > log.applied:
                log.applied_to(idx)
            persisted = True
        if rd.entries:
            last = rd.entries[-1]
            log.stable_to(last.index, last.term)
            persisted = True
        if rd.committed_entries:
            log.applied_to(rd.committed_entries[-1].index)
            r.reduce_uncommitted_size(rd.committed_entries)
        if persisted:
            r.on_persisted()

    def status(self) -> Status:
        r = self.raft
        progress: dict[int, ProgressStatus] = {}
        if r.state == StateType.LEADER:
            for pid, pr in r.trk.progress.items():
                progress[pid] = ProgressStatus(
                    match=pr.match,
                    next=pr.next,
                    state=pr.state,
                    is_learner=pr.is_learner,
                    recent_active=pr.recent_active,
                    paused=pr.is_paused(),
                    pending_snapshot=pr.pending_snapshot,
                    inflight=pr.inflights.count(),
                )
        return Status(
            id=r.id,
            hard_state=r.hard_state(),
            soft_state=r.soft_state(),
            applied=r.log.applied,
            lead_transferee=r.lead_transferee,
            progress=progress,
            conf_state=r.trk.conf_state(),
        )
