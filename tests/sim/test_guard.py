"""The apply-fault mode: the simulated guard names the faulty member and the entry it hit.

Each seed injects one apply fault (skip an entry's effects, corrupt a stored value, apply a
command twice, drop a conf change's effect) into one member's state machine; the leader's
simulated guard compares apply digests every few ticks.  The ordinary fault mode runs the
same guard and fails on any naming (see ``test_sim``: its seeds stay green).
"""

from __future__ import annotations

import pytest

from raftkv.raft.codec import encode_conf_change
from raftkv.raft.types import ConfChange, ConfChangeType, ConfState, Entry, EntryType
from tests.sim.__main__ import main
from tests.sim.cluster import SeedResult, run_seed
from tests.sim.guard import FaultPlan, summarize
from tests.sim.kv import FAULT_KINDS, Command, FaultKind, KVStateMachine


def _check(results: list[SeedResult]) -> int:
    """Every applicable seed names the faulty member with the entry its fault hit, nobody else
    is named and no seed fails otherwise; returns how many were named after a held mismatch."""
    verdicts = [r.apply for r in results if r.apply is not None]
    assert len(verdicts) == len(results)
    line, ok = summarize(verdicts)
    bad = [
        f"seed {r.seed} ({r.nodes} nodes): {r.failure.splitlines()[0] if r.failure else v.why}"
        for r, v in zip(results, verdicts, strict=True)
        if r.failure or not v.ok or v.spread
    ]
    assert not bad, line + "\n" + "\n".join(bad)
    assert ok, line
    applicable = sum(1 for v in verdicts if v.applicable)
    assert applicable >= len(verdicts) // 2, line  # the faults do show in most seeds
    return sum(1 for v in verdicts if v.waited)


@pytest.mark.parametrize(("nodes", "start", "count"), [(3, 1, 60), (5, 20_001, 50)])
def test_apply_faults_are_named_with_their_first_index(nodes: int, start: int, count: int) -> None:
    results = [run_seed(s, nodes, 300, apply_faults=True) for s in range(start, start + count)]
    # Some seeds need the held evidence: a member lagging or cut off while the two others
    # disagree leaves no majority until it applies the disputed entries itself.
    assert _check(results) > 0


@pytest.mark.parametrize("seed", [4, 13])
def test_held_evidence_names_a_member_whose_diverged_state_is_gone(seed: int) -> None:
    """A leader's round saw the faulty member's digest in a one-against-one split; a crash then
    rebuilt its state from an older snapshot (seed 4) or it was removed (seed 13) before a
    majority could settle the split: the evidence held from that round still names it, with
    the first index found while its diverged chain existed."""
    res = run_seed(seed, 3, 300, apply_faults=True)
    v = res.apply
    assert v is not None and v.plan is not None and res.failure is None, v
    plan = v.plan
    assert plan.gone is not None and plan.seen_time is not None and plan.gone_time is not None
    assert plan.seen_time < plan.gone_time
    assert v.applicable and v.ok and v.waited, v.why
    assert v.ticks_to_detect is not None and plan.hit_time is not None
    assert plan.hit_time + v.ticks_to_detect * 10 > plan.gone_time  # named after it was gone


def test_every_fault_kind_is_planned_and_detected() -> None:
    seen: set[FaultKind] = set()
    for seed in range(1, 80):
        res = run_seed(seed, 3, 300, apply_faults=True)
        assert res.apply is not None
        if res.apply.ok and res.apply.applicable and res.apply.plan is not None:
            seen.add(res.apply.plan.kind)
    assert seen == set(FAULT_KINDS)


def test_plan_is_drawn_from_the_seed() -> None:
    assert FaultPlan.choose(7, 3, 300, 10) == FaultPlan.choose(7, 3, 300, 10)
    plans = {(p.node, p.kind) for p in (FaultPlan.choose(s, 5, 300, 10) for s in range(60))}
    assert len({k for _, k in plans}) == len(FAULT_KINDS) and len({n for n, _ in plans}) == 5


def test_cli_reports_apply_faults(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["--mode", "apply-faults", "--seeds", "3", "--start", "12", "--steps", "300"])
    last = capsys.readouterr().out.splitlines()[-1]
    assert last.startswith("apply faults: 3 seeds, detected ")
    assert "false positives 0" in last
    assert code == (0 if "not applicable" in last else 1)


# -- the state machine's faults and chain --------------------------------------------------


def _entry(index: int, cmd: Command) -> Entry:
    return Entry(1, index, data=cmd.encode())


def _pair() -> tuple[KVStateMachine, KVStateMachine]:
    cs = ConfState(voters=(1, 2, 3))
    return KVStateMachine(1, cs), KVStateMachine(1, cs)


@pytest.mark.parametrize("kind", ["skip", "corrupt", "twice"])
def test_each_command_fault_changes_the_digest_at_its_entry(kind: FaultKind) -> None:
    good, bad = _pair()
    put = Command("put", 1, 1, "k", "v")
    for sm in (good, bad):
        sm.apply_entry(_entry(2, put))
    stale = _entry(3, put)  # a duplicate: no fault can take hold on it
    assert not bad.apply_entry(stale, kind).hit
    good.apply_entry(stale)
    assert good.chain.latest() == bad.chain.latest()
    nxt = _entry(4, Command("put", 1, 2, "k", "w"))
    good.apply_entry(nxt)
    assert bad.apply_entry(nxt, kind).hit
    assert good.chain.digest_at(3) == bad.chain.digest_at(3)
    assert good.chain.digest_at(4) != bad.chain.digest_at(4)
    assert good.digest() != bad.digest()


def test_corrupt_waits_for_a_write_and_drop_conf_for_a_conf_change() -> None:
    good, bad = _pair()
    failed_cas = _entry(2, Command("cas", 1, 1, "k", "v", expected="x"))
    good.apply_entry(failed_cas)
    assert not bad.apply_entry(failed_cas, "corrupt").hit
    cc = ConfChange(ConfChangeType.ADD_LEARNER_NODE, 4)
    conf = Entry(1, 3, type=EntryType.CONF_CHANGE, data=encode_conf_change(cc))
    assert good.apply_entry(conf).conf_change == cc
    out = bad.apply_entry(conf, "drop-conf")
    assert out.hit and out.conf_change == cc  # Raft still gets it; the stored record does not
    assert 4 in good.members and 4 not in bad.members
    assert good.chain.digest_at(2) == bad.chain.digest_at(2)
    assert good.chain.digest_at(3) != bad.chain.digest_at(3)


def test_snapshot_carries_the_chain_head() -> None:
    sm, _ = _pair()
    sm.apply_entry(_entry(2, Command("put", 1, 1, "k", "v")))
    copy = KVStateMachine.decode(sm.encode(), sm.applied, sm.conf_state)
    assert copy.chain.latest() == sm.chain.latest() and copy.digest() == sm.digest()
    nxt = _entry(3, Command("cas", 2, 1, "k", "w", expected="v"))
    assert copy.apply_entry(nxt).applied == sm.apply_entry(nxt).applied
    assert copy.chain.latest() == sm.chain.latest()
