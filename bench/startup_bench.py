"""Start-up of a member holding many keys: raftkv against real etcd.

For each system: a one-member cluster loaded with ``--keys`` keys of ``--val-size`` bytes
(100-put txns, ``snapshot_compare.load``), stopped gracefully (SIGTERM), then started again
on the same data directory, ``--restarts`` times.  A restart is timed from the spawn of the
process to the first ``etcdctl endpoint status`` that names a leader (polled every 0.3 s by
``compare_etcd.LocalCluster.start``, so a figure is late by up to that).  After the last
restart the key count is read back (``etcdctl get --prefix --limit 1 -w json``: the count of
every key) and must match.

    python bench/startup_bench.py --keys 1000000
    python bench/startup_bench.py --keys 100000 --systems raftkv --restarts 3 --json out.json

raftkv's member log says where its start-up went (the key index rebuilt, leases, the apply
digest, the start-up state hash); it is printed for the last restart.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from compare_etcd import LocalCluster, etcdctl, log
from snapshot_compare import load


def run_system(kind: str, keys: int, val_size: int, restarts: int) -> dict[str, object]:
    root = Path(tempfile.mkdtemp(prefix=f"startup-{kind}-"))
    cluster = LocalCluster(kind, root, size=1)
    out: dict[str, object] = {"keys": keys}
    try:
        cluster.start(timeout=120)
        out["load_s"] = load(cluster.endpoints, keys, val_size)
        log(f"{kind}: loaded {keys} keys in {out['load_s']:.1f}s")
        times = []
        for _ in range(restarts):
            cluster.stop()
            t0 = time.monotonic()
            cluster.start(timeout=600)
            times.append(time.monotonic() - t0)
            log(f"{kind}: serving {times[-1]:.2f}s after its spawn")
        out["restart_s"] = times
        res = etcdctl(
            cluster.endpoints[0], "get", "", "--prefix", "--limit", "1", "-w", "json", timeout=600
        )
        count = int(json.loads(res.stdout).get("count", 0))
        out["count"] = count
        if count != keys:
            raise RuntimeError(f"{kind}: {count} keys after the restarts, expected {keys}")
        if kind == "raftkv":
            out["log"] = [
                line
                for line in (root / f"{cluster.names[0]}.log").read_text().splitlines()[-60:]
                if "raftkv.run" in line or "start" in line.lower() or "index" in line.lower()
            ][-20:]
    finally:
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--keys", type=int, default=1_000_000)
    ap.add_argument("--val-size", type=int, default=256)
    ap.add_argument("--restarts", type=int, default=3)
    ap.add_argument("--systems", default="etcd,raftkv")
    ap.add_argument("--json", default=None, help="write the results to this file")
    args = ap.parse_args(argv)
    results = {
        kind: run_system(kind, args.keys, args.val_size, args.restarts)
        for kind in args.systems.split(",")
    }
    print(f"start-up with {args.keys} keys of {args.val_size} B, seconds to a leader:")
    for kind, r in results.items():
        times = r["restart_s"]
        assert isinstance(times, list)
        print(
            f"  {kind:7} median {statistics.median(times):6.2f}  "
            f"runs {' / '.join(f'{t:.2f}' for t in times)}  (load {r['load_s']:.1f}s)"
        )
    if "raftkv" in results:
        print("raftkv's log of its last start-up:")
        for line in results["raftkv"].get("log", []):  # type: ignore[attr-defined]
            print("   ", line)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
