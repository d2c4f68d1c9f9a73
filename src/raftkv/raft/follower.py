"""The follower and candidate roles: their step functions and the handlers
of the leader's MsgApp, MsgHeartbeat and MsgSnap.

Owns: ``step_follower``, ``step_candidate`` (installed by ``Raft.become_*``),
``handle_append_entries`` (with the rejection hint for fast back-tracking),
``handle_heartbeat``, ``handle_snapshot`` and ``restore``.

Contracts:
- a follower acknowledges entries only in messages of the Ready that also
  carries them for persistence, so acks are sent after the entries are durable;
- a committed entry is never truncated; a snapshot not newer than the commit
  index, or arriving while committed entries handed out in a Ready are still
  being applied, is ignored (answered with the commit index).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from raftkv.raft.election import CampaignType, campaign, hup, poll
from raftkv.raft.errors import ProposalDroppedError
from raftkv.raft.leader import bcast_append
from raftkv.raft.progress import VoteResult
from raftkv.raft.types import NONE, Message, MessageType, ReadState, Snapshot, StateType

if TYPE_CHECKING:
    from raftkv.raft.core import Raft

MT = MessageType


def step_candidate(r: Raft, m: Message) -> None:
    t = m.type
    my_resp = MT.MSG_PRE_VOTE_RESP if r.state == StateType.PRE_CANDIDATE else MT.MSG_VOTE_RESP
    if t == MT.MSG_PROP:
        r.logger.info("%x no leader at term %d; dropping proposal", r.id, r.term)
        raise ProposalDroppedError()
    if t == MT.MSG_APP:
        r.become_follower(m.term, m.frm)
        handle_append_entries(r, m)
    elif t == MT.MSG_HEARTBEAT:
        r.become_follower(m.term, m.frm)
        handle_heartbeat(r, m)
    elif t == MT.MSG_SNAP:
        r.become_follower(m.term, m.frm)
        handle_snapshot(r, m)
    elif t == my_resp:
        res = poll(r, m.frm, t, not m.reject)
        if res == VoteResult.WON:
            if r.state == StateType.PRE_CANDIDATE:
                campaign(r, CampaignType.ELECTION)
            else:
                r.become_leader()
                bcast_append(r)
        elif res == VoteResult.LOST:
            # A pre-candidate that lost stays at its term; either way we
            # become a follower without a known leader.
            r.become_follower(r.term, NONE)
    elif t == MT.MSG_TIMEOUT_NOW:
        r.logger.debug("%x ignored MsgTimeoutNow from %x as not follower", r.id, m.frm)


def step_follower(r: Raft, m: Message) -> None:
    t = m.type
    if t == MT.MSG_PROP:
        if r.lead == NONE:
            r.logger.info("%x no leader at term %d; dropping proposal", r.id, r.term)
            raise ProposalDroppedError()
        if r.disable_proposal_forwarding:
            r.logger.info(
                "%x not forwarding to leader %x at term %d; dropping proposal", r.id, r.lead, r.term
            )
            raise ProposalDroppedError()
        r.send(Message(type=MT.MSG_PROP, to=r.lead, frm=m.frm or r.id, entries=m.entries))
    elif t == MT.MSG_APP:
        r.election_elapsed = 0
        r.lead = m.frm
        handle_append_entries(r, m)
    elif t == MT.MSG_HEARTBEAT:
        r.election_elapsed = 0
        r.lead = m.frm
        handle_heartbeat(r, m)
    elif t == MT.MSG_SNAP:
        r.election_elapsed = 0
        r.lead = m.frm
        handle_snapshot(r, m)
    elif t == MT.MSG_TRANSFER_LEADER:
        if r.lead == NONE:
            r.logger.info("%x no leader at term %d; dropping leader transfer", r.id, r.term)
            return
        r.send(Message(type=t, to=r.lead, frm=m.frm))
    elif t == MT.MSG_TIMEOUT_NOW:
        r.logger.info(
            "%x [term %d] received MsgTimeoutNow from %x and starts an election to get leadership",
            r.id,
            r.term,
            m.frm,
        )
        # Leadership transfer never uses pre-vote: we know we are wanted.
        hup(r, CampaignType.TRANSFER)
    elif t == MT.MSG_READ_INDEX:
        if r.lead == NONE:
            r.logger.info("%x no leader at term %d; dropping index reading", r.id, r.term)
            return
        r.send(Message(type=t, to=r.lead, frm=m.frm or r.id, context=m.context))
    elif t == MT.MSG_READ_INDEX_RESP:
        r.read_states.append(ReadState(index=m.index, request_ctx=m.context))


# -- follower-side handlers -------------------------------------------------------


def handle_append_entries(r: Raft, m: Message) -> None:
    log = r.log
    if m.index < log.committed:
        r.send(Message(type=MT.MSG_APP_RESP, to=m.frm, frm=r.id, term=r.term, index=log.committed))
        return
    last_new = log.maybe_append(m.index, m.log_term, m.commit, m.entries)
    if last_new >= 0:
        r.send(Message(type=MT.MSG_APP_RESP, to=m.frm, frm=r.id, term=r.term, index=last_new))
        return
    # Reject, with a hint that lets the leader skip a whole divergent term
    # per round trip: the largest index <= m.index whose term is <= m.log_term.
    hint_index = min(m.index, log.last_index())
    hint_index, hint_term = log.find_conflict_by_term(hint_index, m.log_term)
    r.logger.debug(
        "%x [logterm: %d, index: %d] rejected MsgApp [logterm: %d, index: %d] from %x",
        r.id,
        log.zero_term_on_compacted(m.index),
        m.index,
        m.log_term,
        m.index,
        m.frm,
    )
    r.send(
        Message(
            type=MT.MSG_APP_RESP,
            to=m.frm,
            frm=r.id,
            term=r.term,
            index=m.index,
            reject=True,
            reject_hint=hint_index,
            log_term=hint_term,
        )
    )


def handle_heartbeat(r: Raft, m: Message) -> None:
    r.log.commit_to(m.commit)
    r.send(Message(type=MT.MSG_HEARTBEAT_RESP, to=m.frm, frm=r.id, term=r.term, context=m.context))


def handle_snapshot(r: Raft, m: Message) -> None:
    snap = m.snapshot
    if snap is None:
        raise AssertionError("MsgSnap without snapshot")
    sindex, sterm = snap.metadata.index, snap.metadata.term
    if restore(r, snap):
        r.logger.info(
            "%x [commit: %d] restored snapshot [index: %d, term: %d]",
            r.id,
            r.log.committed,
            sindex,
            sterm,
        )
        index = r.log.last_index()
    else:
        r.logger.info(
            "%x [commit: %d] ignored snapshot [index: %d, term: %d]",
            r.id,
            r.log.committed,
            sindex,
            sterm,
        )
        index = r.log.committed
    r.send(Message(type=MT.MSG_APP_RESP, to=m.frm, frm=r.id, term=r.term, index=index))


def restore(r: Raft, snap: Snapshot) -> bool:
    """Replace the log by ``snap`` unless it is not newer than the commit index."""
    meta = snap.metadata
    if meta.index <= r.log.committed:
        return False
    if r.state != StateType.FOLLOWER:
        # Defence in depth: only a follower may install a snapshot.
        r.logger.warning("%x attempted to restore snapshot as leader; should never happen", r.id)
        r.become_follower(r.term + 1, NONE)
        return False
    if r.log.match_term(meta.index, meta.term):
        # We already have the snapshot's entries: just fast-forward the commit.
        r.logger.info(
            "%x [commit: %d] fast-forwarded commit to snapshot [index: %d, term: %d]",
            r.id,
            r.log.committed,
            meta.index,
            meta.term,
        )
        r.log.commit_to(meta.index)
        return False
    if r.log.is_applying():
        # Entries handed out in an earlier Ready are still being applied, and
        # their conf changes must run against the configuration they were
        # committed in, not the snapshot's newer one: refuse the snapshot (the
        # leader sends it again after its next probe).
        r.logger.info(
            "%x [applied: %d, applying: %d] cannot restore snapshot [index: %d, term: %d] "
            "while entries are being applied",
            r.id,
            r.log.applied,
            r.log.applying,
            meta.index,
            meta.term,
        )
        return False
    # A joining node may not be in the snapshot's configuration yet: the
    # conf change adding it follows in the log, so the snapshot is accepted.
    r.log.restore(snap)
    r.load_conf_state(meta.conf_state)
    return True
