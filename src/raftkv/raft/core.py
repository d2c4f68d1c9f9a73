"""The Raft state machine of one node (sans-I/O).

Owns: ``Raft`` — term, vote, role, the log, the progress tracker; role
transitions (``become_*``) that swap the ``_step`` and ``_tick`` functions;
the step entry point (term checks, leader lease); ticking; proposals'
bookkeeping, the leader's self-acknowledgement on persistence and membership
changes.  Role-specific logic lives in ``election``, ``follower`` and
``leader``.

Contracts:
- input is ``step(message)`` and ``tick()``; output is appended to ``msgs``
  and ``read_states`` and is drained by the RawNode;
- the leader counts its own log only up to what is persisted
  (``on_persisted``), so a commit never relies on an unsynced local write;
- conditions the caller must handle raise the errors of ``raftkv.raft.errors``;
  broken invariants raise ``AssertionError``.
"""

from __future__ import annotations

import functools
import random
from collections.abc import Callable, Iterable

from raftkv.raft.codec import decode_conf_change
from raftkv.raft.config import Config, LazyLogger, StdLogger
from raftkv.raft.election import (
    CAMPAIGN_TRANSFER,
    MSG_NAMES,
    CampaignType,
    handle_vote_request,
    hup,
)
from raftkv.raft.follower import step_candidate, step_follower
from raftkv.raft.leader import (
    after_conf_change,
    bcast_append,
    release_pending_read_index,
    request_bcast,
    step_leader,
    tick_heartbeat,
)
from raftkv.raft.log import RaftLog
from raftkv.raft.progress import ProgressState, ProgressTracker
from raftkv.raft.read_only import ReadOnly
from raftkv.raft.types import (
    NONE,
    ConfChange,
    ConfChangeType,
    ConfState,
    Entry,
    EntryType,
    HardState,
    Message,
    MessageType,
    ReadState,
    SoftState,
    StateType,
)

MT = MessageType


class _PeerList:
    """Node ids in hex, ascending, joined by ``sep``; formatted only when logged."""

    __slots__ = ("ids", "sep")

    def __init__(self, ids: Iterable[int], sep: str = ",") -> None:
        self.ids = ids
        self.sep = sep

    def __str__(self) -> str:
        return self.sep.join(f"{i:x}" for i in sorted(self.ids))


class Raft:
    """One node's consensus state; driven by ``step`` and ``tick``."""

    def __init__(self, c: Config) -> None:
        c.validate()
        self.id = c.id
        self.logger = LazyLogger(c.logger if c.logger is not None else StdLogger())
        self.log = RaftLog(c.storage, c.max_committed_size_per_ready)
        self.max_msg_size = c.max_size_per_msg
        self.max_uncommitted_size = c.max_uncommitted_entries_size
        self.uncommitted_size = 0
        self.trk = ProgressTracker(c.max_inflight_msgs)
        self.term = 0
        self.vote = NONE
        self.lead = NONE
        self.state = StateType.FOLLOWER
        self.is_learner = False
        self.msgs: list[Message] = []
        self.read_states: list[ReadState] = []
        self.election_timeout = c.election_tick
        self.heartbeat_timeout = c.heartbeat_tick
        self.check_quorum = c.check_quorum
        self.pre_vote = c.pre_vote
        self.read_only_option = c.read_only_option
        self.disable_proposal_forwarding = c.disable_proposal_forwarding
        self.rng = random.Random(c.seed * 0x9E3779B1 + c.id)
        self.randomized_election_timeout = c.election_tick
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self.lead_transferee = NONE
        self.pending_conf_index = 0
        self.read_only = ReadOnly()
        self.pending_read_index_messages: list[Message] = []
        self.bcast_pending = False
        self._step: Callable[[Message], None] = functools.partial(step_follower, self)
        self._tick: Callable[[], None] = self.tick_election

        hs, cs = c.storage.initial_state()
        self.load_conf_state(cs)
        if not hs.is_empty():
            self.load_state(hs)
        # A node's term is never below the term of its last entry; a node
        # bootstrapped from a snapshot starts at the snapshot's term.
        if self.log.last_term() > self.term:
            self.term = self.log.last_term()
            self.vote = NONE
        if c.applied > 0:
            self.log.applied_to(c.applied)
            self._reapply_conf_changes(c.applied)
        self.become_follower(self.term, NONE)
        self.logger.info(
            "newRaft %x [peers: [%s], term: %d, commit: %d, applied: %d, lastindex: %d, "
            "lastterm: %d]",
            self.id,
            _PeerList(self.trk.voters),
            self.term,
            self.log.committed,
            self.log.applied,
            self.log.last_index(),
            self.log.last_term(),
        )

    # -- state accessors ------------------------------------------------------

    def hard_state(self) -> HardState:
        return HardState(term=self.term, vote=self.vote, commit=self.log.committed)

    def soft_state(self) -> SoftState:
        return SoftState(lead=self.lead, raft_state=self.state)

    def load_state(self, hs: HardState) -> None:
        if not (self.log.committed <= hs.commit <= self.log.last_index()):
            raise AssertionError(
                f"{self.id:x} state.commit {hs.commit} is out of range "
                f"[{self.log.committed}, {self.log.last_index()}]"
            )
        self.log.committed = hs.commit
        self.term = hs.term
        self.vote = hs.vote

    def load_conf_state(self, cs: ConfState) -> None:
        self.trk = ProgressTracker(self.trk.max_inflight)
        nxt = self.log.last_index() + 1
        for v in cs.voters:
            self.trk.add_voter(v, nxt)
        for v in cs.learners:
            self.trk.add_learner(v, nxt)
        self.is_learner = self.id in self.trk.learners

    def _reapply_conf_changes(self, applied: int) -> None:
        """Re-apply the conf changes between the snapshot and ``applied``.

        Storage restores the configuration as of its snapshot; entries the
        application already applied (``Config.applied``) are not handed out
        again, so the membership changes among them are replayed here.
        """
        lo = self.log.first_index()
        if applied < lo:
            return
        for e in self.log.slice(lo, applied + 1, None):
            if e.type == EntryType.CONF_CHANGE:
                self.apply_conf_change(decode_conf_change(e.data))

    def promotable(self) -> bool:
        """Whether this node may campaign: a voter with no snapshot pending."""
        return self.id in self.trk.voters and self.log.unstable.snapshot is None

    # -- role transitions -----------------------------------------------------

    def reset(self, term: int) -> None:
        if self.term != term:
            self.term = term
            self.vote = NONE
        self.lead = NONE
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self.reset_randomized_election_timeout()
        self.lead_transferee = NONE
        self.trk.reset_votes()
        last = self.log.last_index()
        for pid, pr in self.trk.progress.items():
            pr.match = 0
            pr.next = last + 1
            pr.state = ProgressState.PROBE
            pr.probe_sent = False
            pr.pending_snapshot = 0
            pr.recent_active = False
            pr.sent_commit = 0
            pr.inflights.reset()
            if pid == self.id:
                pr.match = self.log.persisted_index()
        self.pending_conf_index = 0
        self.uncommitted_size = 0
        self.read_only = ReadOnly()
        self.pending_read_index_messages = []
        self.bcast_pending = False

    def reset_randomized_election_timeout(self) -> None:
        self.randomized_election_timeout = self.election_timeout + self.rng.randrange(
            self.election_timeout
        )

    def become_follower(self, term: int, lead: int) -> None:
        self._step = functools.partial(step_follower, self)
        self.reset(term)
        self._tick = self.tick_election
        self.lead = lead
        self.state = StateType.FOLLOWER
        self.logger.info("%x became follower at term %d", self.id, self.term)

    def become_candidate(self) -> None:
        if self.state == StateType.LEADER:
            raise AssertionError("invalid transition [leader -> candidate]")
        self._step = functools.partial(step_candidate, self)
        self.reset(self.term + 1)
        self._tick = self.tick_election
        self.vote = self.id
        self.state = StateType.CANDIDATE
        self.logger.info("%x became candidate at term %d", self.id, self.term)

    def become_pre_candidate(self) -> None:
        if self.state == StateType.LEADER:
            raise AssertionError("invalid transition [leader -> pre-candidate]")
        # A pre-candidate changes neither term nor vote.
        self._step = functools.partial(step_candidate, self)
        self.trk.reset_votes()
        self._tick = self.tick_election
        self.lead = NONE
        self.state = StateType.PRE_CANDIDATE
        self.logger.info("%x became pre-candidate at term %d", self.id, self.term)

    def become_leader(self) -> None:
        if self.state == StateType.FOLLOWER:
            raise AssertionError("invalid transition [follower -> leader]")
        self._step = functools.partial(step_leader, self)
        self.reset(self.term)
        self._tick = functools.partial(tick_heartbeat, self)
        self.lead = self.id
        self.state = StateType.LEADER
        pr = self.trk.progress.get(self.id)
        if pr is not None:
            pr.become_replicate()
            pr.recent_active = True
        ok = self.append_entry([Entry(term=0, index=0)])
        if not ok:
            raise AssertionError("empty entry was dropped")
        # No conf change until this term's empty entry is applied: every
        # earlier entry may hide a conf change, and a leader must commit an
        # entry of its own term before changing membership (the fix to the
        # single-server membership change bug).
        self.pending_conf_index = self.log.last_index()
        self.logger.info("%x became leader at term %d", self.id, self.term)

    # -- ticking ----------------------------------------------------------------

    def flush(self) -> None:
        """Emit deferred broadcasts; called before output is handed out."""
        if self.bcast_pending:
            self.bcast_pending = False
            if self.state == StateType.LEADER:
                bcast_append(self)

    def tick(self) -> None:
        self._tick()

    def tick_election(self) -> None:
        self.election_elapsed += 1
        if self.promotable() and self.election_elapsed >= self.randomized_election_timeout:
            self.election_elapsed = 0
            self.step(Message(type=MT.MSG_HUP, frm=self.id))

    # -- the step function ------------------------------------------------------

    def step(self, m: Message) -> None:
        """Process one message; raises ProposalDroppedError for refused proposals."""
        t = m.type
        if m.term == 0:
            pass  # local message
        elif m.term > self.term:
            if t == MT.MSG_VOTE or t == MT.MSG_PRE_VOTE:
                force = m.context == CAMPAIGN_TRANSFER
                in_lease = (
                    self.check_quorum
                    and self.lead != NONE
                    and self.election_elapsed < self.election_timeout
                )
                if not force and in_lease:
                    # Leader lease: we heard from a leader recently, so a
                    # disruptive candidate is ignored without bumping our term.
                    self.logger.info(
                        "%x [logterm: %d, index: %d, vote: %x] ignored %s from %x [logterm: %d, "
                        "index: %d] at term %d: lease is not expired (remaining ticks: %d)",
                        self.id,
                        self.log.last_term(),
                        self.log.last_index(),
                        self.vote,
                        MSG_NAMES[t],
                        m.frm,
                        m.log_term,
                        m.index,
                        self.term,
                        self.election_timeout - self.election_elapsed,
                    )
                    return
            if t == MT.MSG_PRE_VOTE:
                pass  # never change our term in response to a pre-vote
            elif t == MT.MSG_PRE_VOTE_RESP and not m.reject:
                pass  # the term is bumped when the pre-vote wins
            else:
                self.logger.info(
                    "%x [term: %d] received a %s message with higher term from %x [term: %d]",
                    self.id,
                    self.term,
                    MSG_NAMES[t],
                    m.frm,
                    m.term,
                )
                if t in (MT.MSG_APP, MT.MSG_HEARTBEAT, MT.MSG_SNAP):
                    self.become_follower(m.term, m.frm)
                else:
                    self.become_follower(m.term, NONE)
        elif m.term < self.term:
            if (self.check_quorum or self.pre_vote) and t in (MT.MSG_HEARTBEAT, MT.MSG_APP):
                # Tell a stale leader about the newer term so it steps down; this
                # also frees a node stuck at a higher term behind a lease.
                self.send(Message(type=MT.MSG_APP_RESP, to=m.frm, frm=self.id, term=self.term))
            elif t == MT.MSG_PRE_VOTE:
                self.logger.info(
                    "%x [logterm: %d, index: %d, vote: %x] rejected %s from %x [logterm: %d, "
                    "index: %d] at term %d",
                    self.id,
                    self.log.last_term(),
                    self.log.last_index(),
                    self.vote,
                    MSG_NAMES[t],
                    m.frm,
                    m.log_term,
                    m.index,
                    self.term,
                )
                self.send(
                    Message(
                        type=MT.MSG_PRE_VOTE_RESP,
                        to=m.frm,
                        frm=self.id,
                        term=self.term,
                        reject=True,
                    )
                )
            else:
                self.logger.debug(
                    "%x [term: %d] ignored a %s message with lower term from %x [term: %d]",
                    self.id,
                    self.term,
                    MSG_NAMES[t],
                    m.frm,
                    m.term,
                )
            return

        if t == MT.MSG_HUP:
            hup(self, CampaignType.PRE_ELECTION if self.pre_vote else CampaignType.ELECTION)
        elif t == MT.MSG_VOTE or t == MT.MSG_PRE_VOTE:
            handle_vote_request(self, m)
        else:
            self._step(m)

    def send(self, m: Message) -> None:
        if m.to == self.id:
            raise AssertionError(f"{self.id:x} sending {MSG_NAMES[m.type]} to itself")
        self.msgs.append(m)

    # -- proposals, membership ------------------------------------------------------

    def append_entry(self, ents: list[Entry]) -> bool:
        """Assign term and index to ``ents`` and append them; False if over the size limit."""
        li = self.log.last_index()
        term = self.term
        stamped = [Entry(term, li + 1 + i, e.type, e.data) for i, e in enumerate(ents)]
        if not self.increase_uncommitted_size(stamped):
            self.logger.warning(
                "%x appending new entries to log would exceed uncommitted entry size limit; "
                "dropping proposal",
                self.id,
            )
            return False
        self.log.append(stamped)
        return True

    def increase_uncommitted_size(self, ents: list[Entry]) -> bool:
        s = 0
        for e in ents:
            s += len(e.data)
        if (
            self.max_uncommitted_size > 0
            and self.uncommitted_size > 0
            and s > 0
            and self.uncommitted_size + s > self.max_uncommitted_size
        ):
            return False
        self.uncommitted_size += s
        return True

    def reduce_uncommitted_size(self, ents: tuple[Entry, ...]) -> None:
        if self.uncommitted_size == 0:
            return
        s = 0
        for e in ents:
            s += len(e.data)
        self.uncommitted_size = max(0, self.uncommitted_size - s)

    def on_persisted(self) -> None:
        """The application persisted the log up to ``log.persisted_index()``."""
        if self.state != StateType.LEADER:
            return
        pr = self.trk.progress.get(self.id)
        if pr is not None and pr.maybe_update(self.log.persisted_index()) and self.maybe_commit():
            release_pending_read_index(self)
            request_bcast(self)

    def maybe_commit(self) -> bool:
        return self.log.maybe_commit(self.trk.committed(), self.term)

    def apply_conf_change(self, cc: ConfChange) -> ConfState:
        """Apply a committed conf change to the tracker; returns the new ConfState."""
        nid = cc.node_id
        if nid == NONE:
            return self.trk.conf_state()
        nxt = self.log.last_index() + 1
        if cc.type == ConfChangeType.ADD_NODE:
            self.trk.add_voter(nid, nxt)
        elif cc.type == ConfChangeType.ADD_LEARNER_NODE:
            if nid in self.trk.voters:
                self.logger.info("%x ignored ADD_LEARNER_NODE: %x is a voter", self.id, nid)
            else:
                self.trk.add_learner(nid, nxt)
        elif cc.type == ConfChangeType.REMOVE_NODE:
            self.trk.remove(nid)
        self.is_learner = self.id in self.trk.learners
        cs = self.trk.conf_state()
        if cs.learners:
            self.logger.info(
                "%x switched to configuration voters=(%s) learners=(%s)",
                self.id,
                _PeerList(cs.voters, " "),
                _PeerList(cs.learners, " "),
            )
        else:
            self.logger.info(
                "%x switched to configuration voters=(%s)", self.id, _PeerList(cs.voters, " ")
            )
        if self.state == StateType.LEADER:
            after_conf_change(self)
        return cs
