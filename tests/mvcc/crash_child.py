"""Child process of the crash test: applies a deterministic entry stream and acknowledges.

Usage: ``python -m tests.mvcc.crash_child DIR SEED COUNT [BATCH_LIMIT]``.  Applies entries
1..COUNT (``entry(seed, i)``) in batches and, whenever that reached the file (an LMDB
commit), prints ``ACK <last index>`` so the parent knows what is durable.  Without
BATCH_LIMIT every batch is committed at once; with it, batches gather in the backend's
pending batch until it holds BATCH_LIMIT operations (or a compaction step commits it).
"""

from __future__ import annotations

import random
import sys
from collections.abc import Callable

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


def open_store(path: str, batch_limit: int = 0) -> KVStore:
    config = BackendConfig(map_size=256 * 1024 * 1024)
    if batch_limit:
        config = BackendConfig(
            map_size=256 * 1024 * 1024, batch_interval=3600.0, batch_limit=batch_limit
        )
    return KVStore(Backend(path, config), compaction_batch=7)


def apply_range(store: KVStore, seed: int, first: int, last: int, batch: int = 13) -> None:
    i = first
    while i <= last:
        j = min(last, i + batch - 1)
        store.apply_batch([(k, 1, entry(seed, k)) for k in range(i, j + 1)])
        while not store.compact_step():
            pass
        i = j + 1


def run(store: KVStore, seed: int, count: int, ack: Callable[[int], None]) -> None:
    """Apply entries ``store.consistent_index + 1 .. count`` and call ``ack(last)`` after
    every backend commit, with the last index applied before it.

    A commit, wherever it happens (at the end of ``apply_batch``, or when a compaction step
    commits the pending batch before its own write), holds every entry applied before it.
    So ``ack`` is called right after each commit, never later: a commit inside compaction
    must not vouch for a later ``apply_batch`` still pending."""
    committed = [False]

    def on_commit(_seconds: float) -> None:
        committed[0] = True

    def acknowledge(last: int) -> None:
        if committed[0]:
            committed[0] = False
            ack(last)

    store.on_commit = on_commit
    rng = random.Random(seed)
    i = store.consistent_index + 1
    while i <= count:
        j = min(count, i + rng.randrange(1, 20) - 1)
        store.apply_batch([(k, 1, entry(seed, k)) for k in range(i, j + 1)])
        acknowledge(j)
        while not store.compact_step():
            acknowledge(j)
        acknowledge(j)
        i = j + 1


def main(argv: list[str]) -> int:
    path, seed, count = argv[0], int(argv[1]), int(argv[2])
    store = open_store(path, int(argv[3]) if len(argv) > 3 else 0)
    run(store, seed, count, lambda last: print(f"ACK {last}", flush=True))
    store.backend.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
