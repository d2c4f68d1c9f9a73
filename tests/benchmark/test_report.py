"""Statistics of ``raftkv.benchmark.report``: etcd's percentile rule, histogram, rendering."""

from __future__ import annotations

import json
import math

from hypothesis import given
from hypothesis import strategies as st

from raftkv.benchmark.report import (
    PERCENTILES,
    build_stats,
    format_json,
    format_text,
    histogram,
    percentiles,
)


def test_percentiles_follow_etcd_rank_rule() -> None:
    lats = [float(i) for i in range(1, 11)]  # n = 10
    # idx = ceil(p * 11 / 100) - 1: p10 -> 1 -> 2.0, p25 -> 2 -> 3.0, p50 -> 5 -> 6.0,
    # p75 -> 8 -> 9.0, p90 and above clamp to the last element.
    assert percentiles(lats) == [2.0, 3.0, 6.0, 9.0, 10.0, 10.0, 10.0, 10.0]
    assert percentiles([]) == [0.0] * len(PERCENTILES)
    assert percentiles([0.5]) == [0.5] * len(PERCENTILES)


@given(st.lists(st.floats(0, 10, allow_nan=False), min_size=1, max_size=300))
def test_percentiles_are_monotonic_members(values: list[float]) -> None:
    lats = sorted(values)
    got = percentiles(lats)
    assert got == sorted(got)
    assert all(v in lats for v in got)


@given(st.lists(st.floats(0, 10, allow_nan=False), min_size=1, max_size=300))
def test_histogram_counts_every_latency_once(values: list[float]) -> None:
    lats = sorted(values)
    hist = histogram(lats)
    assert len(hist) == 11
    assert sum(c for _, c in hist) == len(lats)
    assert hist[0][0] == lats[0] and hist[-1][0] == lats[-1]
    bounds = [b for b, _ in hist]
    assert bounds == sorted(bounds)


def test_summary_figures() -> None:
    s = build_stats(2.0, [0.3, 0.1, 0.2, 0.4], {"boom": 2})
    assert s.lats == (0.1, 0.2, 0.3, 0.4)
    assert (s.fastest, s.slowest, s.count, s.error_count) == (0.1, 0.4, 4, 2)
    assert math.isclose(s.average, 0.25)
    assert math.isclose(s.stddev, math.sqrt(0.0125))
    assert s.rps == 2.0  # successes per second of wall time


def test_text_report_has_etcd_sections() -> None:
    s = build_stats(1.0, [0.001 * i for i in range(1, 101)], {"rpc error: x": 3})
    text = format_text(s)
    for part in (
        "Summary:",
        "  Total:\t1.0000 secs.",
        "  Slowest:\t0.1000 secs.",
        "  Requests/sec:\t100.0000",
        "Response time histogram:",
        "Latency distribution:",
        "  99.9% in 100.000 ms.",
        "  50% in 51.000 ms.",
        "Error distribution:",
        "  [3]\trpc error: x",
    ):
        assert part in text
    assert "∎" * 40 in text  # the fullest bucket gets the full bar


def test_only_errors_prints_no_summary() -> None:
    text = format_text(build_stats(1.0, [], {"down": 5}))
    assert "Summary" not in text and "[5]\tdown" in text


def test_json_report() -> None:
    s = build_stats(0.5, [0.01, 0.02], {}, client_cpu=0.25)
    doc = json.loads(format_json(s, {"op": "put"}))
    assert doc["op"] == "put" and doc["count"] == 2 and doc["rps"] == 4.0
    assert doc["percentiles"]["p50"] == 0.02 and set(doc["percentiles"]) == {
        "p10",
        "p25",
        "p50",
        "p75",
        "p90",
        "p95",
        "p99",
        "p99.9",
    }
    assert doc["client_cpu"] == 0.25 and doc["errors"] == {}
