"""``--watch``: check again every interval and serve the latest result as Prometheus metrics.

Owns: the metrics text (``metrics_text``), a small HTTP server answering ``GET /metrics`` from a
background thread (``MetricsServer``), and the watch loop (``watch``).

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
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from raftkv.inspect.gather import InspectOptions, UsageError, check
from raftkv.inspect.verdict import EXIT_CONSISTENT, EXIT_UNKNOWN, CheckResult, MemberReport

_PREFIX = "raftkv_inspector_"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(m: MemberReport) -> str:
    member_id = f"{m.member_id:x}" if m.member_id else ""
    return f'{{member="{_escape(m.name)}",id="{member_id}",endpoint="{_escape(m.endpoint)}"}}'


class Exporter:
    """The counters across checks and the latest result, rendered on demand."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.checks = 0
        self.divergences = 0
        self.errors = 0
        self.latest: CheckResult | None = None
        self.latest_time = 0.0

    def update(self, result: CheckResult) -> None:
        with self._lock:
            self.checks += 1
            self.divergences += len(result.divergences)
            self.errors += 1 if result.exit_code == EXIT_UNKNOWN else 0
            self.latest, self.latest_time = result, time.time()

    def text(self) -> str:
        with self._lock:
            return metrics_text(
                self.latest, self.checks, self.divergences, self.errors, self.latest_time
            )


def metrics_text(
    result: CheckResult | None, checks: int, divergences: int, errors: int, when: float
) -> str:
    out: list[str] = []

    def family(name: str, kind: str, help_text: str, samples: list[tuple[str, float]]) -> None:
        out.append(f"# HELP {_PREFIX}{name} {help_text}")
        out.append(f"# TYPE {_PREFIX}{name} {kind}")
        for labels, value in samples:
            text = str(int(value)) if value == int(value) else repr(value)
            out.append(f"{_PREFIX}{name}{labels} {text}")

    family("checks_total", "counter", "Consistency checks run.", [("", checks)])
    family(
        "divergences_total", "counter", "Divergences found, over all checks.", [("", divergences)]
    )
    family("check_errors_total", "counter", "Checks that could not tell.", [("", errors)])
    if result is not None:
        ok = result.exit_code == EXIT_CONSISTENT
        family("consistent", "gauge", "1 when the latest check found no divergence.", [("", ok)])
        family("status", "gauge", "Latest exit status: 0 ok, 1 divergent, 2 unknown.",
               [("", result.exit_code)])  # fmt: skip
        family("last_check_timestamp_seconds", "gauge", "When the latest check ended.",
               [("", when)])  # fmt: skip
        if result.common_revision is not None:
            family("common_revision", "gauge", "Revision the members were compared at.",
                   [("", result.common_revision)])  # fmt: skip
        labelled = [(m, _labels(m)) for m in result.members]
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
            samples = [(lab, v) for m, lab in labelled if (v := get(m)) is not None]
            family(f"member_{name}", "gauge", help_text, samples)
    return "\n".join(out) + "\n"


class MetricsServer:
    """Serves ``exporter.text()`` on ``GET /metrics`` at ``addr`` (``host:port`` or a URL)."""

    def __init__(self, addr: str, exporter: Exporter) -> None:
        parts = urlsplit(addr if "//" in addr else "//" + addr)
        if parts.port is None:
            raise UsageError(f"--metrics-listen {addr!r}: a port is required")
        host = parts.hostname or "127.0.0.1"

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path.split("?")[0].rstrip("/") in ("/metrics", ""):
                    body, status = exporter.text().encode(), 200
                    ctype = "text/plain; version=0.0.4; charset=utf-8"
                else:
                    body, status, ctype = b"404 page not found\n", 404, "text/plain"
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                return

        try:
            self._server = ThreadingHTTPServer((host, parts.port), Handler)
        except OSError as exc:
            raise UsageError(f"--metrics-listen {addr}: {exc}") from None
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="inspector-metrics", daemon=True
        )

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/metrics"

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


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
