"""A minimal in-process network of RawNodes for unit and paper tests.

Owns: ``Cluster`` — builds N RawNodes over MemoryStorage (bootstrapped from a
snapshot at index 1), runs the Ready/advance cycle exactly as the contract in
``raftkv.raft.types.Ready`` demands, delivers messages (with optional drops and
partitions) and records what each node applied.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterable

from raftkv.raft import (
    Config,
    ConfState,
    EntryType,
    MemoryStorage,
    Message,
    MessageType,
    RawNode,
    Snapshot,
    SnapshotMetadata,
    StateType,
    StepPeerNotFoundError,
    decode_conf_change,
)


class QuietLogger:
    """Collects log lines instead of printing them."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def is_enabled_for(self, level: int) -> bool:
        return level >= logging.INFO

    def debug(self, msg: str) -> None:
        raise AssertionError(f"debug line built although debug is off: {msg}")

    def info(self, msg: str) -> None:
        self.lines.append(msg)

    def warning(self, msg: str) -> None:
        self.lines.append(msg)


def bootstrap_storage(voters: Iterable[int], learners: Iterable[int] = ()) -> MemoryStorage:
    s = MemoryStorage()
    cs = ConfState(voters=tuple(sorted(voters)), learners=tuple(sorted(learners)))
    s.apply_snapshot(Snapshot(SnapshotMetadata(index=1, term=1, conf_state=cs)))
    return s


class Cluster:
    """N nodes wired together; ``stabilize()`` runs until no node has work."""

    def __init__(
        self,
        ids: Iterable[int],
        *,
        learners: Iterable[int] = (),
        seed: int = 0,
        **cfg: object,
    ) -> None:
        self.ids = sorted(set(ids) | set(learners))
        voters = sorted(ids)
        self.storages: dict[int, MemoryStorage] = {}
        self.nodes: dict[int, RawNode] = {}
        self.applied: dict[int, list[bytes]] = {}
        self.cfg = cfg
        self.seed = seed
        self.logger = QuietLogger()
        self.dropped: set[tuple[int, int]] = set()
        self.filter: Callable[[Message], bool] | None = None
        self.applied_index: dict[int, int] = {}
        self.applied_log: dict[int, list[tuple[int, bytes]]] = {}
        for i in self.ids:
            self.storages[i] = bootstrap_storage(voters, learners)
            self.nodes[i] = self._make(i, self.storages[i])
            self.applied[i] = []
            self.applied_log[i] = []

    def _make(self, i: int, storage: MemoryStorage, applied: int = 0, seed: int = 0) -> RawNode:
        return RawNode(
            Config(
                id=i,
                storage=storage,
                seed=self.seed + seed,
                logger=self.logger,
                applied=applied,
                **self.cfg,  # type: ignore[arg-type]
            )
        )

    def restart(self, i: int, seed: int = 1) -> None:
        """Crash node ``i`` and restart it from its storage (applied state survives)."""
        self.nodes[i] = self._make(i, self.storages[i], self.applied_index.get(i, 0), seed)

    def add_empty_node(self, i: int) -> None:
        """A joining member with empty storage (learns its config from a snapshot)."""
        self.ids.append(i)
        self.storages[i] = MemoryStorage()
        self.nodes[i] = self._make(i, self.storages[i])
        self.applied[i] = []
        self.applied_log[i] = []

    def isolate(self, i: int) -> None:
        for j in self.ids:
            if j != i:
                self.dropped.add((i, j))
                self.dropped.add((j, i))

    def cut(self, a: int, b: int) -> None:
        self.dropped.add((a, b))
        self.dropped.add((b, a))

    def heal(self) -> None:
        self.dropped.clear()

    def handle_ready(self, i: int) -> list[Message]:
        n = self.nodes[i]
        s = self.storages[i]
        rd = n.ready()
        if not rd.snapshot.is_empty():
            s.apply_snapshot(rd.snapshot)
            self.applied[i].append(b"snap:" + rd.snapshot.data)
            self.applied_index[i] = rd.snapshot.metadata.index
        if rd.entries:
            s.append(rd.entries)
        if rd.hard_state is not None:
            s.set_hard_state(rd.hard_state)
        for e in rd.committed_entries:
            if e.type == EntryType.CONF_CHANGE:
                n.apply_conf_change(decode_conf_change(e.data))
            elif e.data:
                self.applied[i].append(e.data)
            self.applied_log[i].append((e.index, e.data))
            self.applied_index[i] = e.index
        n.advance(rd)
        return list(rd.messages)

    def deliver(self, msgs: list[Message]) -> None:
        for m in msgs:
            if (
                (m.frm, m.to) in self.dropped
                or m.to not in self.nodes
                or (self.filter is not None and not self.filter(m))
            ):
                self.lost(m)
                continue
            with contextlib.suppress(StepPeerNotFoundError):  # responses from removed peers
                self.nodes[m.to].step(m)
            if m.type == MessageType.MSG_SNAP:
                # Like a transport, report a delivered snapshot.
                self.nodes[m.frm].report_snapshot(m.to, True)

    def lost(self, m: Message) -> None:
        """A message was lost: like a transport, report a failed snapshot."""
        if m.type == MessageType.MSG_SNAP and m.frm in self.nodes:
            self.nodes[m.frm].report_snapshot(m.to, False)

    def stabilize(self, max_rounds: int = 1000) -> None:
        for _ in range(max_rounds):
            msgs: list[Message] = []
            for i in self.ids:
                if self.nodes[i].has_ready():
                    msgs.extend(self.handle_ready(i))
            if not msgs and not any(self.nodes[i].has_ready() for i in self.ids):
                return
            self.deliver(msgs)
        raise AssertionError("cluster did not stabilize")

    def tick(self, n: int = 1, only: Iterable[int] | None = None) -> None:
        targets = list(only) if only is not None else self.ids
        for _ in range(n):
            for i in targets:
                self.nodes[i].tick()
            self.stabilize()

    def leaders(self) -> list[int]:
        return [i for i in self.ids if self.nodes[i].state == StateType.LEADER]

    def elect(self, i: int) -> None:
        self.nodes[i].campaign()
        self.stabilize()
        assert self.nodes[i].state == StateType.LEADER, f"{i} did not become leader"
