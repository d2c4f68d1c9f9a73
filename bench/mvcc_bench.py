"""MVCC store benchmark: puts/s, reads/s, index rebuild time, bytes on disk per key.

Usage: ``PYTHONPATH=src python bench/mvcc_bench.py --keys 100000 [--batch 1000]
[--value-size 100] [--sync-mode nometasync] [--dir DIR]``.  Keys are inserted in
random order (the worst case for the sorted key index); every figure is printed
as one line and, with ``--json``, as one JSON object at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import sys
import tempfile
import time

from raftkv.mvcc import Backend, BackendConfig, KVStore, PutRequest, RangeRequest


def _rate(n: int, seconds: float) -> float:
    return n / seconds if seconds > 0 else float("inf")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--keys", type=int, default=100_000)
    ap.add_argument("--batch", type=int, default=1000, help="entries per apply batch (LMDB txn)")
    ap.add_argument("--value-size", type=int, default=100)
    ap.add_argument("--sync-mode", default="nometasync", choices=["full", "nometasync", "nosync"])
    ap.add_argument("--reads", type=int, default=50_000)
    ap.add_argument("--dir", default=None)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)

    root = args.dir or tempfile.mkdtemp(prefix="mvcc-bench-")
    path = os.path.join(root, "db")
    shutil.rmtree(path, ignore_errors=True)
    map_size = max(1 << 30, args.keys * (args.value_size + 200) * 3)
    cfg = BackendConfig(map_size=map_size, sync_mode=args.sync_mode)
    rng = random.Random(42)
    keys = [b"/registry/%016x" % rng.getrandbits(64) for _ in range(args.keys)]
    value = os.urandom(args.value_size)
    out: dict[str, float | int | str] = {
        "keys": args.keys,
        "batch": args.batch,
        "value_size": args.value_size,
        "sync_mode": args.sync_mode,
    }

    def report(name: str, val: float | int, unit: str) -> None:
        out[name] = round(val, 3) if isinstance(val, float) else val
        print(
            f"{name:28s} {val:>14,.1f} {unit}"
            if isinstance(val, float)
            else f"{name:28s} {val:>14,d} {unit}",
            flush=True,
        )

    store = KVStore(Backend(path, cfg))
    t0 = time.perf_counter()
    idx = 0
    for start in range(0, args.keys, args.batch):
        entries = []
        for k in keys[start : start + args.batch]:
            idx += 1
            entries.append((idx, 1, PutRequest(k, value)))
        store.apply_batch(entries)
        if start and start % (args.batch * 100) == 0:
            print(f"  ... {start:,} keys", file=sys.stderr, flush=True)
    store.backend.force_commit()
    t_put = time.perf_counter() - t0
    report("put_new_keys_per_s", _rate(args.keys, t_put), "puts/s")

    n_upd = min(args.keys, 100_000)
    t0 = time.perf_counter()
    for start in range(0, n_upd, args.batch):
        entries = []
        for k in keys[start : min(n_upd, start + args.batch)]:
            idx += 1
            entries.append((idx, 1, PutRequest(k, value)))
        store.apply_batch(entries)
    t_upd = time.perf_counter() - t0
    report("put_overwrite_per_s", _rate(n_upd, t_upd), "puts/s")

    sample = [keys[rng.randrange(args.keys)] for _ in range(args.reads)]
    t0 = time.perf_counter()
    for k in sample:
        store.range(RangeRequest(k))
    report("get_single_key_per_s", _rate(args.reads, time.perf_counter() - t0), "reads/s")

    ordered = sorted(set(keys))
    n_scan = max(1, args.reads // 20)
    starts = [rng.randrange(max(1, len(ordered) - 100)) for _ in range(n_scan)]
    t0 = time.perf_counter()
    for i in starts:
        end = ordered[i + 100] if i + 100 < len(ordered) else b"\x00"
        store.range(RangeRequest(ordered[i], end))
    report("range_100_keys_per_s", _rate(n_scan, time.perf_counter() - t0), "ranges/s")

    t0 = time.perf_counter()
    for i in starts[:50]:
        store.range(RangeRequest(ordered[i], b"\x00", limit=100))
    report("range_limit100_to_end_per_s", _rate(50, time.perf_counter() - t0), "ranges/s")

    t0 = time.perf_counter()
    r = store.range(RangeRequest(b"/registry/", b"/registry0", count_only=True))
    report("count_all_keys_s", time.perf_counter() - t0, "s")
    assert r.count == len(set(keys))

    t0 = time.perf_counter()
    store.hash_kv()
    report("hash_kv_s", time.perf_counter() - t0, "s")

    used = store.backend.size()
    report("bytes_in_use_per_revision", used / (args.keys + n_upd), "B")
    report("file_bytes_per_key", store.backend.file_size() / args.keys, "B")
    store.backend.close()

    t0 = time.perf_counter()
    store = KVStore(Backend(path, cfg))
    report("startup_rebuild_index_s", time.perf_counter() - t0, "s")
    assert store.current_revision == idx + 1
    store.backend.close()
    report("max_rss_mib", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "MiB")
    if args.json:
        print(json.dumps(out))
    if args.dir is None:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
