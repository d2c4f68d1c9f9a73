"""The storage seam between the Raft core and durable state.

Owns: the ``LogStorage`` protocol (the read side the core uses) and
``MemoryStorage``, an in-memory implementation holding what the application
has persisted: hard state, the latest snapshot and the entries after it.

Contracts:
- ``MemoryStorage`` keeps a dummy entry at position 0 whose index and term are
  those of the snapshot; entries ``first_index() .. last_index()`` follow it;
- ``term(i)`` is valid for ``first_index() - 1 .. last_index()``;
- entry sizes count the bytes of ``Entry.data`` only.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from raftkv.raft.errors import CompactedError, SnapOutOfDateError, UnavailableError
from raftkv.raft.types import (
    EMPTY_SNAPSHOT,
    ConfState,
    Entry,
    HardState,
    Snapshot,
    SnapshotMetadata,
)


class LogStorage(Protocol):
    """What the core reads; the application writes through its own methods."""

    def initial_state(self) -> tuple[HardState, ConfState]: ...

    def entries(self, lo: int, hi: int, max_size: int | None = None) -> list[Entry]: ...

    def term(self, index: int) -> int: ...

    def first_index(self) -> int: ...

    def last_index(self) -> int: ...

    def snapshot(self) -> Snapshot: ...


def limit_size(ents: list[Entry], max_size: int | None) -> list[Entry]:
    """Longest prefix of ``ents`` within ``max_size`` data bytes, never empty if ``ents`` is not."""
    if max_size is None or len(ents) <= 1:
        return ents
    size = len(ents[0].data)
    n = 1
    limit = len(ents)
    while n < limit:
        size += len(ents[n].data)
        if size > max_size:
            break
        n += 1
    return ents if n == limit else ents[:n]


class MemoryStorage:
    """In-memory ``LogStorage``; the durable view in tests and the simulator."""

    def __init__(self) -> None:
        self._hard_state = HardState()
        self._snapshot = EMPTY_SNAPSHOT
        # _ents[0] is a dummy entry carrying the snapshot's index and term.
        self._ents: list[Entry] = [Entry(term=0, index=0)]

    # -- read side (LogStorage) ---------------------------------------------

    def initial_state(self) -> tuple[HardState, ConfState]:
        return self._hard_state, self._snapshot.metadata.conf_state

    def hard_state(self) -> HardState:
        return self._hard_state

    def entries(self, lo: int, hi: int, max_size: int | None = None) -> list[Entry]:
        offset = self._ents[0].index
        if lo <= offset:
            raise CompactedError()
        last = offset + len(self._ents) - 1
        if hi > last + 1:
            raise AssertionError(f"entries' hi({hi}) is out of bound lastindex({last})")
        if len(self._ents) == 1:
            raise UnavailableError()
        return limit_size(self._ents[lo - offset : hi - offset], max_size)

    def term(self, index: int) -> int:
        offset = self._ents[0].index
        if index < offset:
            raise CompactedError()
        if index - offset >= len(self._ents):
            raise UnavailableError()
        return self._ents[index - offset].term

    def first_index(self) -> int:
        return self._ents[0].index + 1

    def last_index(self) -> int:
        return self._ents[0].index + len(self._ents) - 1

    def snapshot(self) -> Snapshot:
        return self._snapshot

    # -- write side (the application) ---------------------------------------

    def set_hard_state(self, hs: HardState) -> None:
        self._hard_state = hs

    def apply_snapshot(self, snap: Snapshot) -> None:
        """Replace the whole log by ``snap``; raises SnapOutOfDateError if not newer."""
        if self._snapshot.metadata.index >= snap.metadata.index:
            raise SnapOutOfDateError()
        self._snapshot = snap
        self._ents = [Entry(term=snap.metadata.term, index=snap.metadata.index)]

    def create_snapshot(self, index: int, cs: ConfState | None, data: bytes) -> Snapshot:
        """Record a snapshot of the application state at ``index`` (must be <= last_index)."""
        if index <= self._snapshot.metadata.index:
            raise SnapOutOfDateError()
        offset = self._ents[0].index
        last = offset + len(self._ents) - 1
        if index > last:
            raise AssertionError(f"snapshot {index} is out of bound lastindex({last})")
        conf_state = cs if cs is not None else self._snapshot.metadata.conf_state
        meta = SnapshotMetadata(
            index=index, term=self._ents[index - offset].term, conf_state=conf_state
        )
        self._snapshot = Snapshot(metadata=meta, data=data)
        return self._snapshot

    def compact(self, compact_index: int) -> None:
        """Discard entries before ``compact_index`` (which must be <= last_index)."""
        offset = self._ents[0].index
        if compact_index <= offset:
            raise CompactedError()
        last = offset + len(self._ents) - 1
        if compact_index > last:
            raise AssertionError(f"compact {compact_index} is out of bound lastindex({last})")
        i = compact_index - offset
        head = self._ents[i]
        rest = self._ents[i + 1 :]
        rest.insert(0, Entry(term=head.term, index=head.index))
        self._ents = rest

    def append(self, entries: Sequence[Entry]) -> None:
        """Append ``entries`` (contiguous), truncating any conflicting suffix first."""
        if not entries:
            return
        first = self.first_index()
        last_new = entries[0].index + len(entries) - 1
        if last_new < first:
            return  # entirely compacted away
        if first > entries[0].index:
            entries = entries[first - entries[0].index :]
        offset = entries[0].index - self._ents[0].index
        n = len(self._ents)
        if n > offset:
            del self._ents[offset:]
            self._ents.extend(entries)
        elif n == offset:
            self._ents.extend(entries)
        else:
            raise AssertionError(
                f"missing log entry [last: {self.last_index()}, append at: {entries[0].index}]"
            )
