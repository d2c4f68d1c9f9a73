"""The simulated disk of one node: what is durable, what is still in flight.

Owns: ``SimDisk`` — a ``MemoryStorage`` that is the durable view (exactly what
survives a crash) plus at most one write in flight (the records of one Ready).

Contracts:
- a Ready's records are written in WAL order: snapshot, entries, hard state;
  the snapshot record carries a hard state with ``commit`` raised to the
  snapshot's index (and the Ready's term and vote), so no crash leaves a durable
  snapshot above the durable commit index (etcd instead ignores, on restart,
  snapshots above the WAL's last commit: ``wal.ValidSnapshotEntries``); records
  become durable (and visible in ``storage``) only when ``sync()`` runs,
  i.e. when the simulated fsync completes;
- ``crash()`` drops the write in flight; with a torn write a strict prefix of
  its records survives (the WAL repair keeps the intact prefix), never a
  reordering and never a later record without the earlier ones;
- local state-machine snapshots and compaction are atomic and immediately
  durable (a snapshot file is written then renamed); ``local`` is the newest state-machine
  snapshot (what a restart recovers from), ``candidates`` the local snapshots not yet handed
  to Raft: the Raft snapshot in ``storage`` (what the node ships to peers, and the point its
  log is compacted to) trails them until the consistency guard confirmed the state
  (``SimNode.promote_snapshot``), like etcd's backend running ahead of its raft snapshot.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from raftkv.raft.storage import MemoryStorage
from raftkv.raft.types import Entry, HardState, Ready, Snapshot


@dataclass(frozen=True, slots=True)
class Record:
    """One WAL record: a snapshot (with the Ready's hard state, if any), an entry or a hard state."""

    snapshot: Snapshot | None = None
    entry: Entry | None = None
    hard_state: HardState | None = None


@dataclass(frozen=True, slots=True)
class Persisted:
    """What a write made durable, for the safety monitor."""

    snapshot: Snapshot | None
    entries: tuple[Entry, ...]
    hard_state: HardState | None


class SimDisk:
    def __init__(self) -> None:
        self.storage = MemoryStorage()
        self.in_flight: tuple[Record, ...] = ()
        self.local: Snapshot | None = None
        self.candidates: list[Snapshot] = []  # increasing index, all above storage's snapshot

    def recovery_snapshot(self) -> Snapshot:
        """What a restart rebuilds the state machine from: the newer of ``local`` and Raft's
        (a torn write may have made an installed snapshot durable in the log alone)."""
        raft = self.storage.snapshot()
        local = self.local
        return local if local is not None and local.metadata.index >= raft.metadata.index else raft

    @staticmethod
    def records_of(rd: Ready) -> tuple[Record, ...]:
        recs: list[Record] = []
        if not rd.snapshot.is_empty():
            recs.append(Record(snapshot=rd.snapshot, hard_state=rd.hard_state))
        recs.extend(Record(entry=e) for e in rd.entries)
        if rd.hard_state is not None:
            recs.append(Record(hard_state=rd.hard_state))
        return tuple(recs)

    def write(self, rd: Ready) -> bool:
        """Start writing the Ready's records; False when there is nothing to persist."""
        assert not self.in_flight, "one write in flight at a time"
        self.in_flight = self.records_of(rd)
        return bool(self.in_flight)

    def sync(self) -> Persisted:
        """The fsync completed: make the write in flight durable."""
        recs, self.in_flight = self.in_flight, ()
        return self._persist(recs)

    def crash(self, rng: random.Random, torn_probability: float) -> Persisted | None:
        """Lose the write in flight, or keep a strict prefix of it (torn write)."""
        recs, self.in_flight = self.in_flight, ()
        if not recs or rng.random() >= torn_probability:
            return None
        keep = rng.randrange(len(recs))
        return self._persist(recs[:keep]) if keep else None

    def _persist(self, recs: tuple[Record, ...]) -> Persisted:
        snap: Snapshot | None = None
        entries: list[Entry] = []
        hs: HardState | None = None
        for rec in recs:
            if rec.snapshot is not None:
                snap = rec.snapshot
            elif rec.entry is not None:
                entries.append(rec.entry)
            elif rec.hard_state is not None:
                hs = rec.hard_state
        if snap is not None:
            self.storage.apply_snapshot(snap)
            base = recs[0].hard_state or self.storage.hard_state()
            commit = max(self.storage.hard_state().commit, snap.metadata.index)
            self.storage.set_hard_state(HardState(base.term, base.vote, commit))
        if entries:
            self.storage.append(entries)
        if hs is not None:
            self.storage.set_hard_state(hs)
        return Persisted(snap, tuple(entries), hs)
