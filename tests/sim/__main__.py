"""Command line of the simulator: ``python -m tests.sim --seeds N [--start S] ...``.

Owns: argument parsing, running a range of seeds (optionally under a mutation),
the per-failure replay line, the summary line and the exit status (1 when any
seed failed), the no-fault throughput mode and the apply-fault mode (one apply fault
per seed: exit 1 unless every applicable seed names exactly the faulty member and the
entry the fault hit, with no false positive).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

from tests.sim.cluster import DEFAULT_STEPS, SeedResult, Simulation
from tests.sim.guard import ApplyVerdict, summarize
from tests.sim.mutations import MUTATIONS, mutation


def replay_command(
    seed: int, nodes: int, steps: int, mutation_name: str | None, mode: str = "faults"
) -> str:
    cmd = f"python -m tests.sim --seeds 1 --start {seed} --nodes {nodes}"
    if mode != "faults":
        cmd += f" --mode {mode}"
    if steps != DEFAULT_STEPS:
        cmd += f" --steps {steps}"
    if mutation_name:
        cmd += f" --mutation {mutation_name}"
    return cmd + " --verbose"


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m tests.sim", description=__doc__)
    ap.add_argument("--seeds", type=int, default=10, help="number of seeds to run")
    ap.add_argument("--start", type=int, default=1, help="first seed")
    ap.add_argument("--nodes", type=int, choices=(3, 5), default=3)
    ap.add_argument("--steps", type=int, default=DEFAULT_STEPS, help="ticks of the fault phase")
    ap.add_argument("--mode", choices=("faults", "noop-faults", "apply-faults"), default="faults")
    ap.add_argument("--mutation", choices=sorted(MUTATIONS), default=None)
    ap.add_argument("--verbose", action="store_true", help="print the trace of each seed")
    ap.add_argument("--quiet", action="store_true", help="print only failures and the summary")
    return ap


def _throughput(args: argparse.Namespace) -> int:
    proposed = committed = 0
    cpu = 0.0
    failures = 0
    for seed in range(args.start, args.start + args.seeds):
        sim = Simulation(seed, 3, args.steps, faults=False)
        sim.verbose = args.verbose
        res = sim.run()
        writes = [op for op in sim.history if op.kind != "get"]
        proposed += len(writes)
        committed += sum(1 for op in writes if op.ret is not None)
        cpu += res.cpu_seconds
        if res.failure:
            failures += 1
            print(f"seed {seed} FAILED: {res.failure}")
    print(
        f"noop-faults: 3 nodes, {args.seeds} seeds, {proposed} writes proposed, "
        f"{committed} committed in {cpu:.2f} CPU-s: {committed / cpu:.0f} committed ops/CPU-second"
    )
    return 1 if failures else 0


def _apply_faults(args: argparse.Namespace) -> int:
    verdicts: list[ApplyVerdict] = []
    violations = 0
    cpu = 0.0
    with mutation(args.mutation):
        for seed in range(args.start, args.start + args.seeds):
            sim = Simulation(seed, args.nodes, args.steps, apply_faults=True)
            sim.verbose = args.verbose
            res = sim.run()
            cpu += res.cpu_seconds
            assert res.apply is not None
            verdict = res.apply
            verdicts.append(verdict)
            replay = replay_command(seed, args.nodes, args.steps, args.mutation, "apply-faults")
            if res.failure:
                violations += 1
                print(f"FAIL seed {seed}: {replay}\n    {res.failure.splitlines()[0]}")
            if not verdict.ok:
                print(f"FAIL seed {seed}: {replay}\n    {verdict.why}")
            elif not args.quiet:
                state = "ok  " if verdict.applicable else "n/a "
                print(f"{state} seed {seed}: {verdict.why}")
    line, ok = summarize(verdicts)
    print(f"{line}; other violations {violations}; cpu per seed {cpu / max(args.seeds, 1):.2f}s")
    return 0 if ok and not violations else 1


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.mode == "noop-faults":
        return _throughput(args)
    if args.mode == "apply-faults":
        return _apply_faults(args)
    results: list[SeedResult] = []
    wall = time.perf_counter()
    with mutation(args.mutation):
        for seed in range(args.start, args.start + args.seeds):
            sim = Simulation(seed, args.nodes, args.steps)
            sim.verbose = args.verbose
            res = sim.run()
            results.append(res)
            if res.failure:
                first = res.failure.splitlines()[0]
                print(
                    f"FAIL seed {seed}: {replay_command(seed, args.nodes, args.steps, args.mutation)}"
                )
                print(f"    {first}")
                for line in res.failure.splitlines()[1:20]:
                    print(f"    {line}")
            elif not args.quiet:
                print(
                    f"ok   seed {seed}: ops {res.ops} (pending {res.pending}) "
                    f"commit {res.committed} cpu {res.cpu_seconds:.2f}s trace {res.trace[:12]} "
                    + " ".join(f"{k}={v}" for k, v in sorted(res.stats.items()))
                )
    violations = sum(1 for r in results if r.failure)
    ops = sum(r.ops for r in results)
    cpu = sum(r.cpu_seconds for r in results)
    check = max((r.check_seconds for r in results), default=0.0)
    print(
        f"seeds: {len(results)}, violations: {violations}, ops: {ops}, "
        f"cpu per seed: {cpu / max(len(results), 1):.2f}s (slowest history check {check:.2f}s), "
        f"wall: {time.perf_counter() - wall:.1f}s"
    )
    return 1 if violations else 0


if __name__ == "__main__":
    sys.exit(main())
