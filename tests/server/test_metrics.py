"""The disk histograms: prometheus_client histograms with etcd's names and bounds."""

from __future__ import annotations

import threading

from prometheus_client import CollectorRegistry, generate_latest

from raftkv.server.metrics import ETCD_DISK_BUCKETS, DiskMetrics
from tests.prom_text import parse

WAL = "etcd_disk_wal_fsync_duration_seconds"
COMMIT = "etcd_disk_backend_commit_duration_seconds"


def scrape(disk: DiskMetrics) -> tuple[dict[str, str], dict[str, float]]:
    registry = CollectorRegistry()
    registry.register(disk)
    return parse(generate_latest(registry).decode())


def test_buckets_are_cumulative_with_le_bounds_inclusive() -> None:
    disk = DiskMetrics()
    for v in (0.0005, 0.001, 0.003, 0.004, 9.0):
        disk.wal_fsync.observe(v)
    _types, got = scrape(disk)
    assert got[WAL + '_bucket{le="0.001"}'] == 2  # 0.0005 and exactly 0.001
    assert got[WAL + '_bucket{le="0.002"}'] == 2
    assert got[WAL + '_bucket{le="0.004"}'] == 4
    assert got[WAL + '_bucket{le="8.192"}'] == 4
    assert got[WAL + '_bucket{le="+Inf"}'] == 5
    assert got[WAL + "_count"] == 5
    assert got[WAL + "_sum"] == 0.0005 + 0.001 + 0.003 + 0.004 + 9.0
    assert got[COMMIT + "_count"] == 0


def test_etcd_names_buckets_and_no_created_series() -> None:
    assert ETCD_DISK_BUCKETS[0] == 0.001 and ETCD_DISK_BUCKETS[-1] == 8.192
    assert len(ETCD_DISK_BUCKETS) == 14
    types, got = scrape(DiskMetrics())
    assert types == {WAL: "histogram", COMMIT: "histogram"}
    for name in (WAL, COMMIT):
        bounds = [k.split('"')[1] for k in got if k.startswith(name + "_bucket")]
        assert bounds == [f"{b:g}" for b in ETCD_DISK_BUCKETS] + ["+Inf"]
        assert name + "_count" in got and name + "_sum" in got
    # etcd has no _created series (prometheus_client's would be a gauge of its own)
    assert not any("_created" in k for k in got)


def test_observations_from_many_threads_are_all_counted() -> None:
    disk = DiskMetrics()

    def work() -> None:
        for _ in range(2000):
            disk.backend_commit.observe(0.003)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    _types, got = scrape(disk)
    assert got[COMMIT + "_count"] == 8000
    assert got[COMMIT + '_bucket{le="0.002"}'] == 0
    assert got[COMMIT + '_bucket{le="0.004"}'] == 8000
