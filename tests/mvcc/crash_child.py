"""Child process of the crash test: applies a deterministic entry stream and acknowledges.

Usage: ``python -m tests.mvcc.crash_child DIR SEED COUNT``.  Applies entries
1..COUNT (``entry(seed, i)``) in batches, one LMDB commit per batch, and after
each commit prints ``ACK <last index>`` so the parent knows what is durable.
"""

from __future__ import annotations

import random
import sys

from raftkv.mvcc import (
    Backend,
    BackendConfig,
    CompactionRequest,
    DeleteRangeRequest,
    KVStore,
    PutRequest,
    TxnRequest,
)
from raftkv.mvcc.types import WriteRequest


def entry(seed: int, i: int) -> WriteRequest:
    rng = random.Random(seed * 1_000_003 + i)
    key = b"k%02d" % rng.randrange(40)
    roll = rng.random()
    if roll < 0.6:
        return PutRequest(key, rng.randbytes(rng.randrange(1, 200)))
    if roll < 0.75:
        return DeleteRangeRequest(key, b"k%02d" % rng.randrange(40))
    if roll < 0.97:
        return TxnRequest(
            success=(PutRequest(key, b"t%d" % i), PutRequest(key + b"/x", b"%d" % i)),
        )
    return CompactionRequest(max(1, i // 2))


def open_store(path: str) -> KVStore:
    return KVStore(Backend(path, BackendConfig(map_size=256 * 1024 * 1024)), compaction_batch=7)


def apply_range(store: KVStore, seed: int, first: int, last: int, batch: int = 13) -> None:
    i = first
    while i <= last:
        j = min(last, i + batch - 1)
        store.apply_batch([(k, 1, entry(seed, k)) for k in range(i, j + 1)])
        while not store.compact_step():
            pass
        i = j + 1


def main(argv: list[str]) -> int:
    path, seed, count = argv[0], int(argv[1]), int(argv[2])
    store = open_store(path)
    rng = random.Random(seed)
    i = store.consistent_index + 1
    while i <= count:
        j = min(count, i + rng.randrange(1, 20) - 1)
        store.apply_batch([(k, 1, entry(seed, k)) for k in range(i, j + 1)])
        print(f"ACK {j}", flush=True)
        while not store.compact_step():
            pass
        i = j + 1
    store.backend.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
