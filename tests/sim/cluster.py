"""One seeded simulation of a Raft cluster: faults, heal, liveness, safety, linearizability.

Owns: ``SimParams`` (everything a seed decides), ``Simulation`` (the world: nodes,
network, clients, operator actions, fault schedule) and ``run_seed``.

Contracts:
- ``random.Random(seed)`` is the only source of randomness and the scheduler the
  only clock, so a seed replays exactly (``SeedResult.trace`` is a digest of the
  trace; equal seeds give equal digests);
- the fault phase lasts ``steps`` ticks (partitions, asymmetric links, loss,
  duplication, reordering, crashes with torn writes, leader transfers, adding a
  learner / promoting it / removing a voter, never below 3 voters); then the
  heal phase reconnects everything, restarts every member and removes loss, and
  must reach a leader, complete every client's final operations, bring every member
  to the same applied index and let the guard settle within ``liveness_ticks`` ticks;
- the first safety violation, core exception, liveness failure or guard naming (outside the
  apply-fault mode) ends the seed; a seed that survives has its client history checked for
  linearizability, replies computed by a diverged state machine counting as unanswered;
- with ``apply_faults`` one member's state machine suffers one fault (``tests.sim.guard``).
"""

from __future__ import annotations

import hashlib
import random
import time
import traceback
from collections import Counter
from dataclasses import dataclass, field

from raftkv.raft.config import RaftLogger
from raftkv.raft.errors import ProposalDroppedError
from raftkv.raft.types import (
    ConfChange,
    ConfChangeType,
    ConfState,
    Message,
    MessageType,
    Snapshot,
    SnapshotMetadata,
    StateType,
)
from tests.sim.clients import Client, OpRecord
from tests.sim.guard import GUARD_EVERY_TICKS, ApplyVerdict, FaultPlan, SimGuard
from tests.sim.invariants import SafetyMonitor, Violation
from tests.sim.kv import CmdKind, Command
from tests.sim.linearizability import Operation, check_history
from tests.sim.network import Network, NetworkParams, Scheduler
from tests.sim.node import SimNode

DEFAULT_STEPS = 600
"""Ticks of the fault phase when the caller does not choose."""


@dataclass
class SimParams:
    nodes: int = 3
    steps: int = DEFAULT_STEPS
    faults: bool = True
    tick: int = 10
    election_tick: int = 10
    heartbeat_tick: int = 1
    max_size_per_msg: int = 1 << 20
    max_inflight_msgs: int = 256
    skew: float = 0.2
    pre_vote: bool = True
    check_quorum: bool = True
    forward_proposals: bool = True
    keys: int = 5
    clients: int = 3
    final_ops: int = 3
    op_deadline: int = 400
    attempt_timeout: int = 80
    retry_backoff: int = 10
    think_max: int = 10
    fsync_max: int = 3
    torn_write: float = 0.5
    early_app: bool = False
    snapshot_every: int = 20
    keep_entries: int = 5
    fault_every: tuple[int, int] = (3, 15)
    liveness_ticks: int = 300
    net: NetworkParams = field(default_factory=NetworkParams)

    @staticmethod
    def choose(rng: random.Random, nodes: int, steps: int, faults: bool) -> SimParams:
        p = SimParams(nodes=nodes, steps=steps, faults=faults)
        p.clients = rng.randint(2, 5)
        p.heartbeat_tick = rng.choice((1, 1, 2, 3))
        p.election_tick = rng.choice((10, 10, 15, 20))
        p.max_size_per_msg = rng.choice((1 << 20, 1 << 20, 64, 1))
        p.max_inflight_msgs = rng.choice((256, 256, 4, 1))
        p.skew = rng.choice((0.0, 0.1, 0.3))
        p.keys = rng.choice((1, 2, 5, 5))
        p.pre_vote = rng.random() < 0.75
        if not p.pre_vote:
            # Without pre-vote a stale node whose clock runs much faster keeps bumping the term
            # and resetting everyone's election timer: Raft's liveness assumes similar clock rates.
            p.skew = min(p.skew, 0.1)
        p.check_quorum = rng.random() < 0.75
        p.forward_proposals = rng.random() < 0.75
        p.attempt_timeout = rng.randint(4, 8) * p.tick
        p.liveness_ticks = max(p.liveness_ticks, 15 * p.election_tick)
        p.fsync_max = rng.randint(1, 8)
        p.early_app = rng.random() < 0.5
        p.snapshot_every = rng.choice((5, 10, 20, 40))
        p.keep_entries = rng.choice((0, 2, 5, 20))
        if faults:
            p.net = NetworkParams(
                min_delay=1,
                max_delay=rng.randint(2, 8),
                loss=rng.choice((0.0, 0.01, 0.05, 0.1)),
                duplicate=rng.choice((0.0, 0.02, 0.05)),
                slow_probability=rng.choice((0.0, 0.02, 0.1)),
                slow_max_delay=rng.randint(20, 100),
            )
            p.fault_every = rng.choice(((2, 8), (3, 15), (10, 30)))
        else:
            p.clients = 16
            p.keys = 5
            p.think_max = 0
            p.net = NetworkParams(min_delay=1, max_delay=3)
        return p


@dataclass
class SeedResult:
    seed: int
    nodes: int
    failure: str | None
    ops: int
    completed: int
    pending: int
    committed: int
    cpu_seconds: float
    check_seconds: float
    trace: str
    stats: dict[str, int]
    apply: ApplyVerdict | None = None


class _SilentLogger:
    def debug(self, msg: str) -> None:
        pass

    info = warning = debug

    def is_enabled_for(self, level: int) -> bool:
        return False  # the core then never formats a line


_SILENT = _SilentLogger()


class _PrintLogger:
    """Core log lines, printed in verbose runs only (never part of the trace digest)."""

    def __init__(self, sim: Simulation, node_id: int) -> None:
        self.sim = sim
        self.node_id = node_id

    def _out(self, level: str, msg: str) -> None:
        print(f"{self.sim.sched.now:>8}   [{self.node_id} {level}] {msg}")

    def debug(self, msg: str) -> None:
        self._out("debug", msg)

    def info(self, msg: str) -> None:
        self._out("info", msg)

    def warning(self, msg: str) -> None:
        self._out("warn", msg)


class Simulation:
    def __init__(
        self,
        seed: int,
        nodes: int = 3,
        steps: int = DEFAULT_STEPS,
        faults: bool = True,
        apply_faults: bool = False,
    ) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        self.params = SimParams.choose(self.rng, nodes, steps, faults)
        tick = self.params.tick
        plan = FaultPlan.choose(seed, nodes, steps, tick) if apply_faults else None
        self.guard = SimGuard(self, plan, GUARD_EVERY_TICKS * tick)
        self.sched = Scheduler()
        self.monitor = SafetyMonitor()
        self.net = Network(self.sched, self.rng, self._deliver, self.params.net, self._lost)
        self.nodes: dict[int, SimNode] = {}
        self.clients: list[Client] = []
        self.history: list[OpRecord] = []
        self.written: list[str] = []
        self.effects: dict[tuple[int, int], int] = {}
        self.hclock = 0
        self.healing = False
        self.done = False
        self.failure: str | None = None
        self.verbose = False
        self.stats: Counter[str] = Counter()
        self._trace = hashlib.blake2b(digest_size=16)
        self._next_id = nodes + 1
        self._decommissioning: set[int] = set()
        self.check_seconds = 0.0
        self.heal_deadline = 0

    # -- bookkeeping --------------------------------------------------------------

    def stamp(self) -> int:
        self.hclock += 1
        return self.hclock

    def trace(self, line: str) -> None:
        self._trace.update(line.encode())
        self._trace.update(b"\n")
        if self.verbose:
            print(f"{self.sched.now:>8} {line}")

    def raft_logger(self, node_id: int) -> RaftLogger:
        return _PrintLogger(self, node_id) if self.verbose else _SILENT

    def fail_liveness(self, why: str) -> None:
        if self.failure is None:
            self.failure = f"liveness: {why}"
        self.done = True

    # -- nodes and network ----------------------------------------------------------

    def _new_node(self, node_id: int) -> SimNode:
        tick = self.params.tick
        spread = int(tick * self.params.skew)
        node = SimNode(self, node_id, self.rng.randint(tick - spread, tick + spread))
        self.nodes[node_id] = node
        return node

    def send(self, msg: Message) -> None:
        self.stats["messages"] += 1
        if msg.type == MessageType.MSG_SNAP:
            assert msg.snapshot is not None
            if not self.guard.may_ship(msg.frm, msg.snapshot.metadata.index):
                self.trace(f"{msg.frm} may not ship snapshot to {msg.to} yet")
                self.stats["snapshots_held"] += 1
                self.sched.after(self.params.tick, lambda: self._report_snapshot(msg, False))
                return
            self.stats["snapshots_sent"] += 1
        self.net.send(msg)

    def _lost(self, msg: Message) -> None:
        """The transport noticed a lost message: report snapshots and (sometimes) unreachability.

        Reports are events of their own: ``send`` runs inside the sender's Ready cycle.
        """
        if msg.type == MessageType.MSG_SNAP:
            self.sched.after(self.params.tick, lambda: self._report_snapshot(msg, False))
        elif not self.net.connected(msg.frm, msg.to) and self.rng.random() < 0.1:
            self.sched.after(1, lambda: self._report_unreachable(msg))

    def _report_unreachable(self, msg: Message) -> None:
        sender = self.nodes.get(msg.frm)
        if sender is not None and sender.raw is not None:
            sender.raw.report_unreachable(msg.to)
            sender.pump()

    def _deliver(self, msg: Message) -> None:
        node = self.nodes.get(msg.to)
        if node is None or node.raw is None:
            if msg.type == MessageType.MSG_SNAP:
                self._report_snapshot(msg, False)
            return
        self.trace(
            f"m {msg.type.name} {msg.frm}>{msg.to} t{msg.term} i{msg.index} "
            f"lt{msg.log_term} n{len(msg.entries)} c{msg.commit} r{int(msg.reject)}"
        )
        node.step(msg)
        if msg.type == MessageType.MSG_SNAP:
            self._report_snapshot(msg, True)

    def _report_snapshot(self, msg: Message, ok: bool) -> None:
        sender = self.nodes.get(msg.frm)
        if sender is not None and sender.raw is not None:
            sender.raw.report_snapshot(msg.to, ok)
            sender.pump()

    def on_role(self, node: SimNode, state: StateType, term: int) -> None:
        self.trace(f"role {node.id} {state.name} t{term}")
        if state == StateType.LEADER:
            self.stats["leaders"] += 1
            self.monitor.on_leader(node.id, term)

    def on_conf_applied(self, node: SimNode, cc: ConfChange, index: int) -> None:
        self.trace(f"conf {node.id} i{index} {cc.type.name} {cc.node_id}")
        if cc.type == ConfChangeType.REMOVE_NODE and cc.node_id not in self._decommissioning:
            self._decommissioning.add(cc.node_id)
            victim = cc.node_id
            delay = self.rng.randint(0, 3 * self.params.tick)
            self.sched.after(delay, lambda: self.decommission(victim, "removal committed"))

    def decommission(self, node_id: int, why: str) -> None:
        node = self.nodes.get(node_id)
        if node is None or node.removed:
            return
        self.trace(f"decommission {node_id} ({why})")
        node.crash()
        node.removed = True
        self.guard.on_healthy_again(node, f"removed from the cluster ({why})")

    def on_effect(self, client: int, req: int) -> None:
        self.effects.setdefault((client, req), self.stamp())

    def leader(self) -> SimNode | None:
        best: SimNode | None = None
        best_term = -1
        for node in self.nodes.values():
            raw = node.raw
            if raw is not None and raw.state == StateType.LEADER and raw.term > best_term:
                best, best_term = node, raw.term
        return best

    # -- clients --------------------------------------------------------------------

    def pick_member(self) -> int:
        ids = [i for i, n in self.nodes.items() if not n.removed]
        return ids[self.rng.randrange(len(ids))]

    def client_request(self, target: int, cid: int, op: OpRecord) -> None:
        def arrive() -> None:
            node = self.nodes[target]
            if node.raw is None:
                self._to_client(lambda: self.clients[cid].on_dropped(op.req))
            elif op.kind == "get":
                node.read(cid, op.req, op.key)
            else:
                assert op.value is not None
                kind: CmdKind = "put" if op.kind == "put" else "cas"
                cmd = Command(kind, cid, op.req, op.key, op.value, op.expected)
                if not node.propose(cid, op.req, cmd):
                    self._to_client(lambda: self.clients[cid].on_dropped(op.req))

        self.sched.after(self.rng.randint(1, 3), arrive)

    def reply(self, node_id: int, cid: int, req: int, result: str | bool | None) -> None:
        """A reply computed by a diverged state machine is untrusted (checked as pending)."""
        trusted = not self.guard.diverged(self.nodes[node_id])
        self._to_client(lambda: self.clients[cid].on_reply(node_id, req, result, trusted))

    def _to_client(self, action: object) -> None:
        self.sched.after(self.rng.randint(1, 3), action)  # type: ignore[arg-type]

    def check_final_done(self) -> None:
        if self.healing and not self.done and all(c.finished for c in self.clients):
            self._await_convergence()

    def _await_convergence(self) -> None:
        if self.done:
            return
        leader = self.leader()
        if leader is not None:
            cs = leader.sm.conf_state
            members = [self.nodes[i] for i in cs.voters + cs.learners if i in self.nodes]
            target = self.monitor.max_commit
            if all(n.raw is not None and n.sm.applied >= target for n in members):
                self.guard.compare()
                if not self.guard.unsettled():  # a mismatch waiting for a voter holds the end
                    self.trace(f"converged at {target}")
                    self.done = True
                    return
        self.sched.after(self.params.tick, self._await_convergence)

    # -- faults and operator actions ------------------------------------------------

    def _schedule_fault(self) -> None:
        lo, hi = self.params.fault_every
        self.sched.after(self.rng.randint(lo, hi) * self.params.tick, self._fault)

    def _fault(self) -> None:
        if self.healing:
            return
        r = self.rng.random()
        if r < 0.25:
            self._partition()
        elif r < 0.4:
            self._asymmetric()
        elif r < 0.65:
            self._crash()
        elif r < 0.8:
            self._transfer()
        else:
            self._membership()
        self._schedule_fault()

    def _live_ids(self) -> list[int]:
        return sorted(i for i, n in self.nodes.items() if not n.removed)

    def _block_for(self, pairs: list[tuple[int, int]], ticks: int) -> None:
        for a, b in pairs:
            self.net.block(a, b)

        def heal() -> None:
            if not self.healing:
                for a, b in pairs:
                    self.net.unblock(a, b)

        self.sched.after(ticks * self.params.tick, heal)

    def _partition(self) -> None:
        ids = self._live_ids()
        self.rng.shuffle(ids)
        leader = self.leader()
        if leader is not None and leader.id in ids and self.rng.random() < 0.5:
            ids.remove(leader.id)
            ids.insert(0, leader.id)
        k = self.rng.randint(1, len(ids) // 2)
        side, rest = ids[:k], ids[k:]
        pairs = [(a, b) for a in side for b in rest] + [(b, a) for a in side for b in rest]
        ticks = self.rng.randint(5, 40)
        self.trace(f"partition {sorted(side)} | {sorted(rest)} for {ticks}")
        self.stats["partitions"] += 1
        self._block_for(pairs, ticks)

    def _asymmetric(self) -> None:
        ids = self._live_ids()
        a, b = self.rng.sample(ids, 2)
        ticks = self.rng.randint(5, 40)
        self.trace(f"block {a}->{b} for {ticks}")
        self.stats["asymmetric"] += 1
        self._block_for([(a, b)], ticks)

    def _crash(self) -> None:
        up = [i for i in self._live_ids() if self.nodes[i].up]
        if not up:
            return
        node = self.nodes[up[self.rng.randrange(len(up))]]
        leader = self.leader()
        if leader is not None and self.rng.random() < 0.5:
            node = leader
        self.trace(f"crash {node.id}")
        self.stats["crashes"] += 1
        node.crash()
        ticks = self.rng.randint(1, 30)

        def restart() -> None:
            if not node.up and not node.removed and not self.healing:
                self.trace(f"restart {node.id}")
                node.start()

        self.sched.after(ticks * self.params.tick, restart)

    def _transfer(self) -> None:
        leader = self.leader()
        if leader is None or leader.raw is None:
            return
        voters = [v for v in leader.sm.conf_state.voters if v != leader.id]
        if not voters:
            return
        target = voters[self.rng.randrange(len(voters))]
        self.trace(f"transfer {leader.id}->{target}")
        self.stats["transfers"] += 1
        leader.raw.transfer_leader(target)
        leader.pump()

    def _membership(self) -> None:
        leader = self.leader()
        if leader is None or leader.raw is None:
            return
        cs = leader.sm.conf_state
        if cs.learners:
            cc = ConfChange(ConfChangeType.ADD_NODE, self.rng.choice(cs.learners))
        elif len(cs.voters) <= 3 or (
            len(cs.voters) <= self.params.nodes and self.rng.random() < 0.5
        ):
            cc = ConfChange(ConfChangeType.ADD_LEARNER_NODE, self._spare(cs))
        else:
            cc = ConfChange(ConfChangeType.REMOVE_NODE, self.rng.choice(cs.voters))
        try:
            leader.raw.propose_conf_change(cc)
        except ProposalDroppedError:
            return
        self.trace(f"propose {cc.type.name} {cc.node_id} via {leader.id}")
        self.stats["conf_changes"] += 1
        leader.pump()

    def _spare(self, cs: ConfState) -> int:
        """A started node in no configuration, created if needed."""
        for i, n in self.nodes.items():
            if (
                not n.removed
                and i not in self._decommissioning
                and i not in cs.voters
                and i not in cs.learners
                and i > self.params.nodes
            ):
                return i
        node = self._new_node(self._next_id)
        self._next_id += 1
        node.start()
        return node.id

    def _heal(self) -> None:
        self.trace("heal")
        self.healing = True
        self.net.heal_all()
        p = self.net.params
        self.net.params = NetworkParams(min_delay=p.min_delay, max_delay=p.max_delay)
        for node in self.nodes.values():
            if not node.removed and not node.up:
                node.start()
        self.heal_deadline = self.sched.now + self.params.liveness_ticks * self.params.tick
        self.sched.at(self.heal_deadline, self._liveness_deadline)

    def _liveness_deadline(self) -> None:
        if self.done:
            return
        leader = self.leader()
        waiting = [c.id for c in self.clients if not c.finished]
        lagging = sorted(
            (n.id, n.sm.applied)
            for n in self.nodes.values()
            if not n.removed and n.raw is not None and n.sm.applied < self.monitor.max_commit
        )
        self.fail_liveness(
            f"not converged {self.params.liveness_ticks} ticks after heal: leader="
            f"{leader.id if leader else None} clients waiting={waiting} "
            f"max_commit={self.monitor.max_commit} lagging(id, applied)={lagging} "
            f"unsettled by the guard={self.guard.unsettled()}"
        )

    # -- running ----------------------------------------------------------------------

    def run(self) -> SeedResult:
        started = time.process_time()
        p = self.params
        ids = tuple(range(1, p.nodes + 1))
        boot = Snapshot(SnapshotMetadata(index=1, term=1, conf_state=ConfState(voters=ids)))
        try:
            self.guard.boot(boot.metadata.index, boot.metadata.conf_state)
            for i in ids:
                node = self._new_node(i)
                node.disk.storage.apply_snapshot(boot)
                node.start()
            for cid in range(p.clients):
                client = Client(self, cid)
                self.clients.append(client)
                self.sched.after(self.rng.randint(0, p.tick), client.start_next)
            if p.faults:
                self._schedule_fault()
            self.sched.at(p.steps * p.tick, self._heal)
            while not self.done and self.sched.run_next():
                pass
            if self.failure is None:
                check_started = time.process_time()
                result = check_history(self.operations())
                self.check_seconds = time.process_time() - check_started
                if not result.ok:
                    self.failure = f"linearizability: {result.explanation}"
        except Violation as v:
            self.failure = f"safety: {v}"
        except Exception as e:
            where = traceback.extract_tb(e.__traceback__)[-1]
            self.failure = f"exception: {type(e).__name__}: {e} at {where.filename}:{where.lineno}"
        completed = sum(1 for op in self.history if op.ret is not None)
        return SeedResult(
            seed=self.seed,
            nodes=p.nodes,
            failure=self.failure,
            ops=len(self.history),
            completed=completed,
            pending=len(self.history) - completed,
            committed=self.monitor.max_commit,
            cpu_seconds=time.process_time() - started,
            check_seconds=self.check_seconds,
            trace=self._trace.hexdigest(),
            stats=dict(self.stats),
            apply=self.guard.verdict(self.seed) if self.guard.plan is not None else None,
        )

    def operations(self) -> list[Operation]:
        ops: list[Operation] = []
        for rec in self.history:
            op = rec.to_operation(self.effects.get((rec.client, rec.req)))
            if op is not None:
                ops.append(op)
        return ops


def run_seed(
    seed: int,
    nodes: int = 3,
    steps: int = DEFAULT_STEPS,
    verbose: bool = False,
    apply_faults: bool = False,
) -> SeedResult:
    sim = Simulation(seed, nodes, steps, apply_faults=apply_faults)
    sim.verbose = verbose
    return sim.run()
