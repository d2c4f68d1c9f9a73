"""Automatic compaction, etcd's ``--auto-compaction-mode`` / ``--auto-compaction-retention``.

Owns: the decision of when to compact and to which revision; the compaction itself goes
through Raft like a client's.  Only the leader decides (followers keep sampling so a new leader
can act at once).

- ``periodic``: keep ``retention`` of history.  Every ``retention / 10`` (at most an hour) the
  current revision is sampled; once a sample is ``retention`` old, compact to it.  A plain
  number means hours, as in etcd; ``30m``, ``90s``, ``1h30m`` are durations.
- ``revision``: keep the last ``retention`` revisions; every 5 minutes compact to
  ``current - retention``.

Contract: ``decide(now, current_rev, compacted_rev)`` is pure given its inputs and the samples
taken so far; it returns the revision to compact to, or None.
"""

from __future__ import annotations

import re
from collections import deque

REVISION_MODE_INTERVAL = 300.0
MAX_PERIODIC_INTERVAL = 3600.0

_DURATION = re.compile(r"^(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s)?$")


def parse_retention(mode: str, text: str) -> float:
    """Seconds (periodic) or revisions (revision) of history to keep; 0 disables."""
    text = text.strip()
    if mode == "revision":
        value = int(text)
        if value < 0:
            raise ValueError("--auto-compaction-retention must not be negative")
        return float(value)
    try:
        hours = float(text)
    except ValueError:
        match = _DURATION.match(text)
        if not text or match is None or not any(match.groups()):
            raise ValueError(
                f"--auto-compaction-retention: {text!r} is neither hours nor a duration like 30m"
            ) from None
        h, m, s = (float(g) if g else 0.0 for g in match.groups())
        return h * 3600 + m * 60 + s
    if hours < 0:
        raise ValueError("--auto-compaction-retention must not be negative")
    return hours * 3600


class AutoCompactor:
    def __init__(self, mode: str, retention: float) -> None:
        self.mode = mode
        self.retention = retention
        if mode == "periodic":
            self.interval = min(max(retention / 10, 0.1), MAX_PERIODIC_INTERVAL)
        else:
            self.interval = REVISION_MODE_INTERVAL
        self._samples: deque[tuple[float, int]] = deque()
        self._last_check: float | None = None

    @property
    def enabled(self) -> bool:
        return self.retention > 0

    def decide(self, now: float, current_rev: int, compacted_rev: int) -> int | None:
        if not self.enabled:
            return None
        if self._last_check is not None and now - self._last_check < self.interval:
            return None
        self._last_check = now
        if self.mode == "revision":
            keep_from = current_rev - int(self.retention)
            return keep_from if keep_from > compacted_rev and keep_from > 0 else None
        self._samples.append((now, current_rev))
        target: int | None = None
        while self._samples and now - self._samples[0][0] >= self.retention:
            target = self._samples.popleft()[1]
        if target is not None and target > compacted_rev:
            return target
        return None
