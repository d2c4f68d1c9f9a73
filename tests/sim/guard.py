"""The simulated consistency guard, the apply-fault plan and the reference chain.

Owns: ``FaultPlan`` (which node suffers which apply fault, armed from when, which entry it hit),
``Detection`` (one member named by the guard), ``ApplyVerdict`` (what a seed proved) and
``SimGuard``: a fault-free reference state machine fed every committed entry once (the truth
the verdicts are measured against), and the leader's periodic digest comparison.

Contracts of the comparison (the rules of ``raftkv.guard.digest`` also used by
``raftkv.server.guard.ConsistencyGuard``):
- every ``every`` time units (and at the end, until settled) the highest-term leader reads
  (oldest index it can tell, latest applied index) from itself and each voter and learner it
  reaches both ways; a member tells digests back to its last local snapshot across restarts
  (``SimNode.durable_digests``), from the snapshot index after an install;
- members are compared at the highest index a majority of voters has applied; the digest held
  by a majority of ALL voters there is the truth (``judge``); each member holding another one
  is named once, with the first diverging index found by binary search against the truth
  holder keeping the longest history (never the leader's own chain); members behind that index
  are checked at their own latest index against the same chain;
- when the members at that index disagree and voters that did not report could still make
  either side a majority (``awaits_voters``), nobody is named: the lagging voters' latest
  indexes are tried, and otherwise each party's side is held as ``Evidence`` (its digest and
  where its chain left each other side's, found while both chains exist) across rounds, leader
  changes, restarts and installs, until a round establishes the truth at that index and names
  whichever party held another digest then, even if its state was rebuilt since;
- fencing: a named member hands leadership over and ships nothing; what any member ships is its
  Raft snapshot, which ``SimNode.promote_snapshot`` only ever sets to state a round confirmed
  (and the log is compacted only behind it), so a diverged state is never copied onto another
  member, and a voter that lagged through a mismatch can apply the disputed entries itself;
- the run ends only once no evidence is held (the liveness deadline names what is left).

A naming is a false positive when the digest it was based on equals the reference's at the
same index: that member had not diverged.  In the ordinary fault modes any naming is a failure.
A seed is not applicable when the fault never hit, or when the diverged state disappeared (a
crash wiped the volatile state, a confirmed snapshot replaced it, the member was removed)
before any leader's round saw a digest of it: no trace of it remains anywhere to detect.
"""

from __future__ import annotations

import random
import statistics
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from raftkv.guard.digest import (
    ApplyDigest,
    awaits_voters,
    bisect_divergence,
    comparison_indexes,
    judge,
)
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
    seen_time: int | None = None  # when a leader's round first saw the diverged digest

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


@dataclass(frozen=True, slots=True)
class Evidence:
    """One party of a mismatch no majority could settle yet: its digest at ``at`` and, per
    digest another party held there, the first index where its chain left that party's."""

    at: int
    digest: bytes
    firsts: dict[bytes, int]


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
    waited: bool = False  # named once a majority settled a mismatch held for a missing voter

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
        # member -> its side of a mismatch that waits for a missing voter (held across rounds,
        # leader changes, restarts and installs until a majority settles it)
        self.evidence: dict[int, Evidence] = {}
        self.undecided_seen: set[int] = set()  # members that were party to such a mismatch
        self.confirmed: dict[int, int] = {}  # member -> highest index its digest was the truth
        self.boot_index = 0
        self.spread: set[int] = set()
        self.reference: KVStateMachine | None = None

    def boot(self, applied: int, conf_state: ConfState) -> None:
        """Start the reference at the boot snapshot and the periodic rounds."""
        self.boot_index = applied
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
        """One comparison by the current leader (also run when the cluster converged)."""
        sim = self.sim
        leader = sim.leader()
        if leader is None or leader.raw is None:
            return
        cs = leader.sm.conf_state
        voters = cs.voters
        if leader.id in self.named:
            self._step_aside(leader, voters)
            return
        ranges: dict[int, tuple[int, int]] = {}
        for m in sorted({*voters, *cs.learners, leader.id}):
            node = sim.nodes.get(m)
            if node is None or node.raw is None:
                continue
            if m != leader.id and not (
                sim.net.connected(leader.id, m) and sim.net.connected(m, leader.id)
            ):
                continue
            ranges[m] = node.digest_range()
        candidates = comparison_indexes(ranges, voters)
        if not candidates or candidates[0] == 0:
            self.stats.skipped += 1
            return
        self.stats.rounds += 1
        split = False
        for at in candidates:
            reports = {
                m: self.sim.nodes[m].digest_at(at) or b""
                for m, (oldest, last) in ranges.items()
                if oldest <= at <= last
            }
            self._observe(reports, at)
            truth, outliers = judge(reports, voters)
            if truth is not None:
                self._decided(leader, at, truth, outliers, reports, ranges)
                break
            if len(set(reports.values())) < 2:
                continue
            if not awaits_voters(reports, voters):  # no majority can ever form: nobody is trusted
                for m in outliers:
                    if m not in self.named:
                        self._name(leader, m, None, at, reports[m])
                return
            if not split:  # the highest index where a mismatch waits for a missing voter
                split = True
                self.stats.inconclusive += 1
                self._hold(reports, at)

    def _hold(self, reports: dict[int, bytes], at: int) -> None:
        """Keep the evidence of a mismatch at ``at`` that waits for a missing voter: each party's
        digest there and where its chain left each other party's (found now, while both chains
        are still at hand: a restart or an install may replace a diverged chain before a
        majority settles the dispute)."""
        nodes = self.sim.nodes
        for m, mine in reports.items():
            if m in self.named or m in self.evidence:
                continue
            firsts: dict[bytes, int] = {}
            for other, theirs in reports.items():
                if theirs != mine and theirs not in firsts:
                    firsts[theirs] = _first_divergence(nodes[other], nodes[m], at)
            self.evidence[m] = Evidence(at, mine, firsts)
            self.undecided_seen.add(m)

    def _observe(self, reports: dict[int, bytes], at: int) -> None:
        """Note when the faulty member first showed a leader's round a diverged digest."""
        plan = self.plan
        if (
            plan is not None
            and plan.seen_time is None
            and plan.node in reports
            and self.reference is not None
            and reports[plan.node] != self.reference.chain.digest_at(at)
        ):
            plan.seen_time = self.sim.sched.now

    def _decided(
        self,
        leader: SimNode,
        at: int,
        truth: bytes,
        outliers: list[int],
        reports: dict[int, bytes],
        ranges: dict[int, tuple[int, int]],
    ) -> None:
        """A majority of all voters holds ``truth`` at ``at``: name whoever left its chain."""
        nodes = self.sim.nodes
        holders = [
            nodes[h]
            for h in sorted(
                (h for h, d in reports.items() if d == truth), key=lambda h: (ranges[h][0], h)
            )
        ]
        source = holders[0]
        self._settle_evidence(leader, at, holders)
        for h in holders:
            self._confirm(h.id, at)
        for m in outliers:
            if m not in self.named:
                self._name(leader, m, source, at, reports[m])
        # Members behind ``at``: their latest digest against the truth holder's chain.
        oldest = ranges[source.id][0]
        for m, (_first, last) in ranges.items():
            if m in reports or m in self.named or last > at or last < oldest:
                continue
            mine = nodes[m].digest_at(last)
            if mine != source.digest_at(last):
                self._name(leader, m, source, last, mine or b"")
            else:
                self._confirm(m, last)

    def _settle_evidence(self, leader: SimNode, at: int, holders: list[SimNode]) -> None:
        """The truth at ``at`` also fixes it at every held mismatch's index up to ``at``: a
        party whose digest there was another one is named, whatever it holds now."""
        for m, ev in sorted(self.evidence.items()):
            if ev.at > at:
                continue
            truth = next((d for h in holders if (d := h.digest_at(ev.at)) is not None), None)
            if truth is None:
                continue  # no truth holder keeps that index any more: a later round may
            del self.evidence[m]
            if ev.digest != truth and m not in self.named:
                self._name(leader, m, None, ev.at, ev.digest, ev.firsts.get(truth, ev.at))

    def _confirm(self, member: int, index: int) -> None:
        """``member``'s digest at ``index`` is the one a majority of voters holds."""
        self.confirmed[member] = max(self.confirmed.get(member, 0), index)

    def _name(
        self,
        leader: SimNode,
        member: int,
        source: SimNode | None,
        at: int,
        digest: bytes,
        first: int | None = None,
    ) -> None:
        """Name ``member``, whose ``digest`` at ``at`` is not the truth (``source``'s chain, or
        an earlier round's evidence with its first diverging index ``first``)."""
        sim = self.sim
        node = sim.nodes[member]
        if first is None:
            first = at if source is None else _first_divergence(source, node, at)
        self.evidence.pop(member, None)
        assert self.reference is not None
        healthy = digest == self.reference.chain.digest_at(at)
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

    def may_ship(self, node_id: int, index: int) -> bool:
        """Whether the member may ship its Raft snapshot of ``index`` to a peer.

        Never when it is named (fenced: it also hands leadership over).  Anything else it ships
        must be state a round confirmed (``SimNode.promote_snapshot`` makes only such state the
        Raft snapshot) or the boot snapshot: ``Violation`` otherwise.
        """
        if node_id in self.named:
            return False
        if index > max(self.confirmed.get(node_id, 0), self.boot_index):
            raise Violation(f"node {node_id} was to ship snapshot {index} no round confirmed")
        return True

    def on_recovered(self, node: SimNode, index: int) -> None:
        """``node`` restarted from its state at ``index``: what it re-applies is unconfirmed."""
        if self.confirmed.get(node.id, 0) > index:
            self.confirmed[node.id] = index

    def on_installed(self, node: SimNode, index: int) -> None:
        """``node`` installed a shipped (hence confirmed) snapshot of ``index``."""
        self.confirmed[node.id] = index

    def unsettled(self) -> list[int]:
        """Members party to a held mismatch that no majority of voters has settled yet."""
        return sorted(self.evidence)

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
        if not mine and plan.gone is not None and plan.seen_time is None:
            assert plan.hit_time is not None and plan.gone_time is not None
            lived = (plan.gone_time - plan.hit_time) / self.sim.params.tick
            why = (
                f"{plan.kind} hit node {plan.node} at index {plan.hit_index}, diverged state "
                f"gone after {lived:.1f} ticks before any leader's round saw it: {plan.gone}"
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
        waited = det is not None and plan.node in self.undecided_seen
        return ApplyVerdict(
            seed,
            plan,
            True,
            detected,
            det is not None,
            exact,
            fps,
            spread,
            undecided,
            ticks,
            why + ("; held for a missing voter first" if waited else ""),
            waited,
        )


def _first_divergence(truth: SimNode, member: SimNode, at: int) -> int:
    """The first index in (lo, at] where ``member`` left ``truth``'s chain, lo being the oldest
    index both can tell; lo itself when they differ there already."""
    lo = max(truth.digest_range()[0], member.digest_range()[0])
    return bisect_divergence(lo, at, lambda i: truth.digest_at(i) == member.digest_at(i))


def summarize(verdicts: list[ApplyVerdict]) -> tuple[str, bool]:
    """The summary line and whether every applicable seed was a full success."""
    n = len(verdicts)
    na = sum(1 for v in verdicts if not v.applicable)
    detected = sum(1 for v in verdicts if v.applicable and v.detected)
    correct = sum(1 for v in verdicts if v.applicable and v.correct_member)
    exact = sum(1 for v in verdicts if v.applicable and v.exact_index)
    fps = sum(v.false_positives for v in verdicts)
    undecided = sum(1 for v in verdicts if v.undecided)
    waited = sum(1 for v in verdicts if v.waited)
    spread = sum(v.spread for v in verdicts)
    ticks = [v.ticks_to_detect for v in verdicts if v.ticks_to_detect is not None]
    line = (
        f"apply faults: {n} seeds, detected {detected}, correct member {correct}, "
        f"exact first index {exact} (after a held mismatch {waited}), not applicable {na}, "
        f"false positives {fps}"
        f" (of the misses: {undecided} undecidable by majority; spread namings {spread})"
    )
    if ticks:
        line += (
            f"; time to detect (ticks) median {statistics.median(ticks):.1f} max {max(ticks):.1f}"
        )
    ok = detected == correct == exact == n - na and fps == 0
    return line, ok
