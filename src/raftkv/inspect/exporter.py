"""``--watch``: check again every interval and serve the latest result as Prometheus metrics.

Owns: the metrics (``Exporter``, a prometheus_client Collector on its own registry, and
``families``), their HTTP server (``MetricsServer``: prometheus_client's WSGI app on a
background thread, ``raftkv.metrics_http``), and the watch loop (``watch``).

Metrics (the latest check unless the name ends in ``_total``):
- ``raftkv_inspector_consistent`` 1 when the latest check found the members consistent, else 0;
- ``raftkv_inspector_status`` the latest exit status (0 consistent, 1 divergent, 2 unknown);
- ``raftkv_inspector_checks_total``, ``raftkv_inspector_divergences_total`` (divergences found,
  summed over checks), ``raftkv_inspector_check_errors_total`` (checks that could not tell);
- ``raftkv_inspector_last_check_timestamp_seconds``, ``raftkv_inspector_common_revision``;
- per member, labelled ``member``, ``id``, ``endpoint``: ``raftkv_inspector_member_up``,
  ``_divergent``, ``_revision``, ``_hash``, ``_key_count``, ``_raft_term``, ``_raft_index``,
  ``_raft_applied_index``, ``_db_size_bytes`` (absent values are left out).

Contract: the loop runs ``count`` checks (forever when ``count`` is 0), the first at once and the
next ones ``interval`` seconds after the previous one started; a scrape never waits for a check.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import generate_latest
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from raftkv.inspect.gather import InspectOptions, UsageError, check
from raftkv.inspect.verdict import EXIT_CONSISTENT, EXIT_UNKNOWN, CheckResult, MemberReport
from raftkv.metrics_http import MetricsHTTPServer, listen_address

_PREFIX = "raftkv_inspector_"
_MEMBER_LABELS = ["member", "id", "endpoint"]


def _labels(m: MemberReport) -> list[str]:
    return [m.name, f"{m.member_id:x}" if m.member_id else "", m.endpoint]


class Exporter(Collector):
    """The counters across checks and the latest result; a Collector on its own ``registry``,
    read when scraped (``update`` and a scrape may run on different threads)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.checks = 0
        self.divergences = 0
        self.errors = 0
        self.latest: CheckResult | None = None
        self.latest_time = 0.0
        self.registry = CollectorRegistry()
        self.registry.register(self)

    def update(self, result: CheckResult) -> None:
        with self._lock:
            self.checks += 1
            self.divergences += len(result.divergences)
            self.errors += 1 if result.exit_code == EXIT_UNKNOWN else 0
            self.latest, self.latest_time = result, time.time()

    def collect(self) -> Iterable[Metric]:
        with self._lock:
            return families(
                self.latest, self.checks, self.divergences, self.errors, self.latest_time
            )

    def text(self) -> str:
        """The registry in the Prometheus text format."""
        return generate_latest(self.registry).decode()


def families(
    result: CheckResult | None, checks: int, divergences: int, errors: int, when: float
) -> list[Metric]:
    """The inspector's metric families (see the module docstring)."""
    c, g = CounterMetricFamily, GaugeMetricFamily
    out: list[Metric] = [
        c(f"{_PREFIX}checks_total", "Consistency checks run.", value=checks),
        c(f"{_PREFIX}divergences_total", "Divergences found, over all checks.",
          value=divergences),
        c(f"{_PREFIX}check_errors_total", "Checks that could not tell.", value=errors),
    ]  # fmt: skip
    if result is None:
        return out
    out += [
        g(f"{_PREFIX}consistent", "1 when the latest check found no divergence.",
          value=int(result.exit_code == EXIT_CONSISTENT)),
        g(f"{_PREFIX}status", "Latest exit status: 0 ok, 1 divergent, 2 unknown.",
          value=result.exit_code),
        g(f"{_PREFIX}last_check_timestamp_seconds", "When the latest check ended.", value=when),
    ]  # fmt: skip
    if result.common_revision is not None:
        out.append(g(f"{_PREFIX}common_revision", "Revision the members were compared at.",
                     value=result.common_revision))  # fmt: skip
    per_member: list[tuple[str, str, Callable[[Any], float | None]]] = [
        ("up", "1 when the member answered.", lambda m: 1 if m.ok else 0),
        ("divergent", "1 when the member is named by a divergence.",
         lambda m: 1 if m.divergent else 0),
        ("revision", "The member's current revision.", lambda m: m.revision),
        ("hash", "HashKV at the common revision.", lambda m: m.hash),
        ("key_count", "Keys at the common revision.",
         lambda m: m.key_count if m.hash is not None else None),
        ("raft_term", "Raft term.", lambda m: m.raft_term),
        ("raft_index", "Raft index.", lambda m: m.raft_index),
        ("raft_applied_index", "Raft applied index.", lambda m: m.raft_applied_index),
        ("db_size_bytes", "Backend file size.", lambda m: m.db_size),
    ]  # fmt: skip
    for name, help_text, get in per_member:
        family = g(f"{_PREFIX}member_{name}", help_text, labels=_MEMBER_LABELS)
        for m in result.members:
            if (value := get(m)) is not None:  # absent values are left out
                family.add_metric(_labels(m), value)
        out.append(family)
    return out


class MetricsServer(MetricsHTTPServer):
    """Serves ``exporter``'s registry at ``addr`` (``host:port`` or a URL) under ``/metrics``;
    UsageError when ``addr`` has no port or cannot be bound."""

    def __init__(self, addr: str, exporter: Exporter) -> None:
        try:
            host, port = listen_address(addr)
            super().__init__(host, port, exporter.registry)
        except (ValueError, OSError) as exc:
            raise UsageError(f"--metrics-listen {addr}: {exc}") from None


def watch(
    opts: InspectOptions,
    interval: float,
    count: int,
    emit: Callable[[CheckResult], None],
    exporter: Exporter,
    after_check: Callable[[int, CheckResult], None] | None = None,
) -> int:
    """Run the checks; the exit status of the last one."""
    status = EXIT_UNKNOWN
    n = 0
    started = time.monotonic()
    while count <= 0 or n < count:
        if n:
            time.sleep(max(0.0, started + interval - time.monotonic()))
            started = time.monotonic()
        result = check(opts)
        emit(result)
        exporter.update(result)
        status = result.exit_code
        n += 1
        if after_check is not None:
            after_check(n, result)
    return status
