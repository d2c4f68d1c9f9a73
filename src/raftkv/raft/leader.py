"""The leader role: replication with flow control, heartbeats, reads, transfers.

Owns: ``step_leader`` and ``tick_heartbeat`` (installed by
``Raft.become_leader``), sending MsgApp/MsgSnap/MsgHeartbeat/MsgTimeoutNow,
handling their responses, commit advancement, ReadIndex and leadership
transfer.

Contracts:
- MsgApp carry at most ``max_size_per_msg`` data bytes (at least one entry)
  and at most ``max_inflight_msgs`` are unacknowledged per follower in
  replicate state; a probing follower gets one MsgApp per acknowledgement;
- an entry is committed by counting only if it is of the current term (§5.4.2);
- a read index is released only once the leader has committed an entry of its
  term and (SAFE) a quorum acknowledged a heartbeat carrying the read's context.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from raftkv.raft.config import ReadOnlyOption
from raftkv.raft.errors import (
    CompactedError,
    ProposalDroppedError,
    SnapshotTemporarilyUnavailableError,
)
from raftkv.raft.progress import Progress, ProgressState
from raftkv.raft.types import NONE, Entry, EntryType, Message, MessageType, ReadState, StateType

if TYPE_CHECKING:
    from raftkv.raft.core import Raft

MT = MessageType


# -- sending ----------------------------------------------------------------------


def send_append(r: Raft, to: int) -> None:
    maybe_send_append(r, to, True)


def maybe_send_append(r: Raft, to: int, send_if_empty: bool) -> bool:
    """Send the entries ``to`` lacks (or a snapshot); False if nothing was sent."""
    pr = r.trk.progress[to]
    if pr.is_paused():
        return False
    log = r.log
    prev = pr.next - 1
    try:
        log_term = log.term(prev)
        ents = log.entries(pr.next, r.max_msg_size)
    except CompactedError:
        return _send_snapshot(r, to, pr)
    commit = log.committed
    if not ents and (
        not send_if_empty
        # A replicating follower that acknowledged everything sent needs an
        # empty MsgApp only to learn a newer commit index.  (With entries
        # unacknowledged, the empty MsgApp also probes for lost ones.)
        or (
            pr.state == ProgressState.REPLICATE
            and pr.sent_commit >= commit
            and pr.match + 1 >= pr.next
        )
    ):
        return False
    pr.sent_commit = commit
    if ents:
        if pr.state == ProgressState.REPLICATE:
            last = ents[-1].index
            pr.next = last + 1
            pr.inflights.add(last)
        elif pr.state == ProgressState.PROBE:
            pr.probe_sent = True
        else:
            raise AssertionError(f"{r.id} is sending append in unhandled state {pr.state.name}")
    r.msgs.append(
        Message(
            type=MT.MSG_APP,
            to=to,
            frm=r.id,
            term=r.term,
            log_term=log_term,
            index=prev,
            entries=tuple(ents),
            commit=commit,
        )
    )
    return True


def _send_snapshot(r: Raft, to: int, pr: Progress) -> bool:
    if not pr.recent_active:
        r.logger.debug("ignore sending snapshot to %x since it is not recently active", to)
        return False
    try:
        snap = r.log.snapshot()
    except SnapshotTemporarilyUnavailableError:
        r.logger.debug("%x failed to send snapshot to %x: temporarily unavailable", r.id, to)
        return False
    if snap.is_empty():
        raise AssertionError("need non-empty snapshot")
    meta = snap.metadata
    r.logger.info(
        "%x [firstindex: %d, commit: %d] sent snapshot[index: %d, term: %d] to %x [%r]",
        r.id,
        r.log.first_index(),
        r.log.committed,
        meta.index,
        meta.term,
        to,
        pr,
    )
    pr.become_snapshot(meta.index)
    r.msgs.append(Message(type=MT.MSG_SNAP, to=to, frm=r.id, term=r.term, snapshot=snap))
    return True


def request_bcast(r: Raft) -> None:
    """Broadcast appends when the Ready is assembled (``Raft.flush``).

    Proposals and commit advances within one Ready then share one MsgApp per
    follower instead of one each.
    """
    r.bcast_pending = True


def bcast_append(r: Raft) -> None:
    """Send every follower what it lacks, filling its in-flight window."""
    me = r.id
    for pid in r.trk.progress:
        if pid != me and maybe_send_append(r, pid, True):
            while maybe_send_append(r, pid, False):
                pass


def send_heartbeat(r: Raft, to: int, ctx: bytes) -> None:
    # Never tell a follower to commit beyond what it is known to have: it may
    # not have those entries (or have conflicting ones).
    commit = min(r.trk.progress[to].match, r.log.committed)
    r.msgs.append(
        Message(type=MT.MSG_HEARTBEAT, to=to, frm=r.id, term=r.term, commit=commit, context=ctx)
    )


def bcast_heartbeat(r: Raft, ctx: bytes | None = None) -> None:
    if ctx is None:
        ctx = r.read_only.last_pending_request_ctx()
    me = r.id
    for pid in r.trk.progress:
        if pid != me:
            send_heartbeat(r, pid, ctx)


def send_timeout_now(r: Raft, to: int) -> None:
    r.msgs.append(Message(type=MT.MSG_TIMEOUT_NOW, to=to, frm=r.id, term=r.term))


def abort_leader_transfer(r: Raft) -> None:
    r.lead_transferee = NONE


# -- ticking ------------------------------------------------------------------------


def tick_heartbeat(r: Raft) -> None:
    r.heartbeat_elapsed += 1
    r.election_elapsed += 1
    if r.election_elapsed >= r.election_timeout:
        r.election_elapsed = 0
        if r.check_quorum:
            r.step(Message(type=MT.MSG_CHECK_QUORUM, frm=r.id))
        # A transfer that did not finish within an election timeout is abandoned.
        if r.state == StateType.LEADER and r.lead_transferee != NONE:
            r.logger.info("%x aborted leadership transfer to %x", r.id, r.lead_transferee)
            abort_leader_transfer(r)
    if r.state != StateType.LEADER:
        return
    if r.heartbeat_elapsed >= r.heartbeat_timeout:
        r.heartbeat_elapsed = 0
        r.step(Message(type=MT.MSG_BEAT, frm=r.id))


# -- reads --------------------------------------------------------------------------


def committed_entry_in_current_term(r: Raft) -> bool:
    return r.log.zero_term_on_compacted(r.log.committed) == r.term


def _respond_read_index(r: Raft, req: Message, index: int) -> None:
    if req.frm == NONE or req.frm == r.id:
        r.read_states.append(ReadState(index=index, request_ctx=req.context))
    else:
        r.msgs.append(
            Message(
                type=MT.MSG_READ_INDEX_RESP,
                to=req.frm,
                frm=r.id,
                term=r.term,
                index=index,
                context=req.context,
            )
        )


def _send_read_index_response(r: Raft, m: Message) -> None:
    if r.read_only_option == ReadOnlyOption.SAFE:
        r.read_only.add_request(r.log.committed, m)
        r.read_only.recv_ack(r.id, m.context)
        bcast_heartbeat(r, m.context)
    else:
        _respond_read_index(r, m, r.log.committed)


def release_pending_read_index(r: Raft) -> None:
    if not r.pending_read_index_messages:
        return
    if not committed_entry_in_current_term(r):
        return
    msgs = r.pending_read_index_messages
    r.pending_read_index_messages = []
    for m in msgs:
        _send_read_index_response(r, m)


# -- the leader's step function ----------------------------------------------------


def step_leader(r: Raft, m: Message) -> None:
    t = m.type
    if t == MT.MSG_BEAT:
        bcast_heartbeat(r)
        return
    if t == MT.MSG_CHECK_QUORUM:
        own = r.trk.progress.get(r.id)
        if own is not None:
            own.recent_active = True
        if not r.trk.quorum_active():
            r.logger.warning("%x stepped down to follower since quorum is not active", r.id)
            r.become_follower(r.term, NONE)
        for pid, other in r.trk.progress.items():
            if pid != r.id:
                other.recent_active = False
        return
    if t == MT.MSG_PROP:
        _handle_propose(r, m)
        return
    if t == MT.MSG_READ_INDEX:
        if r.trk.is_singleton():
            _respond_read_index(r, m, r.log.committed)
        elif not committed_entry_in_current_term(r):
            # The commit index of a fresh leader may lag behind what earlier
            # leaders committed until it commits an entry of its own term.
            r.pending_read_index_messages.append(m)
        else:
            _send_read_index_response(r, m)
        return

    pr = r.trk.progress.get(m.frm)
    if pr is None:
        r.logger.debug("%x no progress available for %x", r.id, m.frm)
        return
    if t == MT.MSG_APP_RESP:
        _handle_append_response(r, m, pr)
    elif t == MT.MSG_HEARTBEAT_RESP:
        _handle_heartbeat_response(r, m, pr)
    elif t == MT.MSG_SNAP_STATUS:
        if pr.state != ProgressState.SNAPSHOT:
            return
        if m.reject:
            # The snapshot never arrived: send a fresh one after the probe.
            pr.pending_snapshot = 0
        pr.become_probe()
        # Wait for a heartbeat response (or MsgAppResp) before probing again.
        pr.probe_sent = True
        r.logger.debug("%x snapshot to %x %s", r.id, m.frm, "failed" if m.reject else "succeeded")
    elif t == MT.MSG_UNREACHABLE:
        if pr.state == ProgressState.REPLICATE:
            pr.become_probe()
        r.logger.debug("%x failed to send message to %x because it is unreachable", r.id, m.frm)
    elif t == MT.MSG_TRANSFER_LEADER:
        _handle_transfer_leader(r, m, pr)


def _handle_propose(r: Raft, m: Message) -> None:
    if not m.entries:
        raise AssertionError(f"{r.id} stepped empty MsgProp")
    if r.id not in r.trk.progress:
        raise ProposalDroppedError("raft proposal dropped: leader was removed")
    if r.lead_transferee != NONE:
        r.logger.debug(
            "%x [term %d] transfer leadership to %x is in progress; dropping proposal",
            r.id,
            r.term,
            r.lead_transferee,
        )
        raise ProposalDroppedError("raft proposal dropped: leadership transfer in progress")
    ents = list(m.entries)
    local = m.frm == NONE or m.frm == r.id
    pending = r.pending_conf_index
    for i, e in enumerate(ents):
        if e.type != EntryType.CONF_CHANGE:
            continue
        if pending > r.log.applied:
            if local:
                raise ProposalDroppedError(
                    "raft proposal dropped: a configuration change is already pending"
                )
            r.logger.info(
                "%x propose conf change ignored since pending unapplied configuration "
                "[index %d, applied %d]",
                r.id,
                pending,
                r.log.applied,
            )
            ents[i] = Entry(term=0, index=0)
        else:
            pending = r.log.last_index() + i + 1
    if not r.append_entry(ents):
        raise ProposalDroppedError("raft proposal dropped: uncommitted size limit")
    r.pending_conf_index = pending
    request_bcast(r)


def _handle_append_response(r: Raft, m: Message, pr: Progress) -> None:
    pr.recent_active = True
    if m.reject:
        r.logger.debug(
            "%x received MsgAppResp(rejected, hint: (index %d, term %d)) from %x for index %d",
            r.id,
            m.reject_hint,
            m.log_term,
            m.frm,
            m.index,
        )
        next_probe = m.reject_hint
        if m.log_term > 0:
            # Skip every leader entry whose term is above the follower's term at
            # the hint: none of them can match.
            next_probe, _ = r.log.find_conflict_by_term(m.reject_hint, m.log_term)
        if pr.maybe_decr_to(m.index, next_probe):
            r.logger.debug("%x decreased progress of %x to [%r]", r.id, m.frm, pr)
            if pr.state == ProgressState.REPLICATE:
                pr.become_probe()
            send_append(r, m.frm)
        return
    old_paused = pr.is_paused()
    if not pr.maybe_update(m.index):
        return
    if pr.state == ProgressState.PROBE:
        pr.become_replicate()
    elif pr.state == ProgressState.SNAPSHOT and pr.match >= pr.pending_snapshot:
        r.logger.debug("%x recovered from needing snapshot, resumed sending to %x", r.id, m.frm)
        pr.become_probe()
        pr.become_replicate()
    elif pr.state == ProgressState.REPLICATE:
        pr.inflights.free_le(m.index)
    if r.maybe_commit():
        release_pending_read_index(r)
        request_bcast(r)
    elif old_paused:
        send_append(r, m.frm)
    # Fill the freed window (only non-empty appends).
    while maybe_send_append(r, m.frm, False):
        pass
    if m.frm == r.lead_transferee and pr.match == r.log.last_index():
        r.logger.info("%x sent MsgTimeoutNow to %x after received MsgAppResp", r.id, m.frm)
        send_timeout_now(r, m.frm)


def _handle_heartbeat_response(r: Raft, m: Message, pr: Progress) -> None:
    pr.recent_active = True
    pr.probe_sent = False
    if pr.state == ProgressState.REPLICATE and pr.inflights.full():
        # The whole window may have been lost: let one more MsgApp out so a
        # rejection (or an ack) gets the flow moving again.
        pr.inflights.free_first_one()
    if pr.match < r.log.last_index():
        send_append(r, m.frm)
    if r.read_only_option != ReadOnlyOption.SAFE or not m.context:
        return
    acks = r.read_only.recv_ack(m.frm, m.context)
    if acks is None:
        return
    voters = r.trk.voters
    if sum(1 for a in acks if a in voters) < r.trk.quorum():
        return
    for rs in r.read_only.advance(m.context):
        _respond_read_index(r, rs.req, rs.index)


def _handle_transfer_leader(r: Raft, m: Message, pr: Progress) -> None:
    if pr.is_learner:
        r.logger.debug("%x is learner. Ignored transferring leadership", r.id)
        return
    transferee = m.frm
    last = r.lead_transferee
    if last != NONE:
        if last == transferee:
            r.logger.info(
                "%x [term %d] transfer leadership to %x is in progress, ignores request to "
                "same node",
                r.id,
                r.term,
                transferee,
            )
            return
        abort_leader_transfer(r)
        r.logger.info(
            "%x [term %d] abort previous transferring leadership to %x", r.id, r.term, last
        )
    if transferee == r.id:
        r.logger.debug("%x is already leader. Ignored transferring leadership to self", r.id)
        return
    r.logger.info("%x [term %d] starts to transfer leadership to %x", r.id, r.term, transferee)
    # The transfer must finish within one election timeout.
    r.election_elapsed = 0
    r.lead_transferee = transferee
    if pr.match == r.log.last_index():
        send_timeout_now(r, transferee)
        r.logger.info(
            "%x sends MsgTimeoutNow to %x immediately as %x already has up-to-date log",
            r.id,
            transferee,
            transferee,
        )
    else:
        send_append(r, transferee)


def after_conf_change(r: Raft) -> None:
    """Leader duties after a membership change was applied."""
    if r.id not in r.trk.progress:
        r.logger.info("%x was removed from the configuration; stepping down", r.id)
        r.become_follower(r.term, NONE)
        return
    if r.lead_transferee != NONE and r.lead_transferee not in r.trk.progress:
        abort_leader_transfer(r)
    if r.maybe_commit():
        # A smaller quorum may commit more now.
        release_pending_read_index(r)
        bcast_append(r)
    else:
        # Probe newly added members right away.
        for pid in r.trk.progress:
            if pid != r.id:
                maybe_send_append(r, pid, False)
