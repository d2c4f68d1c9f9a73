"""Tests tied to sections of the Raft paper (Ongaro & Ousterhout, 2014).

§5.2 election safety, §5.3 log matching, §5.4.1 election restriction,
§5.4.2 no commit of previous-term entries by counting (Figure 8), leader
completeness and state machine safety under a randomized faulty network.
"""

from __future__ import annotations

import contextlib
import random

import pytest

from raftkv.raft import (
    ConfChange,
    ConfChangeType,
    Config,
    Entry,
    HardState,
    MemoryStorage,
    Message,
    MessageType,
    ProposalDroppedError,
    RawNode,
    StateType,
)
from raftkv.raft.core import Raft
from tests.raft.raft_cluster import Cluster, QuietLogger, bootstrap_storage

MT = MessageType


# -- §5.1/§5.2: terms and elections ---------------------------------------------


def test_5_1_stale_term_message_ignored_and_newer_term_adopted() -> None:
    c = Cluster([1, 2, 3], pre_vote=False, check_quorum=False)
    c.elect(1)
    term = c.nodes[2].term
    # A message from an older term is ignored (no state change).
    c.nodes[2].step(Message(type=MT.MSG_APP, to=2, frm=3, term=term - 1, index=0))
    assert c.nodes[2].term == term and c.nodes[2].lead == 1
    # A message from a newer term makes the receiver adopt it as a follower.
    c.nodes[1].step(Message(type=MT.MSG_APP_RESP, to=1, frm=2, term=term + 5, index=0))
    assert c.nodes[1].state == StateType.FOLLOWER
    assert c.nodes[1].term == term + 5


def test_5_2_candidate_increments_term_and_votes_for_itself() -> None:
    c = Cluster([1, 2, 3], pre_vote=False)
    t0 = c.nodes[1].term
    c.nodes[1].campaign()
    assert c.nodes[1].state == StateType.CANDIDATE
    rd = c.nodes[1].ready()
    assert rd.hard_state == HardState(term=t0 + 1, vote=1, commit=1)
    assert {m.to for m in rd.messages if m.type == MT.MSG_VOTE} == {2, 3}


def test_5_2_one_vote_per_term() -> None:
    c = Cluster([1, 2, 3], pre_vote=False, check_quorum=False)
    t = c.nodes[3].term + 1
    c.nodes[3].step(Message(type=MT.MSG_VOTE, to=3, frm=1, term=t, log_term=1, index=1))
    c.nodes[3].step(Message(type=MT.MSG_VOTE, to=3, frm=2, term=t, log_term=1, index=1))
    resps = [m for m in c.nodes[3].ready().messages if m.type == MT.MSG_VOTE_RESP]
    assert [(m.to, m.reject) for m in resps] == [(1, False), (2, True)]


def test_5_2_randomized_election_timeout_range() -> None:
    seen = set()
    for seed in range(40):
        r = Raft(_config(1, seed=seed))
        r.reset_randomized_election_timeout()
        seen.add(r.randomized_election_timeout)
    assert seen == set(range(10, 20))


def _config(i: int, seed: int = 0) -> Config:
    return Config(id=i, storage=bootstrap_storage([1, 2, 3]), seed=seed, logger=QuietLogger())


def test_5_2_split_vote_resolves() -> None:
    c = Cluster([1, 2, 3, 4, 5], seed=11)
    for _ in range(200):
        c.tick(1)
        if c.leaders():
            break
    assert len(c.leaders()) == 1


# -- §5.4.1: election restriction -----------------------------------------------


def test_5_4_1_vote_denied_to_less_up_to_date_log() -> None:
    c = Cluster([1, 2, 3], pre_vote=False, check_quorum=False)
    c.elect(1)
    c.nodes[1].propose(b"x")
    c.stabilize()
    n = c.nodes[2]
    t = n.term + 1
    last = c.storages[2].last_index()
    last_term = c.storages[2].term(last)
    # Same last term but shorter log: rejected.
    n.step(Message(type=MT.MSG_VOTE, to=2, frm=3, term=t, log_term=last_term, index=last - 1))
    # Lower last term but longer log: rejected.
    n.step(
        Message(type=MT.MSG_VOTE, to=2, frm=3, term=t + 1, log_term=last_term - 1, index=last + 5)
    )
    # Higher last term, shorter log: granted.
    n.step(Message(type=MT.MSG_VOTE, to=2, frm=3, term=t + 2, log_term=last_term + 1, index=1))
    resps = [m for m in n.ready().messages if m.type == MT.MSG_VOTE_RESP]
    assert [m.reject for m in resps] == [True, True, False]


# -- §5.3: log matching ------------------------------------------------------------


def test_5_3_follower_rejects_mismatching_prev_entry_and_truncates_conflicts() -> None:
    c = Cluster([1, 2, 3], pre_vote=False, check_quorum=False)
    c.elect(1)
    f = c.nodes[2]
    c.stabilize()
    t = f.term
    # prev (index 9) does not exist on the follower: rejected with a hint.
    f.step(Message(type=MT.MSG_APP, to=2, frm=1, term=t, log_term=t, index=9))
    rej = [m for m in f.ready().messages if m.type == MT.MSG_APP_RESP]
    assert rej[0].reject and rej[0].reject_hint == c.storages[2].last_index()
    # An uncommitted suffix is replaced by a conflicting one from the leader.
    last = f.raft.log.last_index()
    f.step(
        Message(
            type=MT.MSG_APP,
            to=2,
            frm=1,
            term=t,
            log_term=t,
            index=last,
            entries=(Entry(t, last + 1, data=b"a"), Entry(t, last + 2, data=b"b")),
        )
    )
    f.step(
        Message(
            type=MT.MSG_APP,
            to=2,
            frm=1,
            term=t + 1,
            log_term=t,
            index=last,
            entries=(Entry(t + 1, last + 1, data=b"c"),),
        )
    )
    log = f.raft.log
    assert log.last_index() == last + 1
    assert log.term(last + 1) == t + 1


def test_commit_beyond_last_index_crashes() -> None:
    """A heartbeat claiming a commit index beyond our log is a broken invariant."""
    c = Cluster([1, 2, 3], pre_vote=False, check_quorum=False)
    c.elect(1)
    f = c.nodes[2]
    last = f.raft.log.last_index()
    with pytest.raises(AssertionError, match="out of range"):
        f.step(Message(type=MT.MSG_HEARTBEAT, to=2, frm=1, term=f.term, commit=last + 1))


# -- §5.4.2: Figure 8 -----------------------------------------------------------------


def _node_with_log(i: int, terms: list[int], term: int) -> tuple[RawNode, MemoryStorage]:
    """A voter of (1, 2, 3) whose log holds entries of ``terms`` after the bootstrap."""
    s = bootstrap_storage([1, 2, 3])
    s.append([Entry(t, 2 + k) for k, t in enumerate(terms)])
    s.set_hard_state(HardState(term=term, vote=0, commit=1))
    return RawNode(Config(id=i, storage=s, pre_vote=False, logger=QuietLogger())), s


def _persist(n: RawNode, s: MemoryStorage) -> list[Message]:
    rd = n.ready()
    s.append(rd.entries)
    if rd.hard_state is not None:
        s.set_hard_state(rd.hard_state)
    n.advance(rd)
    return list(rd.messages)


def test_5_4_2_leader_does_not_commit_previous_term_entry_by_counting() -> None:
    """Figure 8 (c): the leader of term 4 holds index 2 from term 2; once that
    entry sits on a majority it must still not be committed by counting (a
    node with a term-3 entry at index 2 could win and overwrite it).  It
    commits only together with an entry of the current term."""
    n, s = _node_with_log(1, [2], term=3)
    n.campaign()
    for v in (2, 3):
        n.step(Message(type=MT.MSG_VOTE_RESP, to=1, frm=v, term=4))
    assert n.state == StateType.LEADER and n.term == 4
    _persist(n, s)  # the leader's empty entry 4/3 is now durable locally
    assert n.raft.log.last_index() == 3 and n.raft.log.term(2) == 2
    # Follower 2 acknowledges index 2 (term 2): leader + 2 = majority of 3.
    n.step(Message(type=MT.MSG_APP_RESP, to=1, frm=2, term=4, index=2))
    assert n.raft.log.committed == 1
    n.step(Message(type=MT.MSG_APP_RESP, to=1, frm=3, term=4, index=2))
    assert n.raft.log.committed == 1
    # Once an entry of term 4 is on a majority, everything up to it commits.
    n.step(Message(type=MT.MSG_APP_RESP, to=1, frm=2, term=4, index=3))
    assert n.raft.log.committed == 3


def test_5_4_2_figure8_scenario_in_cluster() -> None:
    """The full Figure 8 schedule on five nodes: the term-2 entry that S1
    replicated to a majority while leading term 4 is committed only with
    S1's term-4 entry, and S5 (holding a conflicting term-3 entry) can no
    longer be elected afterwards."""
    c = Cluster([1, 2, 3, 4, 5], pre_vote=False, check_quorum=False)
    c.elect(1)  # term 2, empty entry at index 2 committed everywhere
    # (a) S1 replicates index 3 (term 2) to S2 only.
    for j in (3, 4, 5):
        c.isolate(j)
    c.nodes[1].propose(b"s1")
    c.stabilize()
    assert c.storages[2].term(3) == 2 and c.storages[3].last_index() == 2
    # (b) S5 wins term 3 with S3 and S4 and writes index 3 (term 3) locally only.
    c.heal()
    c.isolate(1)
    c.isolate(2)
    c.filter = lambda m: not (m.frm == 5 and m.type == MT.MSG_APP)
    c.elect(5)
    assert c.nodes[5].term == 3 and c.storages[5].term(3) == 3
    c.filter = None
    # (c) S5 is gone; S1 restarts and wins term 4 with S2, S3 and S4.
    c.heal()
    c.isolate(5)
    c.restart(1)
    while c.nodes[1].state != StateType.LEADER:
        c.nodes[1].campaign()
        c.stabilize()
    assert c.nodes[1].term == 4
    # S1 re-replicated index 3 (term 2) and its own term-4 entry; both commit.
    assert c.nodes[1].raft.log.committed == 4
    assert c.nodes[1].raft.log.term(3) == 2
    # (d) S5 cannot be elected any more: its log is behind a majority's.
    c.heal()
    c.isolate(1)
    c.restart(5)
    for _ in range(3):
        c.nodes[5].campaign()
        c.stabilize()
        assert c.nodes[5].state != StateType.LEADER
    assert all(c.storages[i].term(3) == 2 for i in (1, 2, 3, 4))


# -- leader completeness ------------------------------------------------------------


def test_leader_completeness_committed_entries_survive_leader_changes() -> None:
    c = Cluster([1, 2, 3, 4, 5], pre_vote=False, check_quorum=False)
    c.elect(1)
    for k in range(5):
        c.nodes[1].propose(f"x{k}".encode())
    c.isolate(4)
    c.isolate(5)
    c.stabilize()
    committed = c.nodes[1].raft.log.committed
    assert committed == c.nodes[1].raft.log.last_index()
    # The leader fails; nodes 4 and 5 lack committed entries and cannot win.
    c.heal()
    c.isolate(1)
    for cand in (4, 5):
        c.nodes[cand].campaign()
        c.stabilize()
        assert c.nodes[cand].state != StateType.LEADER
    # Whoever wins holds every committed entry, and they stay committed.
    c.nodes[2].campaign()
    c.stabilize()
    assert c.nodes[2].state == StateType.LEADER
    assert c.nodes[2].raft.log.last_index() >= committed
    for i in (2, 3, 4, 5):
        assert c.applied[i][:5] == [f"x{k}".encode() for k in range(5)]


def test_commit_after_remove_node() -> None:
    """Removing a voter lowers the quorum: a pending entry then commits."""
    c = Cluster([1, 2], pre_vote=False, check_quorum=False)
    c.elect(1)
    n = c.nodes[1]
    n.propose_conf_change(ConfChange(ConfChangeType.REMOVE_NODE, 2))
    c.stabilize()  # the removal commits (both ack) but is not applied yet by us
    c.isolate(2)
    n.propose(b"pending")
    c.stabilize()
    # Applying the removal (done by stabilize) leaves a single voter; the
    # pending entry commits with the smaller quorum.
    assert c.applied[1] == [b"pending"]


# -- randomized safety: election safety, log matching, leader completeness,
# -- state machine safety ---------------------------------------------------------


def _check_log_matching(c: Cluster) -> None:
    logs: dict[int, dict[int, int]] = {}
    for i in c.ids:
        log = c.nodes[i].raft.log
        logs[i] = {j: log.term(j) for j in range(log.first_index(), log.last_index() + 1)}
    for a in c.ids:
        for b in c.ids:
            if a >= b:
                continue
            common = sorted(set(logs[a]) & set(logs[b]))
            # If two logs agree on (index, term), they agree on every earlier entry.
            agree = [j for j in common if logs[a][j] == logs[b][j]]
            if agree:
                top = agree[-1]
                assert all(logs[a][k] == logs[b][k] for k in common if k <= top), (a, b)


@pytest.mark.parametrize("seed", range(6))
def test_safety_under_random_faults(seed: int) -> None:
    rng = random.Random(seed)
    c = Cluster([1, 2, 3, 4, 5], seed=seed)
    leaders_by_term: dict[int, int] = {}
    inflight: list[Message] = []
    proposed = 0

    def record() -> None:
        for i in c.ids:
            n = c.nodes[i]
            if n.state == StateType.LEADER:
                prev = leaders_by_term.setdefault(n.term, i)
                assert prev == i, f"two leaders in term {n.term}: {prev} and {i}"

    for _ in range(1200):
        r = rng.random()
        if r < 0.02:
            c.isolate(rng.choice(c.ids))
        elif r < 0.05:
            c.heal()
        elif r < 0.06:
            i = rng.choice(c.ids)
            c.restart(i, seed=rng.randrange(1000))
            for m in inflight:
                if m.to == i:
                    c.lost(m)
            inflight = [m for m in inflight if m.to != i]
        elif r < 0.07:
            # Snapshot and compact a node's log up to what it applied.
            i = rng.choice(c.ids)
            idx = c.applied_index.get(i, 0)
            st = c.storages[i]
            if idx > st.snapshot().metadata.index:
                st.create_snapshot(idx, c.nodes[i].status().conf_state, b"")
                st.compact(idx)
        elif r < 0.25:
            i = rng.choice(c.ids)
            if c.nodes[i].lead:
                proposed += 1
                with contextlib.suppress(ProposalDroppedError):
                    c.nodes[i].propose(f"v{proposed}".encode())
        elif r < 0.6:
            for i in c.ids:
                c.nodes[i].tick()
        for i in c.ids:
            if c.nodes[i].has_ready():
                inflight.extend(c.handle_ready(i))
        record()
        # Deliver a random subset in random order; lose some, delay others.
        rng.shuffle(inflight)
        keep: list[Message] = []
        for m in inflight:
            x = rng.random()
            if x < 0.1:
                c.lost(m)
                continue
            if x < 0.3:
                keep.append(m)
                continue
            c.deliver([m])
        inflight = keep
        record()
    # Heal and require convergence; messages still in flight are lost.
    for m in inflight:
        c.lost(m)
    c.heal()
    for _ in range(100):
        c.tick(1)
        record()
    _check_log_matching(c)
    # State machine safety: every node applied the same entry at each index.
    seen: dict[int, bytes] = {}
    for i in c.ids:
        for idx, data in c.applied_log[i]:
            prev = seen.setdefault(idx, data)
            assert prev == data, f"node {i} applied {data!r} at {idx}, another applied {prev!r}"
    assert len(c.leaders()) == 1
    assert len({c.nodes[i].raft.log.applied for i in c.ids}) == 1
    assert proposed > 0 and len(seen) > 10


@pytest.mark.parametrize("seed", range(4))
def test_safety_with_membership_changes(seed: int) -> None:
    """Random faults plus one-at-a-time membership changes: learners join with
    empty logs (via snapshots), get promoted, members get removed."""
    rng = random.Random(seed)
    c = Cluster([1, 2, 3], seed=seed)
    c.add_empty_node(4)
    c.add_empty_node(5)
    leaders_by_term: dict[int, int] = {}
    removed: set[int] = set()
    inflight: list[Message] = []
    proposed = 0
    for _ in range(1500):
        r = rng.random()
        members = [i for i in c.ids if i not in removed]
        if r < 0.02:
            c.isolate(rng.choice(members))
        elif r < 0.05:
            c.heal()
        elif r < 0.06:
            i = rng.choice(c.ids)
            c.restart(i, seed=rng.randrange(1000))
            for m in inflight:
                if m.to == i:
                    c.lost(m)
            inflight = [m for m in inflight if m.to != i]
        elif r < 0.07:
            i = rng.choice(c.ids)
            idx = c.applied_index.get(i, 0)
            st = c.storages[i]
            if idx > st.snapshot().metadata.index:
                st.create_snapshot(idx, c.nodes[i].status().conf_state, b"")
                st.compact(idx)
        elif r < 0.09:
            leaders = [i for i in members if c.nodes[i].state == StateType.LEADER]
            if leaders:
                ld = c.nodes[leaders[0]]
                cs = ld.status().conf_state
                choice = rng.random()
                cc = None
                joiners = [j for j in (4, 5) if j not in removed]
                if choice < 0.4 and joiners:
                    j = rng.choice(joiners)
                    kind = (
                        ConfChangeType.ADD_NODE
                        if j in cs.learners
                        else ConfChangeType.ADD_LEARNER_NODE
                    )
                    cc = ConfChange(kind, j)
                elif len(cs.voters) > 3:
                    victim = rng.choice(cs.voters)
                    cc = ConfChange(ConfChangeType.REMOVE_NODE, victim)
                    removed.add(victim)
                if cc is not None:
                    with contextlib.suppress(ProposalDroppedError):
                        ld.propose_conf_change(cc)
                        continue
                    if cc.type == ConfChangeType.REMOVE_NODE:
                        removed.discard(cc.node_id)
        elif r < 0.25:
            i = rng.choice(members)
            if c.nodes[i].lead:
                proposed += 1
                with contextlib.suppress(ProposalDroppedError):
                    c.nodes[i].propose(f"v{proposed}".encode())
        elif r < 0.6:
            for i in c.ids:
                c.nodes[i].tick()
        for i in c.ids:
            if c.nodes[i].has_ready():
                inflight.extend(c.handle_ready(i))
        rng.shuffle(inflight)
        keep: list[Message] = []
        for m in inflight:
            x = rng.random()
            if x < 0.1:
                c.lost(m)
            elif x < 0.3:
                keep.append(m)
            else:
                c.deliver([m])
        inflight = keep
        for i in c.ids:
            n = c.nodes[i]
            if n.state == StateType.LEADER:
                assert leaders_by_term.setdefault(n.term, i) == i
    for m in inflight:
        c.lost(m)
    c.heal()
    for _ in range(150):
        c.tick(1)
    seen: dict[int, bytes] = {}
    for i in c.ids:
        for idx, data in c.applied_log[i]:
            assert seen.setdefault(idx, data) == data, (i, idx)
    leaders = c.leaders()
    assert len(leaders) == 1
    cs = c.nodes[leaders[0]].status().conf_state
    final_members = set(cs.voters) | set(cs.learners)
    assert len({c.nodes[i].raft.log.applied for i in final_members}) == 1
    assert len(seen) > 10
