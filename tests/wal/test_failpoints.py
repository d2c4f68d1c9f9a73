"""The WAL's failpoints: ``walBeforeFsync`` (slow disk, crash before the fsync) and
``walTornWrite`` (power lost mid-write), with real processes killed by SIGKILL.

A writer child acknowledges each batch (prints ``ack <last index>``) only after ``save``
returned; after the child died, reopening the WAL must give back every acknowledged entry with
its content, repair a torn tail (keeping the ``.broken`` copy) and accept new writes.
"""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from raftkv import failpoints as fp
from raftkv.raft.types import Entry, HardState
from raftkv.wal import WAL, WALClosedError, encode_metadata

SRC = str(Path(__file__).resolve().parents[2] / "src")
META = encode_metadata(7, 42)

# The child: batches of 3 entries (index i holds b"entry-<i>" * i), each with or without a hard
# state whose commit is its last index; the failpoints are configured from the environment.
CHILD = """
import sys
from raftkv.raft.types import Entry, HardState
from raftkv.wal import WAL, encode_metadata

d, with_hs, batches = sys.argv[1], sys.argv[2] == "1", int(sys.argv[3])
wal = WAL.create(d, encode_metadata(7, 42))
wal.sync()  # nothing written: the fsync failpoint must not be hit
for b in range(batches):
    ents = [Entry(1, i, data=b"entry-%d" % i * i) for i in range(3 * b + 1, 3 * b + 4)]
    wal.save(HardState(1, 1, ents[-1].index) if with_hs else None, ents)
    print("ack", ents[-1].index, flush=True)
wal.close()
print("done", flush=True)
"""


def entry(i: int) -> Entry:
    return Entry(1, i, data=b"entry-%d" % i * i)


@pytest.fixture(autouse=True)
def _clean() -> Iterator[None]:
    fp.configure(None)
    yield
    fp.configure(None)


def run_writer(d: Path, spec: str, *, with_hs: bool, batches: int) -> tuple[int, list[int], str]:
    """(exit status, acknowledged last indexes, stderr) of a writer child under ``spec``."""
    env = {k: v for k, v in os.environ.items() if k != fp.ENV_VAR}
    env["PYTHONPATH"] = SRC
    env[fp.ENV_VAR] = spec
    res = subprocess.run(
        [
            sys.executable,
            "-c",
            textwrap.dedent(CHILD),
            str(d),
            "1" if with_hs else "0",
            str(batches),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    acks = [int(line.split()[1]) for line in res.stdout.splitlines() if line.startswith("ack ")]
    return res.returncode, acks, res.stderr


def reopen(d: Path) -> tuple[HardState, list[Entry], WAL]:
    wal = WAL.open(str(d))
    _meta, hs, entries = wal.read_all()
    return hs, entries, wal


def broken_copies(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir() if p.name.endswith(".broken"))


def test_before_fsync_panic_kills_with_the_batch_written_but_unsynced(tmp_path: Path) -> None:
    d = tmp_path / "wal"
    code, acks, err = run_writer(d, "walBeforeFsync=2*off->panic", with_hs=True, batches=5)
    assert code == fp.PANIC_STATUS, err
    assert "failpoint walBeforeFsync panic" in err
    # hits 1 and 2 passed (the empty sync() is no hit), hit 3 killed it before the fsync
    assert acks == [3, 6]
    hs, entries, wal = reopen(d)
    with wal:
        assert broken_copies(d) == []  # a process crash loses nothing written: no torn tail
        # acknowledged entries are all there; the unsynced batch is there whole or not at all
        assert [e.index for e in entries] in ([1, 2, 3, 4, 5, 6], list(range(1, 10)))
        assert entries == [entry(e.index) for e in entries]
        assert hs.commit == entries[-1].index
        wal.save(HardState(1, 1, 12), [entry(i) for i in range(entries[-1].index + 1, 13)])
    hs, entries, wal = reopen(d)
    wal.close()
    assert entries == [entry(i) for i in range(1, 13)] and hs.commit == 12


def test_before_fsync_sleep_and_on_leave_the_log_intact(tmp_path: Path) -> None:
    fp.configure("walBeforeFsync=2*sleep(1)->on")
    with WAL.create(str(tmp_path / "wal"), META) as wal:
        for b in range(4):
            ents = [entry(i) for i in range(3 * b + 1, 3 * b + 4)]
            wal.save(HardState(1, 1, ents[-1].index), ents)
    fp.configure(None)
    hs, entries, wal = reopen(tmp_path / "wal")
    wal.close()
    assert entries == [entry(i) for i in range(1, 13)] and hs.commit == 12


@pytest.mark.parametrize("with_hs", [True, False], ids=["torn-hard-state", "torn-entry"])
def test_torn_write_is_repaired_and_loses_nothing_acknowledged(
    tmp_path: Path, with_hs: bool
) -> None:
    d = tmp_path / "wal"
    code, acks, err = run_writer(d, "walTornWrite=2*off->on", with_hs=with_hs, batches=5)
    assert code == -signal.SIGKILL, err
    assert "failpoint walTornWrite: wrote" in err
    assert acks == [3, 6]
    hs, entries, wal = reopen(d)
    with wal:
        # the torn tail was cut off, the damaged segment kept aside
        assert len(broken_copies(d)) == 1
        # The third batch was written up to the middle of its last record: with a hard state
        # last, its three entries are whole (and were fsynced) but its hard state is gone; with
        # entries only, its last entry is gone.  Nothing after the torn record survives.
        if with_hs:
            assert entries == [entry(i) for i in range(1, 10)] and hs.commit == 6
        else:
            assert entries == [entry(i) for i in range(1, 9)] and hs.commit == 0
        nxt = entries[-1].index + 1
        wal.save(HardState(1, 1, nxt + 1), [entry(nxt), entry(nxt + 1)])
    hs, entries, wal = reopen(d)
    wal.close()
    assert entries == [entry(i) for i in range(1, nxt + 2)] and hs.commit == nxt + 1
    assert len(broken_copies(d)) == 1  # the repaired log reopens cleanly: no new repair


def test_a_full_disk_fails_the_write_and_the_wal_after_it(tmp_path: Path) -> None:
    """``walNoSpace``: half the batch reaches the file, the write fails with ENOSPC and the WAL
    refuses every later write or sync (the member must stop, never carry on past a lost write);
    reopened, the half-written batch is cut off as a torn tail and the acknowledged ones stay."""
    d = tmp_path / "wal"
    fp.configure("walNoSpace=1*off->1*on")
    try:
        wal = WAL.create(str(d), META)
        wal.save(HardState(1, 1, 3), [entry(i) for i in range(1, 4)])  # hit 1: off
        with pytest.raises(OSError) as failed:
            wal.save(HardState(1, 1, 6), [entry(i) for i in range(4, 7)])  # hit 2: disk full
        assert failed.value.errno == errno.ENOSPC
        with pytest.raises(WALClosedError, match="an earlier write failed"):
            wal.save(HardState(1, 1, 7), [entry(7)])
        wal.abandon()
    finally:
        fp.configure(None)
    hs, entries, wal = reopen(d)
    wal.close()
    # The acknowledged batch is whole; of the failed one, whole records may survive (never
    # acknowledged, so Raft may keep or overwrite them), the torn one never does.
    assert entries[:3] == [entry(i) for i in range(1, 4)] and hs.commit == 3
    assert entries == [entry(e.index) for e in entries] and len(entries) < 6
    assert len(broken_copies(d)) == 1
