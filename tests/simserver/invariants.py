"""Safety invariants of Raft, checked on every durable Ready of every simulated member.

Owns: ``SafetyMonitor`` and ``Violation``.  The monitor sees only what a member made durable
(its ``MemoryStorage`` after each Ready it persisted: ``MemberEnvironment.ready_observer``),
what it handed to apply, and its role, and raises ``Violation`` at the first breach of:

- election safety: at most one leader per term;
- log matching: the same (index, term) in two durable logs means the same data
  and the same term at index - 1 (hence, by induction, identical prefixes);
- committed entries never change: a global map index -> (term, data) is fed by
  every member's durable commit index and by every entry handed to apply as committed;
- leader completeness: once a leader of term T has persisted its own first
  entry, its durable log holds every entry committed in a term below T.

State machine safety (equal states at equal indexes) is the guard's and the state hash's, which
the simulation checks on the members' own digests.
"""

from __future__ import annotations

from collections.abc import Iterable

from raftkv.raft.errors import CompactedError, UnavailableError
from raftkv.raft.storage import MemoryStorage
from raftkv.raft.types import Entry, Snapshot


class Violation(Exception):
    """A safety property was broken; the message names it and the nodes involved."""


class SafetyMonitor:
    def __init__(self) -> None:
        self.leaders: dict[int, int] = {}
        self.log_entries: dict[tuple[int, int], tuple[bytes, int, int]] = {}
        self.committed: dict[int, tuple[int, bytes]] = {}
        self.committed_by: dict[int, int] = {}
        self.checked_commit: dict[int, int] = {}
        self.completeness_checked: set[tuple[int, int]] = set()
        self.max_commit = 0

    # -- election safety --------------------------------------------------

    def on_leader(self, node: int, term: int) -> None:
        prev = self.leaders.setdefault(term, node)
        if prev != node:
            raise Violation(
                f"election safety: nodes {prev:x} and {node:x} both leader in term {term}"
            )

    # -- log matching -----------------------------------------------------

    def on_durable_entries(
        self, node: int, entries: Iterable[Entry], storage: MemoryStorage
    ) -> None:
        for e in entries:
            if e.index < storage.first_index():
                continue  # compacted away by a later snapshot in the same write
            try:
                if storage.term(e.index) != e.term:
                    continue  # overwritten later in the same write
                prev_term = storage.term(e.index - 1)
            except (CompactedError, UnavailableError):
                continue
            seen = self.log_entries.setdefault((e.index, e.term), (e.data, prev_term, node))
            if seen[0] != e.data or seen[1] != prev_term:
                raise Violation(
                    f"log matching: entry ({e.index}, term {e.term}) on node {node:x} has "
                    f"data={e.data[:40]!r} prev_term={prev_term}, node {seen[2]:x} has "
                    f"data={seen[0][:40]!r} prev_term={seen[1]}"
                )

    # -- committed entries --------------------------------------------------

    def _commit(self, node: int, index: int, term: int, data: bytes, how: str) -> None:
        seen = self.committed.get(index)
        if seen is None:
            self.committed[index] = (term, data)
            self.committed_by[index] = node
            self.max_commit = max(self.max_commit, index)
        elif seen != (term, data):
            raise Violation(
                f"committed entry changed: index {index} committed as term {seen[0]} "
                f"data={seen[1][:40]!r} by node {self.committed_by[index]:x}, but node {node:x} "
                f"{how} term {term} data={data[:40]!r}"
            )

    def on_durable_commit(self, node: int, commit: int, storage: MemoryStorage) -> None:
        """``commit`` is the commit index the node just persisted in its hard state."""
        start = max(self.checked_commit.get(node, 0), storage.first_index() - 1)
        if commit <= start:
            return
        if commit > storage.last_index():
            raise Violation(
                f"node {node:x} persisted commit index {commit} beyond its durable log "
                f"(last index {storage.last_index()})"
            )
        for e in storage.entries(start + 1, commit + 1):
            self._commit(node, e.index, e.term, e.data, "persisted as committed")
        self.checked_commit[node] = commit

    def on_committed_entries(self, node: int, entries: Iterable[Entry]) -> None:
        for e in entries:
            self._commit(node, e.index, e.term, e.data, "applied")

    def on_snapshot(self, node: int, snap: Snapshot) -> None:
        meta = snap.metadata
        seen = self.committed.get(meta.index)
        if seen is not None and seen[0] != meta.term:
            raise Violation(
                f"node {node:x} got snapshot at index {meta.index} term {meta.term}, "
                f"but that index was committed in term {seen[0]}"
            )

    # -- leader completeness ----------------------------------------------

    def on_leader_persisted(self, node: int, term: int, storage: MemoryStorage) -> None:
        """Called after each durable write of a node that is leader of ``term``."""
        if (node, term) in self.completeness_checked:
            return
        last = storage.last_index()
        if storage.term(last) != term:
            return  # its first entry of this term is not durable yet
        self.completeness_checked.add((node, term))
        low = storage.first_index() - 1
        for index, (cterm, _) in self.committed.items():
            if cterm >= term or index < low:
                continue
            have = storage.term(index) if index <= last else None
            if have != cterm:
                raise Violation(
                    f"leader completeness: node {node:x}, leader of term {term}, lacks entry "
                    f"{index} committed in term {cterm} (its log has term {have})"
                )
