"""Recovery point of ``raftkv backup run``: how far behind the cluster the newest verified
backup is while writes arrive at a steady rate.

Owns: a 3-member raftkv (``compare_etcd.LocalCluster``), the agent with ``--delta-interval``,
``raftkv benchmark --rate`` puts of 256 B for ``--seconds``, and sampling the agent's
``raftkv_backup_recovery_point_lag_seconds`` every 0.5 s; prints the distribution and the
deltas' verification times from the manifest.

Run from the repository root::

    python bench/backup_rpo.py --delta-interval 10s --rate 1000 --seconds 60

The cluster, the load and the agent share the machine: on 2 cores the load may not reach
``--rate``; the achieved rate is printed.  Nothing here asserts on the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from compare_etcd import REPO, LocalCluster, free_ports, log  # noqa: E402

_LAG = re.compile(r"^raftkv_backup_recovery_point_lag_seconds (\S+)", re.M)


def lag(port: int) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        m = _LAG.search(resp.read().decode())
    return float(m.group(1)) if m else 0.0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--delta-interval", default="10s")
    p.add_argument("--rate", type=int, default=1000)
    p.add_argument("--seconds", type=int, default=60)
    args = p.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="backup-rpo-"))
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    cluster = LocalCluster("raftkv", root)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        cluster.start()
        eps = ",".join(cluster.endpoints)
        (port,) = free_ports(1)
        with open(root / "agent.log", "wb") as out:
            agent = subprocess.Popen(
                [sys.executable, "-m", "raftkv.ctl.main", "backup", "run",
                 "--endpoints", eps, "--dir", str(root / "backups"),
                 "--delta-interval", args.delta_interval, "--full-interval", "30m",
                 "--listen-metrics-urls", f"http://127.0.0.1:{port}"],
                stdout=out, stderr=subprocess.STDOUT, env=env,
            )  # fmt: skip
            procs.append(agent)
        deadline = time.monotonic() + 120
        while True:  # the first verified full backup
            try:
                if lag(port) > 0:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError((root / "agent.log").read_text()[-3000:])
            time.sleep(0.3)
        with open(root / "bench.out", "wb") as out:
            bench = subprocess.Popen(
                [sys.executable, "-m", "raftkv.ctl.main", "benchmark", "--endpoints", eps,
                 "--clients", "64", "--conns", "16", "--rate", str(args.rate),
                 "--total", str(args.rate * args.seconds), "put",
                 "--key-space-size", "100000", "--val-size", "256"],
                stdout=out, stderr=subprocess.STDOUT, env=env,
            )  # fmt: skip
            procs.append(bench)
        t0 = time.monotonic()
        time.sleep(5)  # the load and the first delta settle
        samples = []
        while bench.poll() is None:
            samples.append(lag(port))
            time.sleep(0.5)
        elapsed = time.monotonic() - t0
        summary = (root / "bench.out").read_text()
        rps = re.search(r"Requests/sec:\s*(\S+)", summary)
        samples.sort()
        log(f"load: {rps.group(1) if rps else '?'} puts/s over {elapsed:.0f} s")
        print(
            f"delta-interval {args.delta_interval}: {len(samples)} samples: median "
            f"{statistics.median(samples):.1f} s, p90 {samples[int(0.9 * len(samples))]:.1f} s, "
            f"max {samples[-1]:.1f} s"
        )
        entries = json.loads((root / "backups" / "manifest.json").read_text())["backups"]
        deltas = [e for e in entries if e["kind"] == "delta"]
        if deltas:
            took = [float(e["verify_seconds"]) for e in deltas]
            print(
                f"{len(deltas)} deltas, {sum(bool(e['verified']) for e in deltas)} verified; "
                f"verification median {statistics.median(took):.1f} s, max {max(took):.1f} s"
            )
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
