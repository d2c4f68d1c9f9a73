"""Smoke tests of the RawNode API: election, replication, ready/advance."""

from __future__ import annotations

import pytest

from raftkv.raft import NONE, ProposalDroppedError, StateType
from tests.raft.raft_cluster import Cluster


def test_three_nodes_elect_and_replicate() -> None:
    c = Cluster([1, 2, 3])
    c.elect(1)
    assert [c.nodes[i].lead for i in c.ids] == [1, 1, 1]
    c.nodes[1].propose(b"a")
    c.nodes[2].propose(b"b")  # forwarded to the leader
    c.stabilize()
    assert all(c.applied[i] == [b"a", b"b"] for i in c.ids)
    st = c.nodes[1].status()
    assert st.hard_state.commit == 4  # bootstrap 1, empty leader entry 2, a 3, b 4
    assert st.progress[2].match == 4


def test_election_happens_by_ticking() -> None:
    c = Cluster([1, 2, 3], seed=3)
    c.tick(30)
    assert len(c.leaders()) == 1
    leader = c.leaders()[0]
    assert all(c.nodes[i].lead == leader for i in c.ids)


def test_propose_without_leader_is_dropped() -> None:
    c = Cluster([1, 2, 3])
    assert c.nodes[1].lead == NONE
    with pytest.raises(ProposalDroppedError):
        c.nodes[1].propose(b"x")


def test_single_node_commits_after_persisting() -> None:
    c = Cluster([1])
    c.nodes[1].campaign()
    assert c.nodes[1].state == StateType.LEADER
    c.stabilize()
    c.nodes[1].propose(b"x")
    rd = c.nodes[1].ready()
    # The leader counts its own entry only once it is persisted.
    assert [e.data for e in rd.entries] == [b"x"]
    assert rd.committed_entries == ()
    c.storages[1].append(rd.entries)
    c.nodes[1].advance(rd)
    rd = c.nodes[1].ready()
    assert [e.data for e in rd.committed_entries] == [b"x"]
    c.nodes[1].advance(rd)
    assert not c.nodes[1].has_ready()
