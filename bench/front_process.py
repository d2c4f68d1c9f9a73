"""Does a member that serves gRPC from more than one process pay on this machine?

Runs the same load against raftkv members serving gRPC themselves and against members behind
``--grpc-front-processes K`` (``raftkv.app.fronts``), alternated, optionally with etcd in each
round, and prints requests/s and the CPU milliseconds per request of the members, of their
front processes and of the client.

    python bench/front_process.py --fronts 1 --load l --rounds 3 --etcd        # 1 member, check perf
    python bench/front_process.py --members 3 --scenario put-100 --rounds 3 --etcd

``--scenario check-perf`` (the default) drives the cluster with ``etcdctl check perf
--load=LOAD`` (a Go client, cheap in CPU); any of ``compare_etcd.py``'s scenarios uses its
Python load generator.

``--setups`` chooses what runs in each round, in that order: ``etcd``, ``alone`` (raftkv members
serving gRPC themselves), ``fronts`` (each member behind ``--fronts`` front processes) and
``null`` (null grpc.aio servers in the members' place, ``--fronts`` processes per member:
``grpc_ceiling.NullFleet``, the ceiling of any member on Python's gRPC).  ``--etcd`` and
``--null`` add those two to the default ``alone,fronts``.  After an etcd run each row also gives
its ratio to etcd's throughput in the same round.

    python bench/front_process.py --members 3 --scenario range-s --rounds 5 --etcd --null
    python bench/front_process.py --members 3 --scenario put-100 --rounds 5 --setups etcd,null
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "bench"))

import compare_etcd as ce  # noqa: E402
from cpu_per_request import check_perf, machine_ticks, process_cpu  # noqa: E402
from grpc_ceiling import NullFleet  # noqa: E402

SETUPS = {"etcd", "alone", "fronts", "null"}


def children(pid: int) -> list[int]:
    """The child processes of ``pid`` (a member's fronts)."""
    out: list[int] = []
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/children") as f:
            out += [int(c) for c in f.read().split()]
    return out


def run_load(
    args: argparse.Namespace, cluster: ce.LocalCluster | NullFleet
) -> tuple[int, float, str, float]:
    """(requests, requests/s, detail, the client's CPU seconds) of one load run."""
    if args.scenario == "check-perf":
        return check_perf(cluster, args.load)
    from raftkv.benchmark import runner

    sc = {s.name: s for s in ce.scenarios(256)}[args.scenario]
    stats = runner.run(sc.load(cluster.endpoints, args.total))
    return (
        args.total,
        stats.rps,
        f"p99 {stats.percentile_map()['p99'] * 1e3:.1f} ms",
        stats.client_cpu,
    )


def measure(args: argparse.Namespace, setup: str, etcd_rps: float = 0.0) -> float:
    """One run of ``setup`` ("etcd"; "alone": raftkv members serving gRPC themselves;
    "fronts": each member with ``args.fronts`` front processes; "null": null servers in the
    members' place); prints one table row (with its ratio to ``etcd_rps`` when given) and
    returns its requests/s."""
    root = Path(tempfile.mkdtemp(prefix="front-process-"))
    kind = "etcd" if setup == "etcd" else "raftkv"
    fronts = args.fronts if setup == "fronts" else 0
    os.environ["RAFTKV_GRPC_FRONT_PROCESSES"] = str(fronts)
    cluster: ce.LocalCluster | NullFleet = (
        NullFleet(args.members, args.fronts)
        if setup == "null"
        else ce.LocalCluster(kind, root, size=args.members)
    )
    try:
        if isinstance(cluster, NullFleet):
            members = [proc.pid for proc in cluster.procs]
        else:
            cluster.start()
            members = cluster.pids()
        helpers = [c for pid in members for c in children(pid)] if fronts else []
        before = {pid: process_cpu(pid) for pid in [*members, *helpers]}
        idle0 = machine_ticks()
        n, rps, detail, client_cpu = run_load(args, cluster)
        idle1 = machine_ticks()
        spent = {pid: process_cpu(pid) - cpu for pid, cpu in before.items()}
    finally:
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)
    member = sum(spent[pid] for pid in members) / n * 1e3
    front = sum(spent[pid] for pid in helpers) / n * 1e3
    idle = (idle1[0] - idle0[0]) / max(1, idle1[1] - idle0[1])
    name = {
        "etcd": "etcd",
        "alone": "raftkv",
        "fronts": f"raftkv, {fronts} front(s) per member",
        "null": f"null grpc.aio, {args.fronts} per member",
    }[setup]
    ratio = f"{rps / etcd_rps:.2f}" if etcd_rps and setup != "etcd" else ""
    print(
        f"| {name} | {rps:.0f} | {ratio} | {member:.3f} | {front:.3f} "
        f"| {client_cpu / n * 1e3:.3f} | {idle:.0%} | {detail} |",
        flush=True,
    )
    return rps


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fronts", type=int, default=1, help="front processes per member (default 1)")
    ap.add_argument("--members", type=int, default=1, help="cluster size (default 1)")
    ap.add_argument(
        "--scenario",
        default="check-perf",
        help="check-perf (etcdctl, default) or one of compare_etcd's scenarios (put-100, ...)",
    )
    ap.add_argument("--load", default="l", help="etcdctl check perf --load (default l)")
    ap.add_argument("--total", type=int, default=20000, help="requests of a scenario run")
    ap.add_argument(
        "--setups",
        default="alone,fronts",
        help="what runs in each round, in order: etcd, alone, fronts, null (default alone,fronts)",
    )
    ap.add_argument("--etcd", action="store_true", help="run etcd first in each round")
    ap.add_argument("--null", action="store_true", help="run null grpc.aio servers last")
    ap.add_argument("--rounds", type=int, default=1, help="alternated rounds")
    args = ap.parse_args()
    setups = args.setups.split(",")
    if unknown := set(setups) - SETUPS:
        ap.error(f"unknown setups: {', '.join(sorted(unknown))}")
    setups = (["etcd"] if args.etcd else []) + setups + (["null"] if args.null else [])
    print(
        "| setup | requests/s | vs etcd | members' CPU ms/request | fronts' | client's | idle "
        "| detail |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for _ in range(args.rounds):
        etcd_rps = 0.0
        for setup in setups:
            rps = measure(args, setup, etcd_rps)
            if setup == "etcd":
                etcd_rps = rps
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
