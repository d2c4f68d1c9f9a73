"""The Raft log: durable entries in storage followed by an unstable tail.

Owns: ``Unstable`` (entries and at most one snapshot not yet persisted) and
``RaftLog`` (commit, applying and applied indices, conflict detection, slicing
across the storage/unstable boundary).

Contracts:
- ``applied <= applying <= committed <= last_index()`` at all times; violating
  it crashes; ``applying`` is the last index handed to the application in a
  Ready, ``applied`` the last one it acknowledged with ``advance``;
- entries below ``unstable.offset`` live in storage, the others in
  ``unstable.entries`` (``entries[i]`` has index ``offset + i``);
- a committed entry is never truncated (an attempt crashes).
"""

from __future__ import annotations

from raftkv.raft.errors import CompactedError, UnavailableError
from raftkv.raft.storage import LogStorage, limit_size
from raftkv.raft.types import Entry, Snapshot


class Unstable:
    """Entries (and possibly a snapshot) the application has not persisted yet."""

    __slots__ = ("entries", "offset", "snapshot")

    def __init__(self, offset: int) -> None:
        self.snapshot: Snapshot | None = None
        self.entries: list[Entry] = []
        self.offset = offset

    def maybe_first_index(self) -> int | None:
        if self.snapshot is not None:
            return self.snapshot.metadata.index + 1
        return None

    def maybe_last_index(self) -> int | None:
        if self.entries:
            return self.offset + len(self.entries) - 1
        if self.snapshot is not None:
            return self.snapshot.metadata.index
        return None

    def maybe_term(self, i: int) -> int | None:
        if i < self.offset:
            snap = self.snapshot
            if snap is not None and snap.metadata.index == i:
                return snap.metadata.term
            return None
        last = self.maybe_last_index()
        if last is None or i > last:
            return None
        return self.entries[i - self.offset].term

    def stable_to(self, i: int, t: int) -> None:
        """Entries up to ``i`` (of term ``t``) are persisted; ignored if they were replaced."""
        gt = self.maybe_term(i)
        if gt is None or gt != t or i < self.offset:
            return
        del self.entries[: i + 1 - self.offset]
        self.offset = i + 1

    def stable_snap_to(self, i: int) -> None:
        if self.snapshot is not None and self.snapshot.metadata.index == i:
            self.snapshot = None

    def restore(self, snap: Snapshot) -> None:
        self.offset = snap.metadata.index + 1
        self.entries = []
        self.snapshot = snap

    def truncate_and_append(self, ents: list[Entry]) -> None:
        after = ents[0].index
        if after == self.offset + len(self.entries):
            self.entries.extend(ents)
        elif after <= self.offset:
            # The log is replaced from ``after`` on, including already-stable entries.
            self.offset = after
            self.entries = list(ents)
        else:
            del self.entries[after - self.offset :]
            self.entries.extend(ents)

    def slice(self, lo: int, hi: int) -> list[Entry]:
        upper = self.offset + len(self.entries)
        if not (self.offset <= lo <= hi <= upper):
            raise AssertionError(f"unstable.slice[{lo},{hi}) out of bound [{self.offset},{upper}]")
        return self.entries[lo - self.offset : hi - self.offset]


class RaftLog:
    """Storage plus unstable tail, with commit and applied indices."""

    def __init__(self, storage: LogStorage, max_next_ents_size: int) -> None:
        self.storage = storage
        self.max_next_ents_size = max_next_ents_size
        first = storage.first_index()
        last = storage.last_index()
        self.unstable = Unstable(last + 1)
        self.committed = first - 1
        self.applying = first - 1
        self.applied = first - 1

    def __repr__(self) -> str:
        return (
            f"committed={self.committed}, applied={self.applied}, applying={self.applying}, "
            f"unstable.offset={self.unstable.offset}, len(unstable.entries)={len(self.unstable.entries)}"
        )

    # -- indices and terms ------------------------------------------------------

    def first_index(self) -> int:
        i = self.unstable.maybe_first_index()
        if i is not None:
            return i
        return self.storage.first_index()

    def last_index(self) -> int:
        i = self.unstable.maybe_last_index()
        if i is not None:
            return i
        return self.storage.last_index()

    def term(self, i: int) -> int:
        """Term of entry ``i``; 0 beyond the last index; CompactedError below first_index-1."""
        u = self.unstable
        if u.entries and u.offset <= i < u.offset + len(u.entries):
            return u.entries[i - u.offset].term
        dummy = self.first_index() - 1
        if i < dummy:
            raise CompactedError()
        if i > self.last_index():
            return 0
        t = u.maybe_term(i)
        if t is not None:
            return t
        try:
            return self.storage.term(i)
        except UnavailableError:
            return 0

    def zero_term_on_compacted(self, i: int) -> int:
        try:
            return self.term(i)
        except CompactedError:
            return 0

    def last_term(self) -> int:
        return self.term(self.last_index())

    def match_term(self, i: int, t: int) -> bool:
        try:
            return self.term(i) == t
        except CompactedError:
            return False

    def is_up_to_date(self, last_index: int, term: int) -> bool:
        """Whether a log ending at (term, last_index) is at least as up to date as ours (§5.4.1)."""
        lt = self.last_term()
        return term > lt or (term == lt and last_index >= self.last_index())

    # -- appending ----------------------------------------------------------------

    def maybe_append(
        self, index: int, log_term: int, committed: int, ents: tuple[Entry, ...]
    ) -> int:
        """Append ``ents`` after (index, log_term) if it matches; returns the new last index or -1."""
        if not self.match_term(index, log_term):
            return -1
        last_new = index + len(ents)
        ci = self.find_conflict(ents)
        if ci:
            if ci <= self.committed:
                raise AssertionError(
                    f"entry {ci} conflict with committed entry [committed({self.committed})]"
                )
            self.append(list(ents[ci - index - 1 :]))
        self.commit_to(min(committed, last_new))
        return last_new

    def append(self, ents: list[Entry]) -> int:
        if not ents:
            return self.last_index()
        after = ents[0].index - 1
        if after < self.committed:
            raise AssertionError(f"after({after}) is out of range [committed({self.committed})]")
        self.unstable.truncate_and_append(ents)
        return self.last_index()

    def find_conflict(self, ents: tuple[Entry, ...]) -> int:
        """Index of the first entry whose term differs from ours (or that we lack); 0 if none."""
        for e in ents:
            if not self.match_term(e.index, e.term):
                return e.index
        return 0

    def find_conflict_by_term(self, index: int, term: int) -> tuple[int, int]:
        """Largest index <= ``index`` whose term is <= ``term``, with that term.

        Used by both sides of a rejected MsgApp to skip a whole term of
        divergent entries per round trip.
        """
        while index > 0:
            try:
                our = self.term(index)
            except CompactedError:
                return index, 0
            if our <= term:
                return index, our
            index -= 1
        return 0, 0

    # -- commit and apply ---------------------------------------------------------

    def commit_to(self, to_commit: int) -> None:
        if self.committed < to_commit:
            last = self.last_index()
            if last < to_commit:
                raise AssertionError(
                    f"tocommit({to_commit}) is out of range [lastIndex({last})]. "
                    "Was the raft log corrupted, truncated, or lost?"
                )
            self.committed = to_commit

    def maybe_commit(self, max_index: int, term: int) -> bool:
        """Commit up to ``max_index`` only if that entry is of ``term`` (§5.4.2)."""
        if max_index > self.committed and self.zero_term_on_compacted(max_index) == term:
            self.commit_to(max_index)
            return True
        return False

    def applied_to(self, i: int) -> None:
        if i == 0:
            return
        if not (self.applied <= i <= self.committed):
            raise AssertionError(
                f"applied({i}) is out of range [prevApplied({self.applied}), committed({self.committed})]"
            )
        self.applied = i
        if self.applying < i:
            self.applying = i

    def accept_applying(self, i: int) -> None:
        """Entries up to ``i`` were handed to the application (and are not yet applied)."""
        if not (self.applying <= i <= self.committed):
            raise AssertionError(
                f"applying({i}) is out of range [prevApplying({self.applying}), "
                f"committed({self.committed})]"
            )
        self.applying = i

    def is_applying(self) -> bool:
        """Whether committed entries handed out in a Ready are still being applied."""
        return self.applying > self.applied

    def stable_to(self, i: int, t: int) -> None:
        self.unstable.stable_to(i, t)

    def stable_snap_to(self, i: int) -> None:
        self.unstable.stable_snap_to(i)

    def persisted_index(self) -> int:
        """Highest index known to be in storage (0 while a snapshot is pending)."""
        if self.unstable.snapshot is not None:
            return 0
        return self.unstable.offset - 1

    # -- reading --------------------------------------------------------------------

    def unstable_entries(self) -> list[Entry]:
        return self.unstable.entries

    def has_next_ents(self) -> bool:
        return self.committed + 1 > max(self.applying + 1, self.first_index())

    def next_ents(self) -> list[Entry]:
        """Committed entries not yet handed out, at most ``max_next_ents_size`` bytes (>= 1 entry)."""
        off = max(self.applying + 1, self.first_index())
        if self.committed + 1 > off:
            return self.slice(off, self.committed + 1, self.max_next_ents_size)
        return []

    def snapshot(self) -> Snapshot:
        if self.unstable.snapshot is not None:
            return self.unstable.snapshot
        return self.storage.snapshot()

    def entries(self, i: int, max_size: int | None) -> list[Entry]:
        if i > self.last_index():
            return []
        return self.slice(i, self.last_index() + 1, max_size)

    def slice(self, lo: int, hi: int, max_size: int | None) -> list[Entry]:
        """Entries [lo, hi) within ``max_size`` bytes; CompactedError if lo was compacted."""
        if lo > hi:
            raise AssertionError(f"invalid slice {lo} > {hi}")
        fi = self.first_index()
        if lo < fi:
            raise CompactedError()
        length = self.last_index() + 1 - fi
        if hi > fi + length:
            raise AssertionError(f"slice[{lo},{hi}) out of bound [{fi},{self.last_index()}]")
        if lo == hi:
            return []
        u_off = self.unstable.offset
        ents: list[Entry] = []
        if lo < u_off:
            try:
                stored = self.storage.entries(lo, min(hi, u_off), max_size)
            except UnavailableError as err:
                raise AssertionError(
                    f"entries[{lo}:{min(hi, u_off)}) is unavailable from storage"
                ) from err
            # A short read means the size limit was hit: do not go on into unstable.
            if len(stored) < min(hi, u_off) - lo:
                return stored
            ents = stored
        if hi > u_off:
            tail = self.unstable.slice(max(lo, u_off), hi)
            ents = ents + tail if ents else tail
        return limit_size(ents, max_size)

    def restore(self, snap: Snapshot) -> None:
        """Replace the log by ``snap`` (newer than the commit index; no apply in flight)."""
        if self.is_applying():
            raise AssertionError(
                f"restore of snapshot {snap.metadata.index} while entries "
                f"({self.applied}, {self.applying}] are being applied"
            )
        self.committed = snap.metadata.index
        self.unstable.restore(snap)
