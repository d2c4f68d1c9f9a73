"""Benchmark statistics and their rendering, in the shape of etcd's ``pkg/report``.

Owns: turning raw per-request latencies (seconds) and error counts into :class:`Stats`
(total wall time, slowest, fastest, average, population stddev, requests/sec, percentiles),
and printing them as etcd's benchmark does (Summary, response time histogram, latency
distribution, error distribution) or as one JSON object for scripts.

Contract: percentiles use etcd's rank rule ``idx = ceil(p * (n + 1) / 100) - 1`` clamped to
``[0, n - 1]`` on the sorted latencies; requests/sec counts successful requests only.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

PERCENTILES: tuple[float, ...] = (10.0, 25.0, 50.0, 75.0, 90.0, 95.0, 99.0, 99.9)
HISTOGRAM_BUCKETS = 10
BAR_CHAR = "∎"
BAR_WIDTH = 40


def percentiles(sorted_lats: Sequence[float], pcts: Sequence[float] = PERCENTILES) -> list[float]:
    """The value at each percentile of ``sorted_lats`` (ascending); zeros when it is empty."""
    n = len(sorted_lats)
    if n == 0:
        return [0.0 for _ in pcts]
    out = []
    for p in pcts:
        idx = math.ceil(p * (n + 1) / 100.0) - 1
        idx = min(max(idx, 0), n - 1)
        out.append(sorted_lats[idx])
    return out


def histogram(
    sorted_lats: Sequence[float], buckets: int = HISTOGRAM_BUCKETS
) -> list[tuple[float, int]]:
    """``buckets + 1`` (upper bound, count) pairs spanning fastest..slowest, evenly spaced.

    Each latency is counted in the first bucket whose upper bound is ``>=`` it.
    """
    if not sorted_lats:
        return []
    fastest, slowest = sorted_lats[0], sorted_lats[-1]
    width = (slowest - fastest) / buckets
    bounds = [fastest + width * i for i in range(buckets)] + [slowest]
    counts = [0] * len(bounds)
    bi = 0
    for lat in sorted_lats:
        while lat > bounds[bi] and bi < len(bounds) - 1:
            bi += 1
        counts[bi] += 1
    return list(zip(bounds, counts, strict=True))


@dataclass(frozen=True)
class Stats:
    """The outcome of one benchmark run; latencies are seconds, sorted ascending."""

    total: float
    lats: tuple[float, ...]
    errors: dict[str, int] = field(default_factory=dict)
    # CPU seconds the load processes spent during the run: near ``procs * total`` means the
    # client, not the server, limited the throughput.
    client_cpu: float = 0.0

    @property
    def count(self) -> int:
        return len(self.lats)

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    @property
    def fastest(self) -> float:
        return self.lats[0] if self.lats else 0.0

    @property
    def slowest(self) -> float:
        return self.lats[-1] if self.lats else 0.0

    @property
    def average(self) -> float:
        return sum(self.lats) / len(self.lats) if self.lats else 0.0

    @property
    def stddev(self) -> float:
        if not self.lats:
            return 0.0
        avg = self.average
        return math.sqrt(sum((x - avg) ** 2 for x in self.lats) / len(self.lats))

    @property
    def rps(self) -> float:
        return self.count / self.total if self.total > 0 else 0.0

    def percentile_map(self) -> dict[str, float]:
        return {_pct_key(p): v for p, v in zip(PERCENTILES, percentiles(self.lats), strict=True)}

    def to_json(self) -> dict[str, object]:
        """Machine-readable form; all durations in seconds."""
        return {
            "total": self.total,
            "count": self.count,
            "slowest": self.slowest,
            "fastest": self.fastest,
            "average": self.average,
            "stddev": self.stddev,
            "rps": self.rps,
            "percentiles": self.percentile_map(),
            "histogram": [[b, c] for b, c in histogram(self.lats)],
            "errors": dict(sorted(self.errors.items())),
            "client_cpu": self.client_cpu,
        }


def build_stats(
    total: float, lats: Sequence[float], errors: dict[str, int], client_cpu: float = 0.0
) -> Stats:
    return Stats(total=total, lats=tuple(sorted(lats)), errors=dict(errors), client_cpu=client_cpu)


def _pct_key(p: float) -> str:
    return f"p{p:g}"


def format_text(stats: Stats, precise: bool = False) -> str:
    """etcd benchmark's human-readable report."""
    prec = "{:f}" if precise else "{:.4f}"

    def secs(v: float) -> str:
        return prec.format(v) + " secs"

    lines: list[str] = []
    if stats.lats:
        lines += [
            "",
            "Summary:",
            f"  Total:\t{secs(stats.total)}.",
            f"  Slowest:\t{secs(stats.slowest)}.",
            f"  Fastest:\t{secs(stats.fastest)}.",
            f"  Average:\t{secs(stats.average)}.",
            f"  Stddev:\t{secs(stats.stddev)}.",
            f"  Requests/sec:\t{prec.format(stats.rps)}",
            "",
            "Response time histogram:",
        ]
        hist = histogram(stats.lats)
        top = max(c for _, c in hist)
        for bound, count in hist:
            bar = BAR_CHAR * (count * BAR_WIDTH // top if top else 0)
            lines.append(f"  {prec.format(bound)} [{count}]\t|{bar}")
        lines += ["", "Latency distribution:"]
        for p, v in zip(PERCENTILES, percentiles(stats.lats), strict=True):
            if v > 0:
                lines.append(f"  {p:g}% in {v * 1000:.3f} ms.")
    if stats.errors:
        lines += ["", "Error distribution:"]
        for msg, num in sorted(stats.errors.items()):
            lines.append(f"  [{num}]\t{msg}")
    return "\n".join(lines) + "\n"


def format_json(stats: Stats, extra: dict[str, object] | None = None) -> str:
    doc: dict[str, object] = dict(extra or {})
    doc.update(stats.to_json())
    return json.dumps(doc, sort_keys=True)
