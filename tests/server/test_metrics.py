"""The disk histograms: Prometheus' cumulative buckets with etcd's names and bounds."""

from __future__ import annotations

import threading

from raftkv.server.metrics import ETCD_DISK_BUCKETS, DiskMetrics, Histogram


def parse(lines: list[str]) -> dict[str, str]:
    return dict(line.rsplit(" ", 1) for line in lines if not line.startswith("#"))


def test_buckets_are_cumulative_with_le_bounds_inclusive() -> None:
    h = Histogram("x_seconds", "help", (0.001, 0.002, 0.004))
    for v in (0.0005, 0.001, 0.003, 0.004, 9.0):
        h.observe(v)
    got = parse(h.render())
    assert got['x_seconds_bucket{le="0.001"}'] == "2"  # 0.0005 and exactly 0.001
    assert got['x_seconds_bucket{le="0.002"}'] == "2"
    assert got['x_seconds_bucket{le="0.004"}'] == "4"
    assert got['x_seconds_bucket{le="+Inf"}'] == "5"
    assert got["x_seconds_count"] == "5"
    assert float(got["x_seconds_sum"]) == 0.0005 + 0.001 + 0.003 + 0.004 + 9.0
    assert h.render()[:2] == ["# HELP x_seconds help", "# TYPE x_seconds histogram"]


def test_etcd_names_and_buckets() -> None:
    assert ETCD_DISK_BUCKETS[0] == 0.001 and ETCD_DISK_BUCKETS[-1] == 8.192
    assert len(ETCD_DISK_BUCKETS) == 14
    names = {line.split()[2] for line in DiskMetrics().render() if line.startswith("# TYPE")}
    assert names == {
        "etcd_disk_wal_fsync_duration_seconds",
        "etcd_disk_backend_commit_duration_seconds",
    }


def test_observations_from_many_threads_are_all_counted() -> None:
    h = Histogram("t", "help", ETCD_DISK_BUCKETS)

    def work() -> None:
        for _ in range(2000):
            h.observe(0.003)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert h.count == 8000
