"""The pieces of ``bench/compare_etcd.py`` that parse and format, on recorded etcdctl output."""

from __future__ import annotations

from bench.compare_etcd import parse_check_perf, scenarios

# etcdctl 3.4.23 ``check perf --load=m`` on a loaded 2-core machine (progress lines trimmed).
FAILED_RUN = """\
 59 / 60   98.33%
 60 / 60  100.00% 1m0s
FAIL: Throughput too low: 763 writes/s
Slowest request took too long: 0.566855s
PASS: Stddev is 0.039786s
FAIL
"""

PASSED_RUN = """\
 60 / 60  100.00% 1m0s
PASS: Throughput is 150 writes/s
PASS: Slowest request took 0.111249s
PASS: Stddev is 0.005177s
PASS
"""


def test_parse_failed_check_perf() -> None:
    assert parse_check_perf(FAILED_RUN) == {
        "throughput": "FAIL: Throughput too low: 763 writes/s",
        "slowest": "FAIL: Slowest request took too long: 0.566855s",
        "stddev": "PASS: Stddev is 0.039786s",
        "result": "FAIL",
    }


def test_parse_passed_check_perf() -> None:
    got = parse_check_perf(PASSED_RUN)
    assert got["result"] == "PASS" and got["slowest"] == "PASS: Slowest request took 0.111249s"
    assert parse_check_perf("Error: context deadline exceeded\n") == {}


def test_scenarios_are_the_issue_s_four_and_ten_clients() -> None:
    sc = {s.name: s for s in scenarios(256)}
    assert list(sc) == ["put-1", "put-10", "put-100", "range-l", "range-s"]
    assert (sc["put-1"].clients, sc["put-100"].clients, sc["put-100"].conns) == (1, 100, 10)
    assert (sc["put-10"].clients, sc["put-10"].conns) == (10, 10)
    assert not sc["range-l"].workload.serializable and sc["range-s"].workload.serializable
    assert sc["put-100"].workload.val_size == 256
