"""Command line of the server simulator: ``python -m tests.simserver --seeds N [--start S]``.

Owns: running a range of seeds (in ``--jobs`` processes; each seed is independent and its
result the same in any process), the replay line of each failure, the summary (seeds,
failures, faults by kind, operations, CPU per seed) and the exit status (1 when any seed
failed).
"""

from __future__ import annotations

import argparse
import multiprocessing
import sys
from collections import Counter
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor

from tests.simserver.mutations import MUTATIONS, mutation
from tests.simserver.simulation import SeedResult, SimParams, Simulation


def replay_command(seed: int, params: SimParams, mutation_name: str | None = None) -> str:
    cmd = f"python -m tests.simserver --seeds 1 --start {seed}"
    if mutation_name:
        cmd += f" --mutation {mutation_name}"
    if params.duration != SimParams.duration:
        cmd += f" --duration {params.duration:g}"
    if not params.faults:
        cmd += " --no-faults"
    if params.apply_fault:
        cmd += " --apply-faults"
    if params.membership:
        cmd += " --membership"
    if params.small_appends:
        cmd += " --small-appends"
    if params.members != SimParams.members:
        cmd += f" --members {params.members}"
    return cmd + " --verbose"


def _run_seed(seed: int, params: SimParams, mutation_name: str | None, verbose: bool) -> SeedResult:
    sim = Simulation(seed, params)
    sim.verbose = verbose
    with mutation(mutation_name):
        return sim.run()


def _results(
    seeds: range, params: SimParams, mutation_name: str | None, verbose: bool, jobs: int
) -> Iterator[SeedResult]:
    """Each seed's result, in seed order."""
    if jobs <= 1:
        for seed in seeds:
            yield _run_seed(seed, params, mutation_name, verbose)
        return
    fork = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(max_workers=jobs, mp_context=fork) as pool:
        n = len(seeds)
        yield from pool.map(
            _run_seed, seeds, [params] * n, [mutation_name] * n, [verbose] * n, chunksize=4
        )


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.simserver", description=__doc__)
    ap.add_argument("--seeds", type=int, default=10, help="number of seeds to run")
    ap.add_argument("--start", type=int, default=1, help="first seed")
    ap.add_argument(
        "--duration",
        type=float,
        default=SimParams.duration,
        help="virtual seconds of the fault phase",
    )
    ap.add_argument("--no-faults", action="store_true", help="run without faults")
    ap.add_argument(
        "--membership",
        action="store_true",
        help="the operator also adds learners, promotes them and removes voters",
    )
    ap.add_argument(
        "--apply-faults",
        action="store_true",
        help="one apply fault per seed on one member: the guard must name it and its entry",
    )
    ap.add_argument(
        "--members", type=int, default=SimParams.members, help="voters the cluster starts with"
    )
    ap.add_argument(
        "--small-appends",
        action="store_true",
        help="Raft appends carry few entries (down to one) with few in flight, per seed",
    )
    ap.add_argument(
        "--mutation",
        choices=sorted(MUTATIONS),
        default=None,
        help="run with a deliberate server bug (tests.simserver.mutations)",
    )
    ap.add_argument(
        "--jobs", type=int, default=1, help="processes running seeds side by side (one per core)"
    )
    ap.add_argument("--verbose", action="store_true", help="print each seed's trace")
    ap.add_argument("--quiet", action="store_true", help="print only failures and the summary")
    args = ap.parse_args(argv)
    params = SimParams(
        duration=args.duration,
        faults=not args.no_faults,
        apply_fault=args.apply_faults,
        membership=args.membership,
        small_appends=args.small_appends,
        members=args.members,
    )
    failures = 0
    faults: Counter[str] = Counter()
    network: Counter[str] = Counter()
    wal_bytes_lost = 0
    ops = answered = 0
    cpu = 0.0
    if args.verbose and args.jobs > 1:
        ap.error("--verbose prints one trace at a time: use it with --jobs 1")
    seeds = range(args.start, args.start + args.seeds)
    for seed, res in zip(
        seeds, _results(seeds, params, args.mutation, args.verbose, args.jobs), strict=True
    ):
        faults.update(res.faults)
        network.update(res.network)
        wal_bytes_lost += res.wal_bytes_lost
        ops += res.operations
        answered += res.answered
        cpu += res.cpu_seconds
        if res.failure:
            failures += 1
            print(f"seed {seed}: FAILED: {res.failure}")
            print(f"  replay: {replay_command(seed, params, args.mutation)}")
        elif not args.quiet:
            print(
                f"seed {seed}: ok  {res.operations} ops ({res.answered} answered), "
                f"{res.virtual_seconds:.0f}s virtual, {res.cpu_seconds:.1f}s CPU, "
                f"trace {res.trace}"
            )
        sys.stdout.flush()
    n = args.seeds
    print(
        f"{n} seeds, {failures} failed; {ops} operations ({answered} answered); "
        f"faults: {dict(sorted(faults.items()))}; "
        f"network: {dict(sorted(network.items()))}; "
        f"unsynced WAL bytes lost at crashes: {wal_bytes_lost}; "
        f"{cpu / max(n, 1):.2f}s CPU per seed ({60 * n / max(cpu, 1e-9):.1f} seeds per CPU-minute)"
    )
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
