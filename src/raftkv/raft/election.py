"""Elections: campaigns, pre-vote, vote requests and their tally.

Owns: ``CampaignType``, ``hup`` (the MsgHup entry point with its refusals:
already leader, not promotable, unapplied conf change), ``campaign``,
``poll`` and ``handle_vote_request`` (the §5.4.1 up-to-date check), plus
``MSG_NAMES`` (etcd's spelling of message kinds for log lines).

Contracts:
- a pre-vote never changes anyone's term or vote; a real vote is granted at
  most once per term and only to a log at least as up to date as ours;
- a transfer campaign (``CAMPAIGN_TRANSFER`` context) skips pre-vote and is
  honoured by voters inside a leader lease.
"""

from __future__ import annotations

from enum import Enum
from typing import TYPE_CHECKING

from raftkv.raft.progress import VoteResult
from raftkv.raft.types import NONE, EntryType, Message, MessageType, StateType

if TYPE_CHECKING:
    from raftkv.raft.core import Raft

MT = MessageType
CAMPAIGN_TRANSFER = b"CampaignTransfer"


class CampaignType(Enum):
    PRE_ELECTION = "CampaignPreElection"
    ELECTION = "CampaignElection"
    TRANSFER = "CampaignTransfer"


MSG_NAMES: dict[MessageType, str] = {
    t: "Msg" + "".join(w.capitalize() for w in t.name.split("_")[1:]) for t in MessageType
}
"""etcd's spelling of each message kind (``MsgAppResp``), used in log lines."""


def vote_resp_type(t: MessageType) -> MessageType:
    return MT.MSG_VOTE_RESP if t == MT.MSG_VOTE else MT.MSG_PRE_VOTE_RESP


def hup(r: Raft, t: CampaignType) -> None:
    if r.state == StateType.LEADER:
        r.logger.debug("%x ignoring MsgHup because already leader", r.id)
        return
    if not r.promotable():
        r.logger.warning("%x is unpromotable and can not campaign", r.id)
        return
    if has_unapplied_conf_change(r):
        r.logger.warning(
            "%x cannot campaign at term %d since there are still pending configuration "
            "changes to apply",
            r.id,
            r.term,
        )
        return
    r.logger.info("%x is starting a new election at term %d", r.id, r.term)
    campaign(r, t)


def has_unapplied_conf_change(r: Raft) -> bool:
    log = r.log
    if log.committed <= log.applied:
        return False
    lo = max(log.applied + 1, log.first_index())
    ents = log.slice(lo, log.committed + 1, None)
    return any(e.type == EntryType.CONF_CHANGE for e in ents)


def campaign(r: Raft, t: CampaignType) -> None:
    if not r.promotable():
        r.logger.warning("%x is unpromotable; campaign() should not be called", r.id)
        return
    if t == CampaignType.PRE_ELECTION:
        r.become_pre_candidate()
        vote_msg = MT.MSG_PRE_VOTE
        term = r.term + 1  # the term we would have after a real election
    else:
        r.become_candidate()
        vote_msg = MT.MSG_VOTE
        term = r.term
    if poll(r, r.id, vote_resp_type(vote_msg), True) == VoteResult.WON:
        # A single-voter cluster wins at once.
        if t == CampaignType.PRE_ELECTION:
            campaign(r, CampaignType.ELECTION)
        else:
            r.become_leader()
        return
    ctx = CAMPAIGN_TRANSFER if t == CampaignType.TRANSFER else b""
    last_index = r.log.last_index()
    last_term = r.log.last_term()
    for vid in r.trk.voter_ids():
        if vid == r.id:
            continue
        r.logger.info(
            "%x [logterm: %d, index: %d] sent %s request to %x at term %d",
            r.id,
            last_term,
            last_index,
            MSG_NAMES[vote_msg],
            vid,
            r.term,
        )
        r.msgs.append(
            Message(
                type=vote_msg,
                to=vid,
                frm=r.id,
                term=term,
                log_term=last_term,
                index=last_index,
                context=ctx,
            )
        )


def poll(r: Raft, node_id: int, t: MessageType, granted: bool) -> VoteResult:
    if granted:
        r.logger.info("%x received %s from %x at term %d", r.id, MSG_NAMES[t], node_id, r.term)
    else:
        r.logger.info(
            "%x received %s rejection from %x at term %d", r.id, MSG_NAMES[t], node_id, r.term
        )
    r.trk.record_vote(node_id, granted)
    gr, rj, res = r.trk.tally_votes()
    if res == VoteResult.PENDING and node_id != r.id:
        r.logger.info(
            "%x has received %d %s votes and %d vote rejections", r.id, gr, MSG_NAMES[t], rj
        )
    return res


def handle_vote_request(r: Raft, m: Message) -> None:
    can_vote = (
        r.vote == m.frm
        or (r.vote == NONE and r.lead == NONE)
        or (m.type == MT.MSG_PRE_VOTE and m.term > r.term)
    )
    resp = vote_resp_type(m.type)
    if can_vote and r.log.is_up_to_date(m.index, m.log_term):
        r.logger.info(
            "%x [logterm: %d, index: %d, vote: %x] cast %s for %x [logterm: %d, index: %d] "
            "at term %d",
            r.id,
            r.log.last_term(),
            r.log.last_index(),
            r.vote,
            MSG_NAMES[m.type],
            m.frm,
            m.log_term,
            m.index,
            r.term,
        )
        # The response carries the request's term: a pre-vote is granted
        # for the future term without adopting it.
        r.send(Message(type=resp, to=m.frm, frm=r.id, term=m.term))
        if m.type == MT.MSG_VOTE:
            r.election_elapsed = 0
            r.vote = m.frm
    else:
        r.logger.info(
            "%x [logterm: %d, index: %d, vote: %x] rejected %s from %x [logterm: %d, "
            "index: %d] at term %d",
            r.id,
            r.log.last_term(),
            r.log.last_index(),
            r.vote,
            MSG_NAMES[m.type],
            m.frm,
            m.log_term,
            m.index,
            r.term,
        )
        r.send(Message(type=resp, to=m.frm, frm=r.id, term=r.term, reject=True))
