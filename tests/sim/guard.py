"""The simulated consistency guard, the apply-fault plan and the reference chain.

Owns: ``FaultPlan`` (which node suffers which apply fault, armed from when, which entry it hit),
``Detection`` (one member named by the guard), ``ApplyVerdict`` (what a seed proved) and
``SimGuard``: a fault-free reference state machine fed every committed entry once (the truth
the verdicts are measured against), and the leader's periodic digest comparison.

Contracts of the comparison (after ``raftkv.server.guard.ConsistencyGuard``):
- every ``every`` time units (and once more when the cluster converged) the highest-term leader
  reads (oldest index it can tell, latest applied index) from itself and each voter it reaches
  both ways; a member tells digests back to its last local snapshot across restarts
  (``SimNode.durable_digests``), from the snapshot index after an install;
- the digest held by a majority of ALL voters is the truth (``raftkv.guard.digest.judge``);
  each member holding another one is named once, with the first diverging index found by
  binary search against the truth holder keeping the longest history.

Where this differs from the server, on purpose (each closed a miss or a false positive here):
- the compared index is the highest one a majority of voters has applied, not the lowest of
  all reporters, so one lagging member does not stall detection; members behind it are checked
  at their own latest index against the truth holder's chain;
- with no majority the server names every reporter; here the round is undecided while some
  voter did not report, and its disagreeing parties become suspects;
- the server searches against its own chain, which locates nothing when the leader diverged;
- a named member is fenced: it hands leadership over and ships no state snapshot; a suspect
  ships none either, and any member holds a snapshot two rounds unless a round confirmed its
  digest at or past the snapshot index, so a diverged state is rarely copied onto others.

A naming is a false positive when the member's digest at the common index equals the
reference's: it had not diverged.  In the ordinary fault modes any naming is a failure.
"""

from __future__ import annotations

import random
import statistics
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from raftkv.guard.digest import ApplyDigest, judge
from raftkv.raft.types import ConfState, Entry
from tests.sim.invariants import Violation
from tests.sim.kv import FAULT_KINDS, FaultKind, KVStateMachine

if TYPE_CHECKING:
    from tests.sim.cluster import Simulation
    from tests.sim.node import SimNode

GUARD_EVERY_TICKS = 2
"""Guard rounds happen every this many ticks of the simulated clock."""


@dataclass
class FaultPlan:
    node: int
    kind: FaultKind
    at: int
    hit_index: int | None = None
    hit_time: int | None = None
    gone: str | None = None  # why the diverged state disappeared before being named
    gone_time: int | None = None

    @staticmethod
    def choose(seed: int, nodes: int, steps: int, tick: int) -> FaultPlan:
        """Drawn from the seed with a generator of its own, so the world's draws are unchanged."""
        rng = random.Random(f"apply-fault/{seed}")
        node = rng.randint(1, nodes)
        kind = rng.choice(FAULT_KINDS)
        return FaultPlan(node, kind, rng.randint(5 * tick, max(5 * tick, steps * tick * 3 // 4)))


@dataclass(frozen=True, slots=True)
class Detection:
    time: int
    leader: int
    member: int
    first_index: int
    common: int
    healthy: bool  # the member's digest at ``common`` equals the reference's


@dataclass
class ApplyVerdict:
    """One seed of the apply-fault mode (``applicable`` False: the fault never showed)."""

    seed: int
    plan: FaultPlan | None
    applicable: bool
    detected: bool
    correct_member: bool
    exact_index: bool
    false_positives: int
    spread: int  # diverged members other than the faulty one (state copied through a snapshot)
    undecided: bool  # not named, but party to a mismatch no majority of voters could settle
    ticks_to_detect: float | None
    why: str

    @property
    def ok(self) -> bool:
        if self.false_positives:
            return False
        return not self.applicable or (self.detected and self.correct_member and self.exact_index)


@dataclass
class GuardStats:
    rounds: int = 0
    inconclusive: int = 0
    skipped: int = 0
    detections: list[Detection] = field(default_factory=list)


class SimGuard:
    def __init__(self, sim: Simulation, plan: FaultPlan | None, every: int) -> None:
        self.sim = sim
        self.plan = plan
        self.every = every
        self.stats = GuardStats()
        self.named: set[int] = set()
        # member -> the index of a mismatch it was party to that no majority has settled yet
        self.suspects: dict[int, int] = {}
        self.undecided_seen: set[int] = set()  # members that were party to such a mismatch
        self.confirmed: dict[int, int] = {}  # member -> highest index its digest was the truth
        self.held: dict[tuple[int, int], int] = {}  # (member, snapshot index) -> first held at
        self.spread: set[int] = set()
        self.reference: KVStateMachine | None = None

    def boot(self, applied: int, conf_state: ConfState) -> None:
        """Start the reference at the boot snapshot and the periodic rounds."""
        ref = KVStateMachine(applied, conf_state)
        ref.chain = ApplyDigest(applied, ref.chain.latest()[1], capacity=1 << 40)
        self.reference = ref
        self.sim.sched.after(self.every, self._round)

    # -- the reference and the fault ----------------------------------------------------

    def reference_apply(self, e: Entry) -> None:
        """Every committed entry, in index order, once (the first node to apply it feeds it)."""
        ref = self.reference
        assert ref is not None
        if e.index == ref.applied + 1:
            ref.apply_entry(e)
        elif e.index > ref.applied:
            raise Violation(f"entry {e.index} applied before entry {ref.applied + 1}")

    def diverged(self, node: SimNode) -> bool:
        """Whether the node's chain head differs from the reference at the same index."""
        assert self.reference is not None
        index, digest = node.sm.chain.latest()
        return self.reference.chain.digest_at(index) != digest

    def after_apply(self, node: SimNode) -> None:
        """State machine safety for members on the reference chain; off it: an apply fault."""
        if self.diverged(node):
            self.on_diverged(node)
        else:
            self.sim.monitor.on_applied(node.id, node.sm.applied, node.sm.digest())

    def after_replace(self, node: SimNode) -> None:
        """The node rebuilt its state machine from a snapshot (restart or install)."""
        self.after_apply(node)
        if not self.diverged(node):
            self.on_healthy_again(node, "state rebuilt from a snapshot on the true chain")

    def armed_fault(self, node: SimNode) -> FaultKind | None:
        plan = self.plan
        if plan is None or plan.node != node.id or plan.hit_index is not None:
            return None
        return plan.kind if self.sim.sched.now >= plan.at else None

    def on_fault_hit(self, node: SimNode, index: int) -> None:
        assert self.plan is not None
        self.plan.hit_index = index
        self.plan.hit_time = self.sim.sched.now
        self.sim.trace(f"apply-fault {self.plan.kind} {node.id} i{index}")

    def on_diverged(self, node: SimNode) -> None:
        """``node`` applied or installed state off the reference chain."""
        if self.plan is None:
            index = node.sm.chain.latest()[0]
            raise Violation(f"node {node.id} apply digest at {index} differs from the reference")
        if node.id != self.plan.node:
            self.spread.add(node.id)

    def on_healthy_again(self, node: SimNode, why: str) -> None:
        """The faulty node's state was rebuilt onto the reference chain, or it left."""
        plan = self.plan
        if (
            plan is not None
            and node.id == plan.node
            and plan.hit_index is not None
            and plan.gone is None
            and node.id not in self.named
        ):
            plan.gone = why
            plan.gone_time = self.sim.sched.now

    # -- the leader's comparison ----------------------------------------------------------

    def _round(self) -> None:
        sim = self.sim
        if sim.done:
            return
        sim.sched.after(self.every, self._round)
        self.compare()

    def compare(self) -> None:
        """One comparison by the current leader (also run once more when the cluster converged)."""
        sim = self.sim
        leader = sim.leader()
        if leader is None or leader.raw is None:
            return
        voters = leader.sm.conf_state.voters
        if leader.id in self.named:
            self._step_aside(leader, voters)
            return
        ranges: dict[int, tuple[int, int]] = {}
        for m in sorted({*voters, leader.id}):
            node = sim.nodes.get(m)
            if node is None or node.raw is None:
                continue
            if m != leader.id and not (
                sim.net.connected(leader.id, m) and sim.net.connected(m, leader.id)
            ):
                continue
            ranges[m] = node.digest_range()
        quorum = len(voters) // 2 + 1
        applied = sorted((ranges[m][1] for m in ranges if m in voters), reverse=True)
        if len(ranges) < 2 or len(applied) < quorum or applied[quorum - 1] == 0:
            self.stats.skipped += 1
            return
        common = applied[quorum - 1]  # the highest index a majority of voters has applied
        reports: dict[int, bytes] = {}
        for m, (oldest, last) in ranges.items():
            if oldest <= common <= last:
                digest = sim.nodes[m].digest_at(common)
                assert digest is not None
                reports[m] = digest
        self.stats.rounds += 1
        truth, outliers = judge(reports, voters)
        if truth is None:
            if set(voters) - set(reports):
                self.stats.inconclusive += 1
                unnamed = {m: d for m, d in reports.items() if m not in self.named}
                if len(set(unnamed.values())) > 1:  # a new mismatch nobody can settle yet
                    for m in unnamed:
                        self.suspects.setdefault(m, common)
                        self.undecided_seen.add(m)
                else:
                    self._clear_suspicion(unnamed, common)
                return
            for m in outliers:
                if m not in self.named:
                    self._name(leader, m, None, common, common)
            return
        holders = sorted(
            (h for h, d in reports.items() if d == truth), key=lambda h: (ranges[h][0], h)
        )
        source = sim.nodes[holders[0]]
        self._clear_suspicion(holders, common)
        for h in holders:
            self.confirmed[h] = max(self.confirmed.get(h, 0), common)
        for m in outliers:
            if m not in self.named:
                self._name(leader, m, source, common, common)
        # Members behind the common index: their latest digest against the truth's chain.
        for m, (_oldest, last) in ranges.items():
            if m in reports or m in self.named or last > common or last < ranges[holders[0]][0]:
                continue
            if sim.nodes[m].digest_at(last) != source.digest_at(last):
                self._name(leader, m, source, last, common)

    def _name(
        self, leader: SimNode, member: int, source: SimNode | None, at: int, common: int
    ) -> None:
        """Name ``member``, whose digest at ``at`` (<= ``common``) left ``source``'s chain."""
        sim = self.sim
        node = sim.nodes[member]
        first = at
        if source is not None and source is not node:
            first = _first_divergence(source, node, at)
        assert self.reference is not None
        healthy = node.digest_at(at) == self.reference.chain.digest_at(at)
        det = Detection(sim.sched.now, leader.id, member, first, at, healthy)
        self.named.add(member)
        self.stats.detections.append(det)
        sim.trace(f"guard {leader.id} names {member} first i{first} at i{at}")
        if self.plan is None:
            sim.failure = sim.failure or (
                f"guard: leader {leader.id} named member {member} (first index {first}, "
                f"compared at {at}) without any apply fault"
            )
            sim.done = True

    def _clear_suspicion(self, members: Iterable[int], index: int) -> None:
        for m in members:
            if self.suspects.get(m, index + 1) <= index:
                del self.suspects[m]

    def may_ship(self, node_id: int, index: int) -> bool:
        """Whether the member may ship its state snapshot of ``index`` now.

        Never when it is named (fenced: it also hands leadership over) or on a side of a
        mismatch no majority has settled yet; otherwise once a round confirmed its digest at
        ``index`` or later, or after two rounds had the chance to (a lagging majority cannot
        confirm anything and must still be able to catch up).
        """
        if node_id in self.named or node_id in self.suspects:
            return False
        if self.confirmed.get(node_id, 0) >= index:
            return True
        since = self.held.setdefault((node_id, index), self.sim.sched.now)
        return self.sim.sched.now - since >= 2 * self.every

    def _step_aside(self, leader: SimNode, voters: tuple[int, ...]) -> None:
        assert leader.raw is not None
        nodes = self.sim.nodes
        up = [v for v in voters if v not in self.named and v in nodes and nodes[v].raw is not None]
        if up:
            target = max(up, key=lambda v: (nodes[v].sm.applied, -v))
            self.sim.trace(f"fenced leader {leader.id} transfers to {target}")
            leader.raw.transfer_leader(target)
            leader.pump()

    # -- the verdict ------------------------------------------------------------------------

    def verdict(self, seed: int) -> ApplyVerdict:
        plan = self.plan
        dets = self.stats.detections
        fps = sum(1 for d in dets if d.healthy)
        spread = sum(1 for d in dets if not d.healthy and (plan is None or d.member != plan.node))
        if plan is None:
            return ApplyVerdict(
                seed, None, False, False, False, False, fps, spread, False, None, ""
            )
        mine = [d for d in dets if d.member == plan.node]
        if plan.hit_index is None:
            why = f"{plan.kind} on node {plan.node} never hit an entry"
            return ApplyVerdict(
                seed, plan, False, False, False, False, fps, spread, False, None, why
            )
        if not mine and plan.gone is not None:
            assert plan.hit_time is not None and plan.gone_time is not None
            lived = (plan.gone_time - plan.hit_time) / self.sim.params.tick
            why = (
                f"{plan.kind} hit node {plan.node} at index {plan.hit_index}, diverged state "
                f"gone after {lived:.1f} ticks: {plan.gone}"
            )
            return ApplyVerdict(
                seed, plan, False, False, False, False, fps, spread, False, None, why
            )
        detected = any(not d.healthy for d in dets)
        det = mine[0] if mine else None
        undecided = det is None and plan.node in self.undecided_seen
        exact = det is not None and det.first_index == plan.hit_index
        ticks = None
        if det is not None:
            assert plan.hit_time is not None
            ticks = (det.time - plan.hit_time) / self.sim.params.tick
        why = (
            f"{plan.kind} hit node {plan.node} at index {plan.hit_index}; "
            + (
                f"named by leader {det.leader} with first index {det.first_index} "
                f"(compared at {det.common}) after {ticks:.1f} ticks"
                if det is not None
                else "never named (a mismatch no majority of voters could settle)"
                if undecided
                else "never named"
            )
            + (f"; also named {[d.member for d in dets if d is not det]}" if len(dets) > 1 else "")
        )
        return ApplyVerdict(
            seed, plan, True, detected, det is not None, exact, fps, spread, undecided, ticks, why
        )


def _first_divergence(truth: SimNode, member: SimNode, common: int) -> int:
    """The first index in (lo, common] where ``member`` left ``truth``'s chain, lo being the
    oldest index both can tell; lo itself when they differ there already."""
    lo = max(truth.digest_range()[0], member.digest_range()[0])
    hi = common

    def same(i: int) -> bool:
        return truth.digest_at(i) == member.digest_at(i)

    if not same(lo):
        return lo
    while hi - lo > 1:  # invariant: same at lo, different at hi
        mid = (lo + hi) // 2
        if same(mid):
            lo = mid
        else:
            hi = mid
    return hi


def summarize(verdicts: list[ApplyVerdict]) -> tuple[str, bool]:
    """The summary line and whether every applicable seed was a full success."""
    n = len(verdicts)
    na = sum(1 for v in verdicts if not v.applicable)
    detected = sum(1 for v in verdicts if v.applicable and v.detected)
    correct = sum(1 for v in verdicts if v.applicable and v.correct_member)
    exact = sum(1 for v in verdicts if v.applicable and v.exact_index)
    fps = sum(v.false_positives for v in verdicts)
    undecided = sum(1 for v in verdicts if v.undecided)
    spread = sum(v.spread for v in verdicts)
    ticks = [v.ticks_to_detect for v in verdicts if v.ticks_to_detect is not None]
    line = (
        f"apply faults: {n} seeds, detected {detected}, correct member {correct}, "
        f"exact first index {exact}, not applicable {na}, false positives {fps}"
        f" (of the misses: {undecided} undecidable by majority; spread namings {spread})"
    )
    if ticks:
        line += (
            f"; time to detect (ticks) median {statistics.median(ticks):.1f} max {max(ticks):.1f}"
        )
    ok = detected == correct == exact == n - na and fps == 0
    return line, ok
