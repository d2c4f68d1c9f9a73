"""The clock seam (``raftkv.clock``): the store, the peer transport and the member read time
only through a ``Clock`` (or wait through their event loop), so a simulation that passes its
own clock drives every timer of the member's own code.  Durations for metrics use
``time.perf_counter``; log timestamps are the log's."""

from __future__ import annotations

import re
from pathlib import Path

import raftkv
from raftkv.clock import SYSTEM_CLOCK
from raftkv.mvcc.backend import BackendConfig

SRC = Path(raftkv.__file__).resolve().parent
SEAMED = ("server", "mvcc", "lease", "wal", "peer", "snap", "guard", "raft", "api", "auth")
EXEMPT = {SRC / "server" / "logsetup.py"}  # timestamps of log lines
CLOCK_READ = re.compile(r"\btime\.(monotonic|time|time_ns|monotonic_ns)\(|datetime\.now\(")


def test_no_clock_is_read_behind_the_seam() -> None:
    found = []
    for package in SEAMED:
        for path in sorted((SRC / package).rglob("*.py")):
            if path in EXEMPT:
                continue
            for number, line in enumerate(path.read_text().splitlines(), 1):
                code = line.split("#", 1)[0]
                if CLOCK_READ.search(code):
                    found.append(f"{path.relative_to(SRC)}:{number}: {line.strip()}")
    assert not found, "read the Clock instead:\n" + "\n".join(found)


def test_the_rule_sees_a_clock_read() -> None:
    assert CLOCK_READ.search("deadline = time.monotonic() + 5")
    assert CLOCK_READ.search("mid = f(urls, time.time_ns())")
    assert not CLOCK_READ.search("started = time.perf_counter()")


class _Frozen:
    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now

    def wall_ns(self) -> int:
        return 1_700_000_000 * 10**9


def test_the_backend_batch_deadline_follows_the_given_clock(tmp_path: Path) -> None:
    from raftkv.mvcc.backend import Backend

    clock = _Frozen()
    backend = Backend(tmp_path / "db", BackendConfig(batch_interval=0.1, clock=clock))
    try:
        _txn, handle = backend.begin_batch()
        handle.commit()
        backend.end_batch(1)
        assert backend.commit_deadline() == 1000.1  # on the given clock, not the machine's
        clock.now += 0.2
        _txn2, handle2 = backend.begin_batch()
        handle2.commit()
        backend.end_batch(1)  # now due on the given clock: committed
        assert backend.commit_deadline() is None
    finally:
        backend.close()
    assert SYSTEM_CLOCK.wall_ns() > 1_700_000_000 * 10**9
