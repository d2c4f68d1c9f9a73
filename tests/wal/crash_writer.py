"""Writer process for tests/wal/test_crash.py (run as a script, not collected).

Usage: crash_writer.py DIR SEED TEAR_AFTER SEGMENT_SIZE

Opens (or creates) the WAL in DIR, prints ``ready <last index>``, then appends
batches of 1-16 entries forever, printing each batch's last index (flushed)
only after ``save`` returned, i.e. after the fdatasync.  When TEAR_AFTER >= 0,
after that many acknowledged batches it writes only a prefix of the next
batch's bytes at the tail and SIGKILLs itself: a real torn write.
"""

from __future__ import annotations

import hashlib
import os
import random
import signal
import sys

from raftkv.raft.types import Entry, HardState
from raftkv.wal import WAL, encode_metadata
from raftkv.wal.files import list_segments
from raftkv.wal.record import append_entries

META = encode_metadata(7, 42)


def payload(index: int) -> bytes:
    """Deterministic content of entry ``index`` (the test recomputes it)."""
    digest = hashlib.blake2b(index.to_bytes(8, "little")).digest()
    return (digest * 8)[: 16 + index * 37 % 300]


def main(argv: list[str]) -> int:
    dirpath, seed, tear_after, seg_size = argv[0], int(argv[1]), int(argv[2]), int(argv[3])
    if list_segments(dirpath):
        wal = WAL.open(dirpath, segment_size=seg_size)
        _, _, entries = wal.read_all()
        last = entries[-1].index if entries else 0
    else:
        wal = WAL.create(dirpath, META, segment_size=seg_size)
        last = 0
    print(f"ready {last}", flush=True)
    rng = random.Random(seed)
    acked = 0
    while True:
        k = rng.randint(1, 16)
        batch = [Entry(1, i, data=payload(i)) for i in range(last + 1, last + k + 1)]
        if acked == tear_after:
            buf = bytearray()
            append_entries(buf, batch, wal._last_crc)
            cut = rng.randint(1, len(buf) - 1)
            os.pwrite(wal._tail_fd, buf[:cut], wal._offset)
            os.kill(os.getpid(), signal.SIGKILL)
        wal.save(HardState(1, 1, last + k), batch)
        last += k
        acked += 1
        print(last, flush=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
