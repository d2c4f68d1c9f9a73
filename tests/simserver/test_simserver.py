"""The server simulator: the members' own code under seeded faults, replay, mutations.

Each seed runs three real ``Member`` objects (Ready loop, WAL, LMDB backend, applier, lessor,
guard, hash checks) on virtual time and a simulated network through partitions, loss,
crashes with torn WAL tails, clock jumps, failing fsyncs and full disks, then heals and checks
convergence, alarms, leases, watches and the linearizability of the clients' history.  Apply
faults and bit flips at rest (``--apply-faults``) and membership changes (``--membership``)
run in their own chunks; seeds beyond CI's ranges that once failed run every time.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

import lmdb
import pytest

from raftkv import build_info
from raftkv.mvcc.backend import BUCKET_KEY, flip_last_byte
from raftkv.raft.types import Message
from tests.raft import test_paper
from tests.simserver.__main__ import main, replay_command
from tests.simserver.loop import Process, SimulationStuckError, VirtualLoop
from tests.simserver.mutations import MUTATIONS, mutation
from tests.simserver.network import SimTransport
from tests.simserver.simulation import (
    FAULT_KINDS,
    SeedResult,
    SimParams,
    Simulation,
    raft_limits,
)

CHUNK = 30
# Seeds beyond CI's ranges that once failed, run on every CI: each found a bug, fixed since.
REGRESSION_SEEDS = (
    3247,  # a leader cut off from the others revoked a lease its successor kept alive
    3281,  # the same
    3344,  # the same
    7728,  # the safety monitor read a leader's term after persisting, not the Ready's (a
    # message stepped meanwhile had moved it on): a false "two leaders in one term"
)
APPLY_FAULT_REGRESSION_SEEDS = (
    88,  # a copy's receiver could never be confirmed: only a named member was left to do it
    106,  # an unconfirmed copy of the faulty leader's state outvoted the healthy voter
    115,  # a tie between a healthy copy and the faulty voter (nobody may be named)
    147,  # an applier that could not load a flipped value left its LMDB environment open
    191,  # named by a state hash check, then its history replaced by a snapshot: never located
    248,  # a leader under a CORRUPT alarm kept handing leadership to a voter that needed a
    # snapshot it would not send (it is fenced), so no leader served; 441 the same
    386,  # a fenced leader whose apply had stopped (a corrupt backend) renewed, for a
    # follower, a lease committed entries had revoked: the lease's key was gone while the
    # holder's keepalive had been answered
    440,  # a search for the first divergence mixed a member's history with the one an
    441,
    454,  # install brought mid-search, and placed the divergence late (440 and 454)
    1078,  # a lease's key read from the faulted member counted as an early expiry
)
# Where a mutation is caught when the first twenty seeds (default parameters) do not catch it:
# the parameters and the seeds that do.
MUTATION_RUNS: dict[str, tuple[SimParams, tuple[int, ...]]] = {
    "digest-history-forgotten": (SimParams(apply_fault=True), (1,)),
    "leader-renews-unchecked": (SimParams(apply_fault=True), (386,)),
    "lease-revoke-unconfirmed": (SimParams(), REGRESSION_SEEDS),
    # A stale linearizable read; which seed shows it moves with every change of trajectory
    # (370 before the forwarded keepalives waited for a read index, 456 since).
    "read-index-before-commit": (SimParams(), (370, 456)),
}
# Core mutations no seed of either simulator has caught (the window needs a leader cut off
# right after its election and the old one re-elected: Raft's figure 8), and the unit test
# that catches each.
NOT_SIMULATED: dict[str, Callable[[], None]] = {
    "commit-prev-term": test_paper.test_5_4_2_leader_does_not_commit_previous_term_entry_by_counting,
}
MEMBERSHIP_REGRESSION_SEEDS = (
    192,  # a joined member's snapshot, received but its commit not durable, stopped restarts
    239,  # a member added while healing (the simulation's own bug)
    243,  # as 192
    357,  # a lagging member refused the leader that joined after what it had applied
    444,  # 67 pending writes: the linearizability search did not end
    454,  # a member crashed while it rediscovered its peers kept its WAL locked (simulation)
)


def _assert_all_ok(results: list[SeedResult], params: SimParams | None = None) -> None:
    params = params or SimParams()
    failures = [f"{replay_command(r.seed, params)}\n    {r.failure}" for r in results if r.failure]
    assert not failures, f"{len(failures)} failing seeds:\n" + "\n".join(failures)
    assert sum(r.answered for r in results) > 0


def _run_chunk(start: int, params: SimParams) -> Counter[str]:
    """Run seeds ``start`` .. ``start + CHUNK - 1``, all must pass; the faults they injected."""
    results = [Simulation(seed, params).run() for seed in range(start, start + CHUNK)]
    _assert_all_ok(results, params)
    faults = Counter[str]()
    for r in results:
        faults.update(r.faults)
    return faults


@pytest.mark.parametrize("start", [1 + i * CHUNK for i in range(10)])
def test_seeds(start: int) -> None:
    _assert_all_ok([Simulation(seed).run() for seed in range(start, start + CHUNK)])


@pytest.mark.parametrize("start", [1, 1 + CHUNK])
def test_apply_fault_seeds(start: int) -> None:
    """One apply fault (a corrupted or skipped put) or disk fault (a stored value's bit flipped
    at rest) per seed on one member, under network faults, crashes and restarts: the guard names
    that member (and the entry an apply fault hit first, also after the member restarted), and
    nobody else; a member that restarts on a flipped value refuses to start, naming it; every
    member named is then repaired by ``member repair``."""
    faults = _run_chunk(start, SimParams(apply_fault=True))
    named = (
        faults["apply fault named at its entry"]
        + faults["bit flip named"]
        + faults["bit flip named at start-up"]
    )
    assert named >= CHUNK // 2, f"only {named} of {CHUNK} faults were named"
    assert faults["bit flip named"] > 0
    assert faults["repaired"] > 0  # every member named was repaired (or the seed failed)


def test_five_members_small_appends() -> None:
    """Five voters whose Raft appends carry few entries with few in flight (per seed): logs
    repaired one entry per round, two members down at once without losing the quorum."""
    params = SimParams(members=5, small_appends=True)
    results = [Simulation(seed, params).run() for seed in range(1, 16)]
    _assert_all_ok(results, params)
    limits = {raft_limits(seed, params) for seed in range(1, 16)}
    assert len(limits) > 1 and all(size <= 256 for size, _inflight in limits)


def test_regression_seeds() -> None:
    _assert_all_ok([Simulation(seed).run() for seed in REGRESSION_SEEDS])
    for params, seeds in (
        (SimParams(apply_fault=True), APPLY_FAULT_REGRESSION_SEEDS),
        (SimParams(membership=True), MEMBERSHIP_REGRESSION_SEEDS),
    ):
        _assert_all_ok([Simulation(seed, params).run() for seed in seeds], params)


@pytest.mark.parametrize("start", [1, 1 + CHUNK])
def test_membership_seeds(start: int) -> None:
    """The operator adds learners, promotes them and removes voters through the Cluster
    service while the faults run: joins, catch-up by snapshot, members that lag behind a
    change, removed members that stop."""
    changes = _run_chunk(start, SimParams(membership=True))
    assert changes["add a learner"] and changes["promote the learner"]


def test_every_fault_kind_is_injected() -> None:
    faults: Counter[str] = Counter()
    for seed in range(1, 6):
        faults.update(Simulation(seed).run().faults)
    assert set(faults) == {*FAULT_KINDS, "disk full"}  # "fsync fails" draws either disk fault


def test_same_seed_same_trace() -> None:
    first = Simulation(7).run()
    second = Simulation(7).run()
    assert first.failure is None
    assert (first.trace, first.operations, first.answered, first.faults) == (
        second.trace,
        second.operations,
        second.answered,
        second.faults,
    )
    assert Simulation(8).run().trace != first.trace


@pytest.mark.pure_python
def test_a_mutation_is_undone_on_exit() -> None:
    from raftkv.raft.log import RaftLog

    before = RaftLog.__dict__["maybe_commit"]
    with mutation("commit-prev-term"):
        assert RaftLog.__dict__["maybe_commit"] is not before
    assert RaftLog.__dict__["maybe_commit"] is before


def _mutation_params(names: Iterable[str]) -> list[Any]:
    """``names`` as parameters, marked ``pure_python`` where the mutation patches a module
    that may run compiled (``raftkv.build_info.may_be_compiled``)."""

    def patches_compiled(name: str) -> bool:
        return any(build_info.may_be_compiled(owner) for owner, _a, _v in MUTATIONS[name].patch())

    return [
        pytest.param(n, marks=pytest.mark.pure_python) if patches_compiled(n) else n
        for n in sorted(names)
    ]


@pytest.mark.parametrize("name", _mutation_params(NOT_SIMULATED))
def test_unsimulated_mutations_are_caught_by_their_unit_test(name: str) -> None:
    with mutation(name), pytest.raises(AssertionError):
        NOT_SIMULATED[name]()
    NOT_SIMULATED[name]()  # and it passes without


@pytest.mark.parametrize("name", _mutation_params(set(MUTATIONS) - set(NOT_SIMULATED)))
def test_every_mutation_is_caught(name: str) -> None:
    """Some seed among the first twenty (or those ``MUTATION_RUNS`` names) fails under each
    deliberate bug of the server or the Raft core."""
    params, extra = MUTATION_RUNS.get(name, (SimParams(), ()))
    with mutation(name):
        for seed in (*range(1, 21), *extra):
            if Simulation(seed, params).run().failure:
                return
    pytest.fail(f"mutation {name!r} survived twenty seeds and {extra}")


def test_a_snapshot_corrupted_on_the_senders_disk_is_refused_not_installed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The first backend copy a leader sends in seed 2 is damaged on its disk after the leader
    checked it (one stored value's last byte inverted, as ``backendBitFlip`` does): the
    follower refuses it, stays up, and converges from a later snapshot.  Installed, the copy
    would stop that member (``m1 stopped by itself: mvcc: backend corruption ...``)."""
    send = SimTransport.send_snapshot
    damaged: list[str] = []

    def send_damaged(self: SimTransport, m: Message, db_path: str) -> None:
        if not damaged:
            env: Any = lmdb.open(db_path, subdir=False, lock=False, max_dbs=64)
            with env.begin(write=True) as txn:
                db = env.open_db(BUCKET_KEY.encode(), txn=txn, create=False)
                key, stored = next(iter(txn.cursor(db=db)))
                txn.put(key, flip_last_byte(stored), db=db)
            env.close()
            damaged.append(db_path)
        send(self, m, db_path)

    monkeypatch.setattr(SimTransport, "send_snapshot", send_damaged)
    result = Simulation(2).run()
    assert len(damaged) == 1
    assert result.failure is None
    assert result.network["snapshot refused"] == 1


def test_cli_reports_and_replays(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--seeds", "1", "--start", "3", "--duration", "5"]) == 0
    out = capsys.readouterr().out
    assert "seed 3: ok" in out and "1 seeds, 0 failed" in out and "seeds per CPU-minute" in out
    assert main(["--seeds", "2", "--start", "3", "--duration", "5", "--jobs", "2"]) == 0
    out = capsys.readouterr().out  # two processes: the same results, in seed order
    assert out.index("seed 3: ok") < out.index("seed 4: ok")
    assert "2 seeds, 0 failed" in out
    assert main(["--seeds", "1", "--start", "4", "--duration", "5"]) == 0
    alone = capsys.readouterr().out
    assert alone.split("trace ")[1].split()[0] == out.split("trace ")[2].split()[0]
    assert main(["--seeds", "1", "--start", "1", "--mutation", "fsync-error-ignored"]) == 1
    out = capsys.readouterr().out
    assert "FAILED" in out
    assert "python -m tests.simserver --seeds 1 --start 1 --mutation fsync-error-ignored" in out


def test_a_killed_process_runs_nothing_more() -> None:
    loop = VirtualLoop()
    ticks: list[tuple[str, float]] = []

    async def ticking(name: str) -> None:
        while True:
            await asyncio.sleep(1.0)
            ticks.append((name, loop.time()))

    async def main_() -> None:
        a, b = Process("a"), Process("b")
        a.spawn(loop, ticking("a"))
        b.spawn(loop, ticking("b"))
        await asyncio.sleep(2.5)
        a.kill()
        await asyncio.sleep(2.0)

    loop.run_until_complete(main_())
    loop.close()
    assert ticks == [("a", 1.0), ("b", 1.0), ("a", 2.0), ("b", 2.0), ("b", 3.0), ("b", 4.0)]


def test_a_stuck_simulation_says_so() -> None:
    loop = VirtualLoop()

    async def forever() -> None:
        await loop.create_future()

    with pytest.raises(SimulationStuckError, match="nothing is ready and no timer is set"):
        loop.run_until_complete(forever())
    loop.close()


@pytest.mark.skipif(not build_info.core_compiled(), reason="the Raft core runs pure Python here")
def test_the_compiled_core_runs_each_seed_as_the_pure_one() -> None:
    """mypyc's build of the Raft core (``setup.py``) must not change what any seed does: the
    same traces as the pure-Python core, run in a process with ``RAFTKV_PURE_PYTHON``."""
    seeds = range(1, 7)
    compiled = [Simulation(seed).run().trace for seed in seeds]
    env = {**os.environ, build_info.PURE_PYTHON_ENV: "1"}
    argv = [sys.executable, "-m", "tests.simserver", "--seeds", str(len(seeds)), "--start", "1"]
    out = subprocess.run(argv, env=env, capture_output=True, text=True, check=False).stdout
    assert re.findall(r"trace ([0-9a-f]{16})", out) == compiled, out
