"""Throughput of the pure Raft core: 3 in-process RawNodes, no faults, no I/O.

Proposes ``--total`` entries of ``--size`` bytes in rounds of ``--batch`` proposals on the
leader, drives every node's Ready/advance cycle and message delivery until all are committed
and applied everywhere, and prints committed entries per CPU-second (process time).

    PYTHONPATH=src:. python bench/raft_core_bench.py --total 50000 --batch 1 100
"""

from __future__ import annotations

import argparse
import time

from tests.raft.raft_cluster import Cluster


def run(total: int, batch: int, size: int) -> float:
    c = Cluster([1, 2, 3])
    c.elect(1)
    c.stabilize()
    node = c.nodes[1]
    data = b"x" * size
    start_applied = len(c.applied[1])
    t0 = time.process_time()
    proposed = 0
    while proposed < total:
        for _ in range(min(batch, total - proposed)):
            node.propose(data)
            proposed += 1
        c.stabilize()
    elapsed = time.process_time() - t0
    applied = len(c.applied[1]) - start_applied
    assert applied >= total, f"only {applied} of {total} applied"
    assert all(len(c.applied[i]) == len(c.applied[1]) for i in c.nodes)
    return total / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--total", type=int, default=20000)
    parser.add_argument("--size", type=int, default=100)
    parser.add_argument("batches", type=int, nargs="*", default=[1, 10, 100])
    args = parser.parse_args()
    print("| proposals per round | committed entries / CPU-second (3 nodes) |")
    print("|---|---|")
    for b in args.batches:
        print(f"| {b} | {run(args.total, b, args.size):,.0f} |")


if __name__ == "__main__":
    main()
