"""Unit tests of the RawNode API contract (errors, Ready/advance, restart, limits)."""

from __future__ import annotations

import dataclasses

import pytest

from raftkv.raft import (
    NONE,
    ConfChange,
    ConfChangeType,
    Config,
    ConfState,
    Entry,
    EntryType,
    HardState,
    MemoryStorage,
    Message,
    MessageType,
    ProgressState,
    ProposalDroppedError,
    RawNode,
    ReadOnlyOption,
    Snapshot,
    SnapshotMetadata,
    StateType,
    StepLocalMsgError,
    StepPeerNotFoundError,
    decode_conf_change,
    encode_conf_change,
)
from raftkv.raft.election import has_unapplied_conf_change
from tests.raft.raft_cluster import Cluster, QuietLogger, bootstrap_storage

MT = MessageType


def _node(i: int = 1, voters: tuple[int, ...] = (1,), **kw: object) -> RawNode:
    cfg = Config(id=i, storage=bootstrap_storage(voters), logger=QuietLogger(), **kw)  # type: ignore[arg-type]
    return RawNode(cfg)


@pytest.mark.parametrize(
    ("kw", "msg"),
    [
        ({"id": 0}, "id"),
        ({"heartbeat_tick": 0}, "heartbeat"),
        ({"election_tick": 1}, "election tick"),
        ({"max_inflight_msgs": 0}, "inflight"),
        ({"max_size_per_msg": 0}, "size per message"),
        ({"read_only_option": ReadOnlyOption.LEASE_BASED, "check_quorum": False}, "check_quorum"),
        ({"applied": -1}, "applied"),
    ],
)
def test_config_validate(kw: dict[str, object], msg: str) -> None:
    base = Config(id=1, storage=MemoryStorage())
    with pytest.raises(ValueError, match=msg):
        dataclasses.replace(base, **kw).validate()  # type: ignore[arg-type]


def test_step_rejects_local_messages_and_unknown_responders() -> None:
    n = _node(voters=(1, 2, 3))
    for t in (MT.MSG_HUP, MT.MSG_BEAT, MT.MSG_CHECK_QUORUM, MT.MSG_UNREACHABLE):
        with pytest.raises(StepLocalMsgError):
            n.step(Message(type=t, frm=2))
    with pytest.raises(StepPeerNotFoundError):
        n.step(Message(type=MT.MSG_APP_RESP, frm=9, term=1))
    # A request from an unknown node is processed (it may be joining).
    n.step(Message(type=MT.MSG_HEARTBEAT, frm=9, to=1, term=5))
    assert n.lead == 9 and n.term == 5


def test_single_node_lifecycle_and_ready_contents() -> None:
    s = bootstrap_storage([1])
    n = RawNode(Config(id=1, storage=s, logger=QuietLogger()))
    assert not n.has_ready()
    n.campaign()
    assert n.state == StateType.LEADER
    rd = n.ready()
    assert rd.soft_state is not None and rd.soft_state.raft_state == StateType.LEADER
    assert rd.hard_state == HardState(term=2, vote=1, commit=1)
    assert [(e.term, e.index) for e in rd.entries] == [(2, 2)]
    assert rd.must_sync and rd.messages == ()
    s.append(rd.entries)
    s.set_hard_state(rd.hard_state)
    n.advance(rd)
    rd = n.ready()
    assert rd.soft_state is None and rd.entries == ()
    assert [e.index for e in rd.committed_entries] == [2]
    assert rd.hard_state == HardState(term=2, vote=1, commit=2)
    assert not rd.must_sync  # only the commit index changed
    n.advance(rd)
    assert not n.has_ready()
    st = n.status()
    assert st.applied == 2 and st.progress[1].state == ProgressState.REPLICATE


def test_restart_restores_hard_state_and_log() -> None:
    c = Cluster([1, 2, 3])
    c.elect(1)
    c.nodes[1].propose(b"a")
    c.stabilize()
    term = c.nodes[2].term
    c.restart(2)
    n = c.nodes[2]
    assert n.term == term and n.state == StateType.FOLLOWER and n.lead == NONE
    assert n.raft.vote == 1
    assert n.raft.log.committed == c.storages[2].hard_state().commit
    assert n.raft.log.applied == c.applied_index[2]
    assert not n.raft.log.has_next_ents()  # nothing is re-delivered
    c.tick(3, only=[1])
    assert n.lead == 1


def test_restart_with_applied_zero_redelivers_committed_entries() -> None:
    c = Cluster([1, 2, 3])
    c.elect(1)
    c.nodes[1].propose(b"a")
    c.stabilize()
    n = RawNode(Config(id=2, storage=c.storages[2], logger=QuietLogger()))
    rd = n.ready()
    assert [e.data for e in rd.committed_entries] == [b"", b"a"]


def test_propose_conf_change_one_at_a_time() -> None:
    c = Cluster([1, 2, 3])
    c.elect(1)
    n = c.nodes[1]
    n.propose_conf_change(ConfChange(ConfChangeType.ADD_LEARNER_NODE, 4))
    with pytest.raises(ProposalDroppedError, match="already pending"):
        n.propose_conf_change(ConfChange(ConfChangeType.REMOVE_NODE, 3))
    # A forwarded second change is turned into an empty entry, as etcd does.
    c.nodes[2].propose_conf_change(ConfChange(ConfChangeType.REMOVE_NODE, 3))
    c.stabilize()
    ents = c.storages[1].entries(3, c.storages[1].last_index() + 1)
    kinds = [(e.type, e.data) for e in ents]
    assert kinds[0][0] == EntryType.CONF_CHANGE
    assert decode_conf_change(kinds[0][1]) == ConfChange(ConfChangeType.ADD_LEARNER_NODE, 4)
    assert kinds[1] == (EntryType.NORMAL, b"")
    assert n.status().conf_state.learners == (4,)
    # Applied: a new change is accepted.
    n.propose_conf_change(ConfChange(ConfChangeType.REMOVE_NODE, 4))
    c.stabilize()
    assert n.status().conf_state.learners == ()


def test_no_campaign_with_unapplied_conf_change() -> None:
    c = Cluster([1, 2, 3])
    c.elect(1)
    c.nodes[1].propose_conf_change(ConfChange(ConfChangeType.ADD_LEARNER_NODE, 4))
    # Deliver everything, but node 2 does not apply its committed entries yet.
    for _ in range(6):
        for i in (1, 3):
            c.deliver(c.handle_ready(i) if c.nodes[i].has_ready() else [])
        n2 = c.nodes[2]
        if n2.has_ready():
            rd = n2.ready()
            c.storages[2].append(rd.entries)
            if rd.hard_state is not None:
                c.storages[2].set_hard_state(rd.hard_state)
            c.deliver(list(rd.messages))
            if rd.committed_entries:
                break
            n2.advance(rd)
    r2 = c.nodes[2].raft
    assert r2.log.committed > r2.log.applied
    assert has_unapplied_conf_change(r2)
    c.nodes[2].campaign()
    assert c.nodes[2].state == StateType.FOLLOWER
    assert any("pending configuration changes" in ln for ln in c.logger.lines)


def test_uncommitted_size_limit() -> None:
    n = _node(voters=(1, 2), max_uncommitted_entries_size=10, pre_vote=False)
    n.campaign()
    n.step(Message(type=MT.MSG_VOTE_RESP, frm=2, to=1, term=n.term))
    assert n.state == StateType.LEADER
    n.propose(b"x" * 8)
    with pytest.raises(ProposalDroppedError):
        n.propose(b"y" * 8)
    # Empty proposals are never refused for size.
    n.propose(b"")


def test_max_committed_size_per_ready_pages_entries() -> None:
    s = bootstrap_storage([1])
    n = RawNode(Config(id=1, storage=s, logger=QuietLogger(), max_committed_size_per_ready=25))
    n.campaign()
    for k in range(4):
        n.propose(bytes([65 + k]) * 10)
    pages: list[list[int]] = []
    while n.has_ready():
        rd = n.ready()
        s.append(rd.entries)
        if rd.hard_state is not None:
            s.set_hard_state(rd.hard_state)
        if rd.committed_entries:
            pages.append([e.index for e in rd.committed_entries])
        n.advance(rd)
    assert pages == [[2, 3, 4], [5, 6]]


def test_read_index_needs_context_and_single_voter_answers_at_once() -> None:
    n = _node()
    with pytest.raises(ValueError, match="non-empty"):
        n.read_index(b"")
    n.campaign()
    n.read_index(b"r")
    rd = n.ready()
    assert [(rs.index, rs.request_ctx) for rs in rd.read_states] == [(1, b"r")]


def test_follower_without_leader_drops_reads_and_proposals() -> None:
    n = _node(voters=(1, 2, 3))
    n.read_index(b"r")
    assert not n.ready().read_states
    with pytest.raises(ProposalDroppedError):
        n.propose(b"x")
    n2 = _node(voters=(1, 2, 3), disable_proposal_forwarding=True)
    n2.step(Message(type=MT.MSG_HEARTBEAT, frm=2, to=1, term=3))
    with pytest.raises(ProposalDroppedError):
        n2.propose(b"x")


def test_report_unreachable_moves_replicating_follower_to_probe() -> None:
    c = Cluster([1, 2, 3])
    c.elect(1)
    assert c.nodes[1].status().progress[2].state == ProgressState.REPLICATE
    c.nodes[1].report_unreachable(2)
    assert c.nodes[1].status().progress[2].state == ProgressState.PROBE


def test_lost_inflight_window_recovers_on_heartbeat() -> None:
    c = Cluster([1, 2], max_inflight_msgs=2)
    c.elect(1)
    c.cut(1, 2)
    for k in range(4):
        c.nodes[1].propose(b"v%d" % k)
        c.stabilize()
    assert c.nodes[1].status().progress[2].paused
    c.heal()
    c.tick(3, only=[1])
    assert c.applied[2] == [b"v0", b"v1", b"v2", b"v3"]


def test_step_down_on_higher_term_response_and_messages_never_to_self() -> None:
    c = Cluster([1, 2, 3])
    c.elect(1)
    c.nodes[1].propose(b"a")
    rd = c.nodes[1].ready()
    assert all(m.to != 1 for m in rd.messages)
    c.nodes[1].advance(rd)
    c.nodes[1].step(Message(type=MT.MSG_HEARTBEAT_RESP, frm=2, to=1, term=c.nodes[1].term + 1))
    assert c.nodes[1].state == StateType.FOLLOWER


def test_entries_helper_types() -> None:
    e = Entry(1, 2)
    assert e.type == EntryType.NORMAL and e.data == b""


def test_propose_many_is_one_batch() -> None:
    c = Cluster([1, 2, 3])
    c.elect(1)
    c.nodes[2].propose_many([b"a", b"b", b"c"])  # forwarded as one MsgProp
    c.nodes[1].propose_many([])
    rd = c.nodes[2].ready()
    assert [len(m.entries) for m in rd.messages] == [3]
    c.nodes[2].advance(rd)
    c.deliver(list(rd.messages))
    c.stabilize()
    assert c.applied[3] == [b"a", b"b", b"c"]


def test_restart_replays_conf_changes_after_the_snapshot() -> None:
    """Config.applied skips re-delivery, so the core itself re-applies the
    membership changes logged between the snapshot and ``applied``."""
    c = Cluster([1, 2, 3])
    c.elect(1)
    c.nodes[1].propose_conf_change(ConfChange(ConfChangeType.ADD_LEARNER_NODE, 4))
    c.stabilize()
    c.nodes[1].propose_conf_change(ConfChange(ConfChangeType.REMOVE_NODE, 3))
    c.stabilize()
    assert c.nodes[2].status().conf_state.voters == (1, 2)
    c.restart(2)
    assert c.nodes[2].status().conf_state.voters == (1, 2)
    assert c.nodes[2].status().conf_state.learners == (4,)
    assert not c.nodes[2].has_ready()


def test_snapshot_refused_while_committed_entries_are_being_applied() -> None:
    """A MsgSnap stepped between ready() and advance() must not replace the
    configuration the handed-out conf changes are applied against (sim seed 139)."""
    s = bootstrap_storage([1, 2, 3])
    n = RawNode(Config(id=2, storage=s, logger=QuietLogger()))
    add4 = encode_conf_change(ConfChange(ConfChangeType.ADD_LEARNER_NODE, 4))
    ents = (
        Entry(2, 2, EntryType.NORMAL, b""),
        Entry(2, 3, EntryType.CONF_CHANGE, add4),
        Entry(2, 4, EntryType.NORMAL, b"x"),
    )
    n.step(
        Message(type=MT.MSG_APP, frm=1, to=2, term=2, index=1, log_term=1, commit=4, entries=ents)
    )
    rd = n.ready()
    assert [e.index for e in rd.committed_entries] == [2, 3, 4]
    s.append(list(rd.entries))
    assert rd.hard_state is not None
    s.set_hard_state(rd.hard_state)
    # The leader meanwhile compacted past 4 and promoted 4: it sends a snapshot.
    snap = Snapshot(SnapshotMetadata(index=10, term=2, conf_state=ConfState(voters=(1, 2, 3, 4))))
    msg_snap = Message(type=MT.MSG_SNAP, frm=1, to=2, term=2, snapshot=snap)
    n.step(msg_snap)
    # The application applies entry 3 from the Ready it holds: the result is the
    # configuration every member has after index 3.
    cs = n.apply_conf_change(decode_conf_change(rd.committed_entries[1].data))
    assert cs == ConfState(voters=(1, 2, 3), learners=(4,))
    n.advance(rd)
    rd2 = n.ready()
    assert rd2.snapshot.is_empty() and rd2.committed_entries == ()
    assert [(m.type, m.index, m.reject) for m in rd2.messages] == [(MT.MSG_APP_RESP, 4, False)]
    n.advance(rd2)
    # Once the apply is acknowledged the resent snapshot is restored.
    n.step(msg_snap)
    rd3 = n.ready()
    assert rd3.snapshot == snap
    assert [(m.type, m.index) for m in rd3.messages] == [(MT.MSG_APP_RESP, 10)]
    assert n.status().conf_state == ConfState(voters=(1, 2, 3, 4))
    n.advance(rd3)
    assert n.raft.log.applied == n.raft.log.applying == 10


def test_ready_does_not_hand_out_entries_being_applied_twice() -> None:
    s = bootstrap_storage([1])
    n = RawNode(Config(id=1, storage=s, logger=QuietLogger()))
    n.campaign()
    rd = n.ready()
    s.append(list(rd.entries))
    n.advance(rd)  # persisted: the leader's empty entry commits
    rd = n.ready()
    log = n.raft.log
    assert [e.index for e in rd.committed_entries] == [2]
    assert (log.applied, log.applying, log.committed) == (1, 2, 2)
    assert not n.has_ready()
    n.advance(rd)
    assert (log.applied, log.applying) == (2, 2)
