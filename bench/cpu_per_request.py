"""CPU per request of each member of a cluster under one ``compare_etcd`` scenario or under
``etcdctl check perf``.

Owns: starting a cluster (raftkv or etcd, ``compare_etcd.LocalCluster``), running one scenario
with the same client and parameters as ``compare_etcd.py``, and reporting what each process
spent: CPU milliseconds per request of every member (the leader marked ``L``), of the load
processes, and the fraction of the machine left idle.  Optionally records a py-spy profile of
the leader and of one follower while the load runs.

On a machine where the members and the client share the cores, requests/s is bounded by the
total CPU per request across all processes; this is the figure to drive down, and it is far
less sensitive to other work on the machine than requests/s.

    python bench/cpu_per_request.py                          # raftkv, put-100, 5000 puts
    python bench/cpu_per_request.py --system etcd --scenario range-l --total 10000
    python bench/cpu_per_request.py --py-spy /tmp/prof       # leader.txt, follower.txt
    python bench/cpu_per_request.py --py-spy /tmp/prof --gil --rate 200  # Python CPU only
    python bench/cpu_per_request.py --members 1 --check-perf l   # etcdctl's Go client

``--members`` sets the cluster's size (3 by default).  ``--check-perf LOAD`` drives it with
``etcdctl check perf --load=LOAD`` (60 s, a Go client that costs little CPU) instead of the
Python load: requests are its throughput times the run's length, and the client's CPU is
etcdctl's.

Profiles are py-spy's ``raw`` (collapsed stack) format; ``--native`` adds C frames.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Protocol

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "bench"))

import compare_etcd as ce  # noqa: E402

from raftkv.benchmark import runner  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")


def process_cpu(pid: int) -> float:
    """User + system CPU seconds of ``pid`` (all its threads) so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def machine_ticks() -> tuple[int, int]:
    """(idle + iowait ticks, all ticks) of the whole machine so far."""
    with open("/proc/stat") as f:
        values = [int(x) for x in f.readline().split()[1:]]
    return values[3] + values[4], sum(values)


def start_profilers(
    targets: dict[str, int], out: Path, *, native: bool, gil: bool, rate: int
) -> list[subprocess.Popen[bytes]]:
    out.mkdir(parents=True, exist_ok=True)
    procs = []
    for name, pid in targets.items():
        argv = ["py-spy", "record", "-r", str(rate), "-f", "raw", "-o", str(out / f"{name}.txt")]
        argv += ["--native"] if native else []
        argv += ["--gil"] if gil else []
        procs.append(
            subprocess.Popen(
                [*argv, "--pid", str(pid)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
        )
    time.sleep(1.0)  # py-spy attaches before the load starts
    return procs


class Endpoints(Protocol):
    """What ``check_perf`` drives: a cluster's, or null servers', client URLs."""

    @property
    def endpoints(self) -> list[str]: ...


def check_perf(cluster: Endpoints, load: str) -> tuple[int, float, str, float]:
    """Run ``etcdctl check perf --load=load``: (requests, requests/s, its verdicts, etcdctl's
    CPU seconds).  Requests are the reported throughput times the run's length."""
    argv = [ce.ETCDCTL_BIN, "--endpoints", ",".join(cluster.endpoints), "check", "perf"]
    reaped_cpu = sum(resource.getrusage(resource.RUSAGE_CHILDREN)[:2])
    t0 = time.monotonic()
    proc = subprocess.Popen(
        [*argv, f"--load={load}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "ETCDCTL_API": "3"},
    )
    out, _ = proc.communicate(timeout=600)
    elapsed = time.monotonic() - t0
    # etcdctl was reaped by communicate(): its CPU is what the reaped children's total grew by.
    client_cpu = sum(resource.getrusage(resource.RUSAGE_CHILDREN)[:2]) - reaped_cpu
    lines = ce.parse_check_perf(out)
    m = re.search(r"Throughput (?:is|too low:) (\d+) writes/s", out)
    if m is None:
        raise RuntimeError(f"etcdctl check perf printed no throughput:\n{out}")
    rps = float(m.group(1))
    verdicts = ", ".join(lines.get(k, "?") for k in ("throughput", "slowest", "stddev"))
    return max(1, round(rps * elapsed)), rps, verdicts, client_cpu


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--system", choices=("raftkv", "etcd"), default="raftkv")
    ap.add_argument("--scenario", default="put-100", help="one of compare_etcd's scenarios")
    ap.add_argument("--members", type=int, default=3, help="cluster size")
    ap.add_argument(
        "--check-perf", default="", metavar="LOAD", help="etcdctl check perf --load=LOAD instead"
    )
    ap.add_argument("--total", type=int, default=5000, help="requests in the run")
    ap.add_argument("--val-size", type=int, default=256)
    ap.add_argument("--procs", type=int, default=0, help="load processes (0 = cpu count)")
    ap.add_argument("--py-spy", default="", help="directory for leader/follower profiles")
    ap.add_argument("--native", action="store_true", help="profiles include native frames")
    ap.add_argument(
        "--gil",
        action="store_true",
        help="sample only threads holding the GIL (Python's CPU, not its waiting)",
    )
    ap.add_argument("--rate", type=int, default=50, help="py-spy samples per second")
    args = ap.parse_args(argv)
    by_name = {s.name: s for s in ce.scenarios(args.val_size)}
    if args.scenario not in by_name:
        ap.error(f"unknown scenario {args.scenario}; one of {', '.join(by_name)}")
    sc = by_name[args.scenario]
    if args.py_spy and shutil.which("py-spy") is None:
        ap.error("py-spy is not installed (pip install py-spy)")

    root = Path(tempfile.mkdtemp(prefix=f"cpu-{args.system}-"))
    cluster = ce.LocalCluster(args.system, root, size=args.members)
    try:
        cluster.start()
        ce.etcdctl(",".join(cluster.endpoints), "put", ce.RANGE_KEY.decode(), "x" * args.val_size)
        leader = cluster.leader_pid()
        pids = cluster.pids()
        follower = next((p for p in pids if p != leader), None)
        spies = []
        if args.py_spy:
            assert leader is not None
            targets = {"leader": leader} | ({"follower": follower} if follower else {})
            spies = start_profilers(
                targets, Path(args.py_spy), native=args.native, gil=args.gil, rate=args.rate
            )
        cfg = sc.load(cluster.endpoints, args.total, args.procs)
        before = {p: process_cpu(p) for p in pids}
        idle0 = machine_ticks()
        if args.check_perf:
            n, rps, detail, client_cpu = check_perf(cluster, args.check_perf)
        else:
            stats = runner.run(cfg)
            n, rps, client_cpu = args.total, stats.rps, stats.client_cpu
            detail = f"p99 {stats.percentile_map()['p99'] * 1e3:.1f} ms"
        idle1 = machine_ticks()
        spent = {p: process_cpu(p) - before[p] for p in pids}
        for spy in spies:
            spy.send_signal(2)  # SIGINT: py-spy writes the profile and exits
        for spy in spies:
            spy.wait(30)
    finally:
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)

    idle = (idle1[0] - idle0[0]) / max(1, idle1[1] - idle0[1])
    title = f"etcdctl check perf --load={args.check_perf}" if args.check_perf else sc.title
    print(f"{args.system} ({args.members} members) {title}: {rps:.0f} req/s, {detail}")
    members = " ".join(f"{'L' if p == leader else 'F'}:{spent[p] / n * 1e3:.3f}" for p in pids)
    total = sum(spent.values()) / n * 1e3
    print(f"member CPU ms/request: {members} (sum {total:.3f})")
    print(f"client CPU ms/request: {client_cpu / n * 1e3:.3f}")
    print(f"machine idle during the load (includes the client start-up): {idle:.0%}")
    if args.py_spy:
        print(f"profiles: {args.py_spy}/leader.txt, {args.py_spy}/follower.txt")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
