"""The clock seam: the one place the store and the member read time.

``Clock`` is what they need of time: ``monotonic()`` (seconds, for timers, batch deadlines,
lease expiry and compaction periods) and ``wall_ns()`` (the epoch in nanoseconds, for IDs that
must differ across restarts: member IDs, request ID seeds).  ``SYSTEM_CLOCK`` is the real one;
a simulation passes its own (virtual time, one seed), and every timer of the member's own code
then follows it.

Contracts:
- nothing under ``raftkv.server``, ``raftkv.mvcc``, ``raftkv.lease``, ``raftkv.wal`` or
  ``raftkv.peer`` reads ``time.monotonic``/``time.time``/``time.time_ns`` for logic: it takes a
  ``Clock`` (``tests/test_clock_seam.py`` holds the rule).  Durations measured for metrics use
  ``time.perf_counter`` and never decide anything;
- waits still go through the event loop (``asyncio.sleep``, ``loop.time()``), which is the
  timer half of the seam: a simulation runs the member on a loop whose time is the clock's.
"""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    def monotonic(self) -> float:
        """Seconds on a clock that never goes back; its origin means nothing."""
        ...

    def wall_ns(self) -> int:
        """Nanoseconds since the Unix epoch."""
        ...


class SystemClock:
    """The machine's clocks."""

    def monotonic(self) -> float:
        return time.monotonic()

    def wall_ns(self) -> int:
        return time.time_ns()


SYSTEM_CLOCK: Clock = SystemClock()
