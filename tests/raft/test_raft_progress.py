"""Unit tests of flow control (Inflights, Progress) and quorum arithmetic."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from raftkv.raft import ConfState
from raftkv.raft.progress import (
    Inflights,
    Progress,
    ProgressState,
    ProgressTracker,
    VoteResult,
)


def test_inflights_window() -> None:
    inf = Inflights(3)
    for i in (5, 7, 9):
        inf.add(i)
    assert inf.full() and inf.count() == 3
    with pytest.raises(AssertionError):
        inf.add(10)
    inf.free_le(6)
    assert inf.count() == 2 and not inf.full()
    inf.free_le(100)
    assert inf.count() == 0
    inf.add(11)
    inf.free_first_one()
    assert inf.count() == 0
    inf.add(12)
    with pytest.raises(AssertionError, match="in order"):
        inf.add(11)


def test_progress_maybe_update() -> None:
    pr = Progress(5, 10)
    pr.probe_sent = True
    assert pr.maybe_update(4)
    assert (pr.match, pr.next, pr.probe_sent) == (4, 5, False)
    assert not pr.maybe_update(3)
    assert pr.maybe_update(8)
    assert pr.next == 9


def test_progress_maybe_decr_to_probe() -> None:
    pr = Progress(10, 10)
    pr.match = 3
    # Stale rejection (not for next-1): ignored.
    assert not pr.maybe_decr_to(5, 4)
    # Rejection of 9 with a hint of 6: next = 7.
    pr.probe_sent = True
    assert pr.maybe_decr_to(9, 6)
    assert (pr.next, pr.probe_sent) == (7, False)
    # The hint never moves next above the rejected index, nor below 1.
    assert pr.maybe_decr_to(6, 100) and pr.next == 6
    pr.match = 0
    assert pr.maybe_decr_to(5, -5) and pr.next == 1


def test_progress_maybe_decr_to_replicate() -> None:
    pr = Progress(10, 10)
    pr.match = 5
    pr.become_replicate()
    pr.optimistic_update(12)
    assert not pr.maybe_decr_to(4, 0)  # below match: stale
    assert pr.maybe_decr_to(8, 0)
    assert pr.next == 6


def test_progress_paused_by_state() -> None:
    pr = Progress(1, 2)
    assert not pr.is_paused()
    pr.probe_sent = True
    assert pr.is_paused()
    pr.become_replicate()
    assert not pr.is_paused()
    pr.inflights.add(1)
    pr.inflights.add(2)
    assert pr.is_paused()
    pr.become_snapshot(10)
    assert pr.is_paused() and pr.state == ProgressState.SNAPSHOT


def test_become_probe_after_snapshot() -> None:
    pr = Progress(1, 2)
    pr.match = 3
    pr.become_snapshot(10)
    pr.become_probe()
    assert (pr.state, pr.next, pr.pending_snapshot) == (ProgressState.PROBE, 11, 0)
    pr.become_snapshot(10)
    pr.pending_snapshot = 0  # failed snapshot
    pr.become_probe()
    assert pr.next == 4
    assert "PROBE match=3 next=4" in repr(pr)


def _tracker(voters: list[int], learners: Sequence[int] = ()) -> ProgressTracker:
    t = ProgressTracker(10)
    for v in voters:
        t.add_voter(v, 1)
    for lrn in learners:
        t.add_learner(lrn, 1)
    return t


@pytest.mark.parametrize(
    ("matches", "want"),
    [
        ([5], 5),
        ([5, 3], 3),
        ([5, 3, 1], 3),
        ([9, 2, 7, 4], 4),
        ([1, 2, 3, 4, 5], 3),
        ([8, 8, 1, 1, 1], 1),
    ],
)
def test_committed_is_quorum_match(matches: list[int], want: int) -> None:
    t = _tracker(list(range(1, len(matches) + 1)))
    for i, m in enumerate(matches, start=1):
        t.progress[i].match = m
    assert t.committed() == want


def test_learners_do_not_count() -> None:
    t = _tracker([1, 2, 3], learners=[4, 5])
    for i, m in zip((1, 2, 3, 4, 5), (9, 1, 1, 9, 9), strict=True):
        t.progress[i].match = m
    assert t.committed() == 1
    assert t.conf_state() == ConfState(voters=(1, 2, 3), learners=(4, 5))
    assert not t.add_learner(1, 1)
    t.add_voter(4, 1)  # promotion keeps the progress
    assert t.progress[4].match == 9 and not t.progress[4].is_learner
    # Voters 1-4 with matches 9, 1, 1, 9: a quorum of 3 has only reached 1.
    assert t.committed() == 1
    t.progress[2].match = 5
    assert t.committed() == 5


def test_remove_shrinks_quorum() -> None:
    t = _tracker([1, 2, 3])
    t.progress[1].match = 7
    t.progress[2].match = 2
    t.progress[3].match = 1
    assert t.committed() == 2
    t.remove(3)
    t.remove(2)
    assert t.committed() == 7 and t.quorum() == 1 and t.is_singleton()
    assert _tracker([]).committed() == 0


@pytest.mark.parametrize(
    ("voters", "votes", "want"),
    [
        ([1], {1: True}, VoteResult.WON),
        ([1, 2, 3], {1: True}, VoteResult.PENDING),
        ([1, 2, 3], {1: True, 2: True}, VoteResult.WON),
        ([1, 2, 3], {1: True, 2: False}, VoteResult.PENDING),
        ([1, 2, 3], {1: True, 2: False, 3: False}, VoteResult.LOST),
        ([1, 2, 3, 4], {1: True, 2: True, 3: False}, VoteResult.PENDING),
        ([1, 2, 3, 4], {1: True, 2: False, 3: False}, VoteResult.LOST),
    ],
)
def test_tally_votes(voters: list[int], votes: dict[int, bool], want: VoteResult) -> None:
    t = _tracker(voters, learners=[9])
    for v, g in votes.items():
        t.record_vote(v, g)
    t.record_vote(9, True)  # a learner's vote never counts
    assert t.tally_votes()[2] == want


def test_first_vote_counts() -> None:
    t = _tracker([1, 2, 3])
    t.record_vote(2, False)
    t.record_vote(2, True)
    assert t.tally_votes() == (0, 1, VoteResult.PENDING)


def test_quorum_active() -> None:
    t = _tracker([1, 2, 3], learners=[4])
    for pr in t.progress.values():
        pr.recent_active = False
    t.progress[1].recent_active = True
    t.progress[4].recent_active = True
    assert not t.quorum_active()
    t.progress[3].recent_active = True
    assert t.quorum_active()
