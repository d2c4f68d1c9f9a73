"""A ``prometheus_client`` registry served over HTTP from a background thread, for the tools:
``raftkv check consistency --watch --metrics-listen`` and ``raftkv backup run
--listen-metrics-urls``.

Owns ``listen_address`` (``host:port`` or a URL, to ``(host, port)``) and ``MetricsHTTPServer``:
prometheus_client's WSGI app (``make_wsgi_app``: every GET path answers the registry's metrics,
the format chosen from the ``Accept`` header) on a thread-per-request ``wsgiref`` server that
logs nothing.

Contracts:
- the constructor binds the address, or raises ``OSError`` (unknown host, address in use);
- ``start`` serves from a daemon thread; a scrape runs on the server's threads, never the
  caller's;
- ``close`` stops serving and releases the port, started or not, and may be called twice.
"""

from __future__ import annotations

import socket
import threading
from socketserver import ThreadingMixIn
from typing import Any
from urllib.parse import urlsplit
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import make_wsgi_app
from prometheus_client.registry import Collector


def listen_address(addr: str, default_port: int | None = None) -> tuple[str, int]:
    """``host:port``, ``http://host:port`` or ``[v6]:port`` as ``(host, port)``; the host
    defaults to 127.0.0.1.  ValueError for a bad port, or no port and no ``default_port``."""
    parts = urlsplit(addr if "//" in addr else "//" + addr)
    port = parts.port  # ValueError when not a number in range
    if port is None:
        if default_port is None:
            raise ValueError("a port is required")
        port = default_port
    return parts.hostname or "127.0.0.1", port


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        return


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class MetricsHTTPServer:
    """Serves ``registry`` at ``http://host:port/metrics`` (``port`` 0: any free port)."""

    def __init__(self, host: str, port: int, registry: Collector) -> None:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)

        class Server(_ThreadingServer):
            address_family = infos[0][0]  # IPv4 or IPv6, as the host is

        self._server = make_server(
            host, port, make_wsgi_app(registry), Server, handler_class=_QuietHandler
        )
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="metrics-http", daemon=True
        )
        self._closed = False

    @property
    def url(self) -> str:
        host = str(self._server.server_address[0])
        if ":" in host:  # IPv6
            host = f"[{host}]"
        return f"http://{host}:{self._server.server_port}/metrics"

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._thread.is_alive():
            self._server.shutdown()  # waits for serve_forever to return
            self._thread.join(5)
        self._server.server_close()
