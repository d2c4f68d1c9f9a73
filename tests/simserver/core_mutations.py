"""Deliberate bugs injected into the Raft core at run time, to prove the server simulator (and
the core's unit tests) catch them.

Owns: ``MUTATIONS`` (name -> description and patch) and ``mutation(name)``, a
context manager that monkeypatches the core in this process only and restores
it on exit.  Nothing under ``src/`` is ever edited.

Each mutation breaks one rule of the Raft paper:
- ``commit-prev-term``: the leader commits an entry of a previous term by
  counting replicas (§5.4.2, Figure 8);
- ``vote-no-uptodate``: votes are granted without the log up-to-date check (§5.4.1);
- ``commit-minority``: the commit index is the highest match of any voter
  instead of a quorum's;
- ``read-index-no-quorum``: the leader answers ReadIndex at once, without a
  heartbeat round confirming it still leads (stale reads from a deposed leader);
- ``read-index-before-commit``: a fresh leader answers ReadIndex before it has
  committed an entry of its own term (its commit index may be stale).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from raftkv.raft import leader as leader_mod
from raftkv.raft.log import RaftLog
from raftkv.raft.progress import ProgressTracker

Patch = list[tuple[Any, str, Any]]
"""(owner, attribute, replacement) triples."""


def _commit_prev_term() -> Patch:
    def maybe_commit(self: RaftLog, max_index: int, term: int) -> bool:
        if max_index > self.committed:
            self.commit_to(max_index)
            return True
        return False

    return [(RaftLog, "maybe_commit", maybe_commit)]


def _vote_no_uptodate() -> Patch:
    def is_up_to_date(self: RaftLog, last_index: int, term: int) -> bool:
        return True

    return [(RaftLog, "is_up_to_date", is_up_to_date)]


def _commit_minority() -> Patch:
    def committed(self: ProgressTracker) -> int:
        if not self.voters:
            return 0
        return max(self.progress[v].match for v in self.voters)

    return [(ProgressTracker, "committed", committed)]


def _read_index_no_quorum() -> Patch:
    def send_read_index_response(r: Any, m: Any) -> None:
        leader_mod._respond_read_index(r, m, r.log.committed)

    return [(leader_mod, "_send_read_index_response", send_read_index_response)]


def _read_index_before_commit() -> Patch:
    def committed_entry_in_current_term(r: Any) -> bool:
        return True

    return [(leader_mod, "committed_entry_in_current_term", committed_entry_in_current_term)]


@dataclass(frozen=True)
class Mutation:
    description: str
    patch: Callable[[], Patch]


MUTATIONS: dict[str, Mutation] = {
    "commit-prev-term": Mutation(
        "leader commits previous-term entries by count", _commit_prev_term
    ),
    "vote-no-uptodate": Mutation(
        "votes granted without the log up-to-date check", _vote_no_uptodate
    ),
    "commit-minority": Mutation("commit index = highest match, not a quorum's", _commit_minority),
    "read-index-no-quorum": Mutation(
        "ReadIndex answered without a heartbeat round", _read_index_no_quorum
    ),
    "read-index-before-commit": Mutation(
        "ReadIndex answered before the leader commits in its term", _read_index_before_commit
    ),
}


@contextmanager
def patched(patches: Patch) -> Iterator[None]:
    """Apply ``patches`` for the duration of the block, then restore what they replaced."""
    saved = [(owner, attr, owner.__dict__[attr]) for owner, attr, _ in patches]
    try:
        for owner, attr, new in patches:
            setattr(owner, attr, new)
        yield
    finally:
        for owner, attr, old in reversed(saved):
            setattr(owner, attr, old)


@contextmanager
def named_mutation(table: dict[str, Mutation], name: str | None) -> Iterator[None]:
    """Apply ``table[name]`` (None: nothing) for the duration of the block."""
    if name is None:
        yield
        return
    with patched(table[name].patch()):
        yield


def mutation(name: str | None) -> contextlib.AbstractContextManager[None]:
    """Apply the core mutation ``name`` (None: nothing) for the duration of the block."""
    return named_mutation(MUTATIONS, name)
