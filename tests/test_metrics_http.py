"""Serving a prometheus_client registry over HTTP (raftkv.metrics_http), as the inspector and
the backup agent do: real sockets on loopback, prometheus_client's parser on the answers."""

from __future__ import annotations

import socket
import urllib.error
import urllib.request
from urllib.parse import urlsplit

import pytest
from prometheus_client import CollectorRegistry, Counter

from raftkv.backup.agent import Metrics
from raftkv.metrics_http import MetricsHTTPServer, listen_address
from tests.prom_text import parse


def get(url: str, accept: str = "") -> tuple[str, str]:
    request = urllib.request.Request(url, headers={"Accept": accept} if accept else {})
    with urllib.request.urlopen(request, timeout=5) as resp:
        return resp.read().decode(), resp.headers["Content-Type"]


def test_listen_address_forms() -> None:
    assert listen_address("127.0.0.1:9090") == ("127.0.0.1", 9090)
    assert listen_address("http://localhost:9090/metrics") == ("localhost", 9090)
    assert listen_address("[::1]:9090") == ("::1", 9090)
    assert listen_address(":9090") == ("127.0.0.1", 9090)
    assert listen_address("http://127.0.0.1", default_port=0) == ("127.0.0.1", 0)
    with pytest.raises(ValueError, match="a port is required"):
        listen_address("127.0.0.1")
    with pytest.raises(ValueError):
        listen_address("127.0.0.1:http")


def test_serves_the_registry_until_closed() -> None:
    registry = CollectorRegistry()
    Counter("things_total", "Things.", registry=registry).inc(3)
    server = MetricsHTTPServer("127.0.0.1", 0, registry)
    server.start()
    try:
        assert server.url.startswith("http://127.0.0.1:") and server.url.endswith("/metrics")
        text, content_type = get(server.url)
        assert content_type.startswith("text/plain")
        types, values = parse(text)
        assert types["things_total"] == "counter" and values["things_total"] == 3
        # the format follows the Accept header, as prometheus_client's own server does
        text, content_type = get(server.url, "application/openmetrics-text; version=1.0.0")
        assert content_type.startswith("application/openmetrics-text")
        assert text.endswith("# EOF\n")
    finally:
        server.close()
    server.close()  # twice is fine
    with pytest.raises(urllib.error.URLError):
        get(server.url)


def test_bad_or_busy_addresses_raise_os_errors() -> None:
    registry = CollectorRegistry()
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        with pytest.raises(OSError):
            MetricsHTTPServer("127.0.0.1", busy.getsockname()[1], registry)
    with pytest.raises(OSError):
        MetricsHTTPServer("no-such-host.invalid", 0, registry)


def test_closing_a_server_never_started_releases_its_port() -> None:
    server = MetricsHTTPServer("127.0.0.1", 0, CollectorRegistry())
    port = urlsplit(server.url).port
    server.close()
    with socket.socket() as again:
        again.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        again.bind(("127.0.0.1", port or 0))


def test_an_ipv6_address_is_served_when_the_host_has_ipv6() -> None:
    try:
        server = MetricsHTTPServer("::1", 0, CollectorRegistry())
    except OSError:
        pytest.skip("no IPv6 loopback here")
    server.start()
    try:
        assert server.url.startswith("http://[::1]:")
        get(server.url)
    finally:
        server.close()


def test_the_backup_agent_serves_its_metrics_on_any_free_port_without_one() -> None:
    metrics = Metrics()
    url = metrics.serve("http://127.0.0.1")
    try:
        metrics.last_verified_revision.set(42)
        _types, values = parse(get(url)[0])
        assert values["raftkv_backup_last_verified_revision"] == 42
        assert "raftkv_backup_recovery_point_lag_seconds" in values
    finally:
        metrics.close()
