"""The deterministic simulator against the real Raft core: many seeds, replay, mutations.

Each seed runs a cluster through random faults and a heal phase and checks
safety at every step, liveness after the heal and linearizability of the client
history.  A failing seed names the command that replays it.
"""

from __future__ import annotations

import pytest

from raftkv.raft.storage import MemoryStorage
from raftkv.raft.types import Entry, HardState, Ready, Snapshot, SnapshotMetadata
from tests.sim.__main__ import main, replay_command
from tests.sim.cluster import DEFAULT_STEPS, SeedResult, Simulation, run_seed
from tests.sim.disk import SimDisk
from tests.sim.invariants import SafetyMonitor, Violation
from tests.sim.kv import Command, KVStateMachine
from tests.sim.mutations import MUTATIONS, mutation

CHUNK = 50


def _run_range(start: int, count: int, nodes: int) -> list[SeedResult]:
    return [run_seed(seed, nodes) for seed in range(start, start + count)]


def _assert_all_ok(results: list[SeedResult]) -> None:
    failures = [
        f"{replay_command(r.seed, r.nodes, DEFAULT_STEPS, None)}\n    {r.failure}"
        for r in results
        if r.failure
    ]
    assert not failures, f"{len(failures)} failing seeds:\n" + "\n".join(failures)
    assert sum(r.completed for r in results) > 0


@pytest.mark.parametrize("start", [1, 1 + CHUNK, 1 + 2 * CHUNK])
def test_seeds_three_nodes(start: int) -> None:
    _assert_all_ok(_run_range(start, CHUNK, 3))


@pytest.mark.parametrize("start", [10_001, 10_001 + CHUNK, 10_001 + 2 * CHUNK])
def test_seeds_five_nodes(start: int) -> None:
    _assert_all_ok(_run_range(start, CHUNK, 5))


def test_same_seed_same_trace() -> None:
    first = run_seed(77, 5, 300)
    second = run_seed(77, 5, 300)
    assert first.trace == second.trace
    assert (first.ops, first.committed, first.stats) == (second.ops, second.committed, second.stats)
    assert run_seed(78, 5, 300).trace != first.trace


def test_verbose_run_prints_trace_and_keeps_digest(capsys: pytest.CaptureFixture[str]) -> None:
    quiet = run_seed(5, 3, 100)
    loud = run_seed(5, 3, 100, verbose=True)
    assert loud.trace == quiet.trace
    out = capsys.readouterr().out
    assert " role " in out and " m MSG_APP " in out


def test_faults_and_membership_are_exercised() -> None:
    totals: dict[str, int] = {}
    for seed in range(200, 210):
        res = run_seed(seed, 5, 400)
        for k, v in res.stats.items():
            totals[k] = totals.get(k, 0) + v
    for kind in ("partitions", "asymmetric", "crashes", "transfers", "conf_changes"):
        assert totals.get(kind, 0) > 0, (kind, totals)
    assert totals.get("snapshots_sent", 0) > 0, totals


def test_noop_faults_mode_commits_every_write() -> None:
    sim = Simulation(3, 3, 150, faults=False)
    res = sim.run()
    assert res.failure is None
    writes = [op for op in sim.history if op.kind != "get"]
    assert writes and all(op.ret is not None for op in writes)


def test_cli_summary_and_exit_status(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--seeds", "2", "--start", "3", "--steps", "100"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[-1].startswith("seeds: 2, violations: 0, ops: ")
    assert replay_command(1234, 5, DEFAULT_STEPS, None) == (
        "python -m tests.sim --seeds 1 --start 1234 --nodes 5 --verbose"
    )


@pytest.mark.parametrize(
    ("name", "seeds"),
    [("vote-no-uptodate", range(1, 41)), ("commit-minority", range(1, 41))],
)
def test_mutation_is_caught(name: str, seeds: range) -> None:
    with mutation(name):
        failures = [r for r in (run_seed(s, 3, 300) for s in seeds) if r.failure]
    safety = [
        r for r in failures if r.failure and r.failure.startswith(("safety", "linearizability"))
    ]
    assert safety, f"mutation {name} was not caught by seeds {seeds}"


def test_mutation_is_undone() -> None:
    from raftkv.raft.log import RaftLog

    before = RaftLog.__dict__["maybe_commit"]
    with mutation("commit-prev-term"):
        assert RaftLog.__dict__["maybe_commit"] is not before
    assert RaftLog.__dict__["maybe_commit"] is before
    assert set(MUTATIONS) >= {"commit-prev-term", "vote-no-uptodate"}


# -- the pieces the simulator is built from ------------------------------------------


def _entries(term: int, lo: int, hi: int, tag: str = "") -> tuple[Entry, ...]:
    return tuple(Entry(term, i, data=f"{tag}{i}".encode()) for i in range(lo, hi))


def test_disk_crash_keeps_only_a_prefix_of_the_write_in_flight() -> None:
    import random

    rng = random.Random(1)
    kept = set()
    for _ in range(50):
        disk = SimDisk()
        disk.storage.apply_snapshot(Snapshot(SnapshotMetadata(index=1, term=1)))
        disk.write(Ready(entries=_entries(1, 2, 6), hard_state=HardState(1, 1, 4)))
        persisted = disk.crash(rng, torn_probability=1.0)
        last = disk.storage.last_index()
        kept.add(last)
        assert disk.storage.hard_state() == HardState()  # the hard state record comes last
        assert persisted is None or persisted.entries == _entries(1, 2, last + 1)
    assert kept == {1, 2, 3, 4, 5}
    disk = SimDisk()
    disk.write(Ready(entries=_entries(1, 1, 3), hard_state=HardState(1, 1, 2)))
    disk.sync()
    assert disk.storage.last_index() == 2 and disk.storage.hard_state().commit == 2


def test_monitor_catches_two_leaders_in_one_term() -> None:
    mon = SafetyMonitor()
    mon.on_leader(1, 3)
    mon.on_leader(1, 3)
    with pytest.raises(Violation, match="election safety"):
        mon.on_leader(2, 3)


def test_monitor_catches_log_mismatch_and_changed_commit() -> None:
    mon = SafetyMonitor()
    a, b = MemoryStorage(), MemoryStorage()
    a.append(_entries(1, 1, 4, "a"))
    mon.on_durable_entries(1, _entries(1, 1, 4, "a"), a)
    b.append(_entries(1, 1, 4, "b"))
    with pytest.raises(Violation, match="log matching"):
        mon.on_durable_entries(2, _entries(1, 1, 4, "b"), b)
    mon.on_durable_commit(1, 3, a)
    with pytest.raises(Violation, match="committed entry changed"):
        mon.on_committed_entries(2, _entries(1, 3, 4, "b"))


def test_monitor_catches_incomplete_leader_and_diverged_state() -> None:
    mon = SafetyMonitor()
    old = MemoryStorage()
    old.append(_entries(1, 1, 4))
    mon.on_durable_commit(1, 3, old)
    new = MemoryStorage()
    new.append((*_entries(1, 1, 3), Entry(2, 3, data=b"other")))
    with pytest.raises(Violation, match="leader completeness"):
        mon.on_leader_persisted(2, 2, new)
    mon.on_applied(1, 5, b"x")
    with pytest.raises(Violation, match="diverged"):
        mon.on_applied(2, 5, b"y")


def test_state_machine_sessions_apply_each_request_once() -> None:
    sm = KVStateMachine()
    put = Command("put", 1, 1, "k", "a")
    assert sm.apply(1, put).fresh
    dup = sm.apply(2, put)
    assert not dup.fresh and dup.answer
    cas = Command("cas", 1, 2, "k", "b", expected="a")
    assert sm.apply(3, cas).result is True
    assert sm.apply(4, Command("put", 1, 1, "k", "old")).answer is False
    assert sm.get("k") == "b"
    copy = KVStateMachine.decode(sm.encode(), sm.applied, sm.conf_state)
    assert copy.digest() == sm.digest()
    assert Command.decode(cas.encode()) == cas
