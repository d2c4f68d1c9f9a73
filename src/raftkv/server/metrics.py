"""Latency histograms in Prometheus' text format, with etcd's names and buckets.

Owns: ``Histogram`` (cumulative buckets, sum and count; ``observe`` may be called from any
thread) and ``DiskMetrics``, the two disk histograms etcd operators watch first:
``etcd_disk_wal_fsync_duration_seconds`` (one WAL fdatasync) and
``etcd_disk_backend_commit_duration_seconds`` (one backend commit, its fsync included).
Both use etcd's buckets: 1 ms doubling 14 times (up to 8.192 s).
"""

from __future__ import annotations

import threading
from bisect import bisect_left
from collections.abc import Sequence

ETCD_DISK_BUCKETS: tuple[float, ...] = tuple(0.001 * 2**i for i in range(14))


class Histogram:
    def __init__(self, name: str, help_text: str, buckets: Sequence[float]) -> None:
        self.name = name
        self.help_text = help_text
        self.buckets = tuple(buckets)
        self._counts = [0] * (len(self.buckets) + 1)  # the last one: above every bound
        self._sum = 0.0
        self._lock = threading.Lock()

    def observe(self, value: float) -> None:
        i = bisect_left(self.buckets, value)
        with self._lock:
            self._counts[i] += 1
            self._sum += value

    @property
    def count(self) -> int:
        with self._lock:
            return sum(self._counts)

    def render(self) -> list[str]:
        """The histogram's lines: HELP, TYPE, cumulative ``_bucket``s, ``_sum`` and ``_count``."""
        with self._lock:
            counts, total = list(self._counts), self._sum
        out = [f"# HELP {self.name} {self.help_text}", f"# TYPE {self.name} histogram"]
        seen = 0
        for bound, n in zip(self.buckets, counts, strict=False):
            seen += n
            out.append(f'{self.name}_bucket{{le="{bound:g}"}} {seen}')
        seen += counts[-1]
        out.append(f'{self.name}_bucket{{le="+Inf"}} {seen}')
        out.append(f"{self.name}_sum {total:.9g}")
        out.append(f"{self.name}_count {seen}")
        return out


class DiskMetrics:
    def __init__(self) -> None:
        self.wal_fsync = Histogram(
            "etcd_disk_wal_fsync_duration_seconds",
            "The latency distributions of fsync called by wal.",
            ETCD_DISK_BUCKETS,
        )
        self.backend_commit = Histogram(
            "etcd_disk_backend_commit_duration_seconds",
            "The latency distributions of commit called by backend.",
            ETCD_DISK_BUCKETS,
        )

    def render(self) -> list[str]:
        return self.wal_fsync.render() + self.backend_commit.render()
