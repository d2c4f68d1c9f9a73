"""What the apply digest costs: a member's apply throughput with and without it.

Usage: ``PYTHONPATH=src python bench/digest_overhead.py [--entries 20000] [--batch 100]
[--value-size 100] [--rounds 3] [--json]``.

Drives the real ``raftkv.server.applier.Applier`` on a real LMDB backend with committed put
entries in batches of ``--batch`` (one LMDB transaction each, as the member's apply loop does),
once as the member runs it and once with the digest's effect recorder replaced by one that
records nothing, alternating the two ``--rounds`` times on fresh data dirs so machine noise hits
both alike (with the member's GC settings, and a full collection before each run, so one
run's garbage is not charged to the next).  Prints entries/s and CPU per entry for each and
both overheads: the rate includes the backend's commits and their fsyncs, the CPU no waiting.

This isolates the per-entry cost (serialising the effects, one BLAKE2b per entry, the head
record written per batch); the digest exchange between members is one small peer request per
voter every ``--apply-digest-check-interval`` and does not grow with the write rate.
"""

from __future__ import annotations

import argparse
import gc
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from raftkv.guard.digest import EffectRecorder
from raftkv.mvcc.backend import BackendConfig
from raftkv.proto import rpc_pb2 as pb
from raftkv.raft.types import Entry
from raftkv.server.applier import Applier
from raftkv.server.bootstrap import MemberInfo
from raftkv.server.requests import RequestKind, encode_request
from raftkv.server.runtime import tune_gc


def _record_nothing(self: object, *args: object) -> bytes:
    return b""


# An effect recorder that records nothing: the applier without its digest.  Real methods (a
# __getattr__ building a function per call would cost about what the digest does).
NullRecorder = type(
    "NullRecorder",
    (),
    {name: _record_nothing for name in dir(EffectRecorder) if not name.startswith("_")},
)


def entries(n: int, value_size: int) -> list[Entry]:
    value = b"v" * value_size
    out = []
    for i in range(n):
        req = pb.PutRequest(key=b"key-%08d" % (i % 10_000), value=value)
        data = encode_request(RequestKind.PUT, i + 2, req.SerializeToString())
        out.append(Entry(1, i + 2, data=data))
    return out


def run_once(root: Path, work: list[Entry], batch: int, digest: bool) -> tuple[float, float]:
    """(entries/s, CPU µs per entry) of applying ``work`` on a fresh backend under ``root``."""
    applier = Applier.detached(
        str(root), BackendConfig(map_size=1 << 30, batch_interval=0.1), min_lease_ttl=1
    )
    applier.write_initial_members([MemberInfo(1, "m1", ("http://127.0.0.1:2380",))])
    if not digest:
        applier.digest.recorder = NullRecorder()  # type: ignore[assignment]
    gc.collect()  # the previous run's garbage is not this run's cost
    t0, cpu0 = time.perf_counter(), time.process_time()
    for i in range(0, len(work), batch):
        applier.apply_entries(work[i : i + batch])
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    applier.close()
    return len(work) / elapsed, cpu / len(work) * 1e6


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--entries", type=int, default=20_000)
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--value-size", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    tune_gc()  # as a member runs
    work = entries(args.entries, args.value_size)
    rates: dict[str, list[float]] = {"with": [], "without": []}
    cpus: dict[str, list[float]] = {"with": [], "without": []}
    tmp = Path(tempfile.mkdtemp(prefix="digest-bench-"))
    try:
        for r in range(args.rounds):
            for label in ("without", "with") if r % 2 else ("with", "without"):
                root = tmp / f"{label}-{r}"
                rate, cpu = run_once(root, work, args.batch, label == "with")
                rates[label].append(rate)
                cpus[label].append(cpu)
                shutil.rmtree(root)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    with_d, without = statistics.median(rates["with"]), statistics.median(rates["without"])
    cpu_with, cpu_without = statistics.median(cpus["with"]), statistics.median(cpus["without"])
    result = {
        "entries": args.entries,
        "batch": args.batch,
        "value_size": args.value_size,
        "with_digest_entries_per_s": round(with_d),
        "without_digest_entries_per_s": round(without),
        "overhead": round(1 - with_d / without, 4),
        "with_digest_cpu_us_per_entry": round(cpu_with, 3),
        "without_digest_cpu_us_per_entry": round(cpu_without, 3),
        "cpu_overhead": round(cpu_with / cpu_without - 1, 4),
    }
    print(
        f"apply with digest:    {with_d:10.0f} entries/s, {cpu_with:6.2f} µs of CPU per entry "
        f"(medians of {args.rounds})"
    )
    print(f"apply without digest: {without:10.0f} entries/s, {cpu_without:6.2f} µs")
    print(
        f"digest overhead:      {100 * result['overhead']:9.1f} % of the rate, "
        f"{100 * result['cpu_overhead']:.1f} % more CPU"
    )
    if args.json:
        json.dump(result, sys.stdout)
        print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
