"""The leader's view of each follower and quorum arithmetic.

Owns: ``ProgressState``, ``Inflights`` (bounded window of in-flight MsgApp),
``Progress`` (match/next and the probe/replicate/snapshot flow-control state
machine) and ``ProgressTracker`` (voters, learners, commit index, vote tally,
check-quorum activity).

Contracts:
- ``match < next`` always; ``match`` only grows while a Progress lives;
- learners have a Progress (they receive the log) but never count in a quorum;
- quorum is a strict majority of voters.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from enum import IntEnum

from raftkv.raft.types import ConfState


class ProgressState(IntEnum):
    PROBE = 0
    REPLICATE = 1
    SNAPSHOT = 2


class VoteResult(IntEnum):
    PENDING = 0
    LOST = 1
    WON = 2


class Inflights:
    """Last indices of the MsgApp sent but not yet acknowledged, oldest first."""

    __slots__ = ("_buf", "size")

    def __init__(self, size: int) -> None:
        self.size = size
        self._buf: deque[int] = deque()

    def add(self, index: int) -> None:
        if len(self._buf) >= self.size:
            raise AssertionError("cannot add into a full inflights")
        if self._buf and index <= self._buf[-1]:
            raise AssertionError("inflights must be added in order")
        self._buf.append(index)

    def free_le(self, to: int) -> None:
        """Release every in-flight message whose last index is <= ``to``."""
        buf = self._buf
        while buf and buf[0] <= to:
            buf.popleft()

    def free_first_one(self) -> None:
        if self._buf:
            self._buf.popleft()

    def full(self) -> bool:
        return len(self._buf) >= self.size

    def count(self) -> int:
        return len(self._buf)

    def reset(self) -> None:
        self._buf.clear()


class Progress:
    """Replication state of one peer as seen by the leader."""

    __slots__ = (
        "inflights",
        "is_learner",
        "match",
        "next",
        "pending_snapshot",
        "probe_sent",
        "recent_active",
        "sent_commit",
        "state",
    )

    def __init__(self, next_index: int, max_inflight: int, is_learner: bool = False) -> None:
        self.match = 0
        self.next = next_index
        self.state = ProgressState.PROBE
        self.probe_sent = False
        self.pending_snapshot = 0
        self.recent_active = False
        self.sent_commit = 0  # highest commit index sent in a MsgApp
        self.is_learner = is_learner
        self.inflights = Inflights(max_inflight)

    def __repr__(self) -> str:
        s = f"{self.state.name} match={self.match} next={self.next}"
        if self.is_learner:
            s += " learner"
        if self.is_paused():
            s += " paused"
        if self.pending_snapshot:
            s += f" pendingSnap={self.pending_snapshot}"
        if not self.recent_active:
            s += " inactive"
        if self.inflights.count():
            s += f" inflight={self.inflights.count()}"
            if self.inflights.full():
                s += "[full]"
        return s

    def _reset_state(self, state: ProgressState) -> None:
        self.probe_sent = False
        self.pending_snapshot = 0
        self.state = state
        self.inflights.reset()

    def become_probe(self) -> None:
        if self.state == ProgressState.SNAPSHOT:
            pending = self.pending_snapshot
            self._reset_state(ProgressState.PROBE)
            self.next = max(self.match + 1, pending + 1)
        else:
            self._reset_state(ProgressState.PROBE)
            self.next = self.match + 1

    def become_replicate(self) -> None:
        self._reset_state(ProgressState.REPLICATE)
        self.next = self.match + 1

    def become_snapshot(self, snapshot_index: int) -> None:
        self._reset_state(ProgressState.SNAPSHOT)
        self.pending_snapshot = snapshot_index

    def maybe_update(self, n: int) -> bool:
        """Record an acknowledgement of index ``n``; True if ``match`` advanced."""
        updated = False
        if self.match < n:
            self.match = n
            updated = True
            self.probe_sent = False
        if self.next < n + 1:
            self.next = n + 1
        return updated

    def optimistic_update(self, n: int) -> None:
        self.next = n + 1

    def maybe_decr_to(self, rejected: int, match_hint: int) -> bool:
        """Handle a rejection of the MsgApp at ``rejected``; False if the rejection is stale."""
        if self.state == ProgressState.REPLICATE:
            if rejected <= self.match:
                return False
            self.next = self.match + 1
            return True
        if self.next - 1 != rejected:
            return False
        self.next = max(min(rejected, match_hint + 1), 1)
        self.probe_sent = False
        return True

    def is_paused(self) -> bool:
        if self.state == ProgressState.PROBE:
            return self.probe_sent
        if self.state == ProgressState.REPLICATE:
            return self.inflights.full()
        return True


@dataclass(frozen=True, slots=True)
class ProgressStatus:
    """Immutable snapshot of a Progress for ``RawNode.status()``."""

    match: int
    next: int
    state: ProgressState
    is_learner: bool
    recent_active: bool
    paused: bool
    pending_snapshot: int
    inflight: int


class ProgressTracker:
    """Membership (voters, learners) and one Progress per member."""

    def __init__(self, max_inflight: int) -> None:
        self.max_inflight = max_inflight
        self.voters: set[int] = set()
        self.learners: set[int] = set()
        self.progress: dict[int, Progress] = {}
        self.votes: dict[int, bool] = {}

    def conf_state(self) -> ConfState:
        return ConfState(voters=tuple(sorted(self.voters)), learners=tuple(sorted(self.learners)))

    def quorum(self) -> int:
        return len(self.voters) // 2 + 1

    def is_singleton(self) -> bool:
        return len(self.voters) == 1

    def ids(self) -> list[int]:
        return sorted(self.progress)

    def voter_ids(self) -> list[int]:
        return sorted(self.voters)

    def add_voter(self, node_id: int, next_index: int) -> None:
        """Add a voter or promote a learner."""
        if node_id in self.learners:
            self.learners.discard(node_id)
            self.progress[node_id].is_learner = False
        elif node_id not in self.voters:
            pr = Progress(next_index, self.max_inflight)
            pr.recent_active = True
            self.progress[node_id] = pr
        self.voters.add(node_id)

    def add_learner(self, node_id: int, next_index: int) -> bool:
        """Add a learner; False (no change) if ``node_id`` is already a voter or learner."""
        if node_id in self.voters or node_id in self.learners:
            return False
        pr = Progress(next_index, self.max_inflight, is_learner=True)
        pr.recent_active = True
        self.progress[node_id] = pr
        self.learners.add(node_id)
        return True

    def remove(self, node_id: int) -> None:
        self.voters.discard(node_id)
        self.learners.discard(node_id)
        self.progress.pop(node_id, None)
        self.votes.pop(node_id, None)

    def committed(self) -> int:
        """Largest index acknowledged by a quorum of voters (0 without voters)."""
        if not self.voters:
            return 0
        prs = self.progress
        matches = sorted((prs[v].match for v in self.voters), reverse=True)
        return matches[self.quorum() - 1]

    def quorum_active(self) -> bool:
        """Whether a quorum of voters was recently active (the caller counts itself active)."""
        prs = self.progress
        active = sum(1 for v in self.voters if prs[v].recent_active)
        return active >= self.quorum()

    def reset_votes(self) -> None:
        self.votes = {}

    def record_vote(self, node_id: int, granted: bool) -> None:
        """First vote from each node counts; later ones are ignored."""
        if node_id not in self.votes:
            self.votes[node_id] = granted

    def tally_votes(self) -> tuple[int, int, VoteResult]:
        granted = rejected = 0
        for v in self.voters:
            res = self.votes.get(v)
            if res is None:
                continue
            if res:
                granted += 1
            else:
                rejected += 1
        q = self.quorum()
        if granted >= q:
            return granted, rejected, VoteResult.WON
        if rejected > len(self.voters) - q:
            return granted, rejected, VoteResult.LOST
        return granted, rejected, VoteResult.PENDING
