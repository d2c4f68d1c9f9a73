"""Snapshots side by side: save and restore time of a 3-member real etcd and raftkv, and what
a snapshot stream costs the writes running meanwhile.

Owns: for each kind in turn (etcd from ``/usr/bin/etcd``, raftkv as ``raftkv serve``), starting
a 3-member cluster (``compare_etcd.LocalCluster``), loading ``--keys`` keys of ``--val-size``
bytes with 100-put txns, then

- ``save``: ``etcdctl snapshot save`` from one member, seconds and MB/s of the file;
- ``status``: ``etcdctl snapshot status`` of the file (and raftkv's own, which must agree);
- ``restore``: ``etcdctl snapshot restore`` (etcd) or ``raftkv snapshot restore`` (raftkv) of
  the file into a new data directory, seconds and MB/s;
- ``puts idle`` / ``puts while streaming``: 100 clients of puts, alone and while snapshots are
  saved back to back from the member the load does not use (raftkv.benchmark's runner).

Run from the repository root::

    python bench/snapshot_compare.py --keys 100000
    python bench/snapshot_compare.py --keys 1000000 --json out.json

Figures depend on the machine and on whatever else runs on it; nothing here asserts on them.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from compare_etcd import ETCDCTL_BIN, REPO, LocalCluster, etcdctl, log  # noqa: E402

from raftkv.benchmark import runner  # noqa: E402
from raftkv.benchmark.workload import Workload  # noqa: E402

TXN_OPS = 100


def load(endpoints: list[str], keys: int, val_size: int) -> float:
    """Write ``keys`` distinct keys in txns of ``TXN_OPS`` puts; seconds taken."""
    work = Workload("txn-put", 16, val_size, key_space_size=keys, sequential=True, txn_ops=TXN_OPS)
    cfg = runner.LoadConfig(
        endpoints=tuple(endpoints),
        workload=work,
        total=keys // TXN_OPS,
        clients=16,
        conns=4,
        seed=1,
    )
    t0 = time.monotonic()
    stats = runner.run(cfg)
    if stats.error_count:
        raise RuntimeError(f"load had {stats.error_count} errors")
    return time.monotonic() - t0


def puts(endpoints: list[str], total: int, val_size: int) -> float:
    """Puts per second of 100 clients over ``endpoints``."""
    work = Workload("put", 8, val_size, key_space_size=100000, sequential=True)
    cfg = runner.LoadConfig(
        endpoints=tuple(endpoints), workload=work, total=total, clients=100, conns=10, seed=2
    )
    return runner.run(cfg).rps


def save(endpoint: str, path: Path) -> float:
    t0 = time.monotonic()
    etcdctl(endpoint, "snapshot", "save", str(path), timeout=1800)
    return time.monotonic() - t0


def status(tool: list[str], path: Path) -> dict[str, object]:
    res = subprocess.run(
        [*tool, "snapshot", "status", str(path), "-w", "json"],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "ETCDCTL_API": "3", "PYTHONPATH": str(REPO / "src")},
    )
    obj: dict[str, object] = json.loads(res.stdout)
    return obj


def restore(kind: str, snap: Path, target: Path) -> float:
    peer = "http://127.0.0.1:2380"
    tool = [ETCDCTL_BIN] if kind == "etcd" else [sys.executable, "-m", "raftkv.ctl.main"]
    t0 = time.monotonic()
    subprocess.run(
        [*tool, "snapshot", "restore", str(snap), "--name", "r1", "--data-dir", str(target),
         "--initial-cluster", f"r1={peer}", "--initial-advertise-peer-urls", peer],
        capture_output=True, check=True, timeout=3600,
        env={**os.environ, "ETCDCTL_API": "3", "PYTHONPATH": str(REPO / "src")},
    )  # fmt: skip
    return time.monotonic() - t0


def run_kind(kind: str, args: argparse.Namespace) -> dict[str, object]:
    root = Path(tempfile.mkdtemp(prefix=f"snap-{kind}-"))
    cluster = LocalCluster(kind, root)
    out: dict[str, object] = {}
    try:
        cluster.start()
        eps = cluster.endpoints
        out["load_s"] = load(eps, args.keys, args.val_size)
        log(f"{kind}: loaded {args.keys} keys in {out['load_s']:.1f}s")
        snap = root / "snap.db"
        took = save(eps[2], snap)
        size = snap.stat().st_size
        out.update(save_s=took, size_bytes=size, save_mb_s=size / took / 1e6)
        log(f"{kind}: save {took:.2f}s, {size / 1e6:.1f} MB, {size / took / 1e6:.1f} MB/s")
        out["etcdctl_status"] = status([ETCDCTL_BIN], snap)
        if kind == "raftkv":
            ours = status([sys.executable, "-m", "raftkv.ctl.main"], snap)
            out["raftkv_status"] = ours
            agree = all(ours[k] == out["etcdctl_status"][k] for k in out["etcdctl_status"])  # type: ignore[index]
            out["status_agrees"] = agree
        took = restore(kind, snap, root / "restored")
        out.update(restore_s=took, restore_mb_s=size / took / 1e6)
        log(f"{kind}: restore {took:.2f}s, {size / took / 1e6:.1f} MB/s")
        shutil.rmtree(root / "restored", ignore_errors=True)

        out["puts_idle"] = puts(eps[:2], args.puts, 8)
        stop = threading.Event()
        saves: list[float] = []

        def stream() -> None:
            i = 0
            while not stop.is_set():
                path = root / f"bg-{i}.db"
                saves.append(save(eps[2], path))
                path.unlink()
                i += 1

        bg = threading.Thread(target=stream)
        bg.start()
        time.sleep(0.5)
        out["puts_streaming"] = puts(eps[:2], args.puts, 8)
        stop.set()
        bg.join()
        out["background_saves"] = len(saves)
        log(
            f"{kind}: puts idle {out['puts_idle']:.0f}/s, while streaming "
            f"{out['puts_streaming']:.0f}/s ({len(saves)} saves)"
        )
    finally:
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--keys", type=int, default=100_000)
    p.add_argument("--val-size", type=int, default=256)
    p.add_argument("--puts", type=int, default=10_000, help="puts per throughput round")
    p.add_argument("--kinds", default="etcd,raftkv")
    p.add_argument("--json", help="write every figure to this file")
    args = p.parse_args(argv)
    results = {kind: run_kind(kind, args) for kind in args.kinds.split(",")}
    rows = [
        ("save s", "save_s"),
        ("save MB/s", "save_mb_s"),
        ("restore s", "restore_s"),
        ("restore MB/s", "restore_mb_s"),
        ("puts/s idle", "puts_idle"),
        ("puts/s streaming", "puts_streaming"),
    ]
    print(f"\n{args.keys} keys of {args.val_size} B")
    print(f"{'':18} {'etcd':>10} {'raftkv':>10} {'ratio':>7}")
    for title, key in rows:
        e = results.get("etcd", {}).get(key)
        r = results.get("raftkv", {}).get(key)
        ratio = f"{r / e:.2f}" if isinstance(e, float) and isinstance(r, float) and e else "-"
        es = f"{e:.2f}" if isinstance(e, float) else "-"
        rs = f"{r:.2f}" if isinstance(r, float) else "-"
        print(f"{title:18} {es:>10} {rs:>10} {ratio:>7}")
    for kind, res in results.items():
        if "puts_idle" in res:
            share = res["puts_streaming"] / res["puts_idle"]  # type: ignore[operator]
            print(f"{kind}: puts while streaming = {share:.2f} of idle")
    if "raftkv" in results:
        print(
            f"raftkv snapshot status agrees with etcdctl's: {results['raftkv'].get('status_agrees')}"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
