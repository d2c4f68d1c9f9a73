"""The member's disk latency histograms, with etcd's names and buckets.

Owns ``DiskMetrics``: the two disk histograms etcd operators watch first, as
``prometheus_client.Histogram`` objects of this member (on no global registry):
``etcd_disk_wal_fsync_duration_seconds`` (one WAL fdatasync) and
``etcd_disk_backend_commit_duration_seconds`` (one backend commit, its fsync included).
Both use etcd's buckets: 1 ms doubling 14 times (up to 8.192 s), plus ``+Inf``.

Contracts:
- ``wal_fsync.observe`` and ``backend_commit.observe`` take seconds and may be called from any
  thread (prometheus_client's values are lock-protected);
- ``DiskMetrics`` is a ``prometheus_client`` Collector: register it on the member's registry.
  It yields the histograms without prometheus_client's ``_created`` series (etcd has none).
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import Histogram
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

ETCD_DISK_BUCKETS: tuple[float, ...] = tuple(0.001 * 2**i for i in range(14))


def _without_created(family: Metric) -> Metric:
    """``family`` less its ``<name>_created`` samples."""
    out = Metric(family.name, family.documentation, family.type, family.unit)
    created = family.name + "_created"
    out.samples = [s for s in family.samples if s.name != created]
    return out


class DiskMetrics(Collector):
    def __init__(self) -> None:
        self.wal_fsync = Histogram(
            "etcd_disk_wal_fsync_duration_seconds",
            "The latency distributions of fsync called by wal.",
            buckets=ETCD_DISK_BUCKETS,
            registry=None,
        )
        self.backend_commit = Histogram(
            "etcd_disk_backend_commit_duration_seconds",
            "The latency distributions of commit called by backend.",
            buckets=ETCD_DISK_BUCKETS,
            registry=None,
        )

    def collect(self) -> Iterable[Metric]:
        for histogram in (self.wal_fsync, self.backend_commit):
            for family in histogram.collect():
                yield _without_created(family)
