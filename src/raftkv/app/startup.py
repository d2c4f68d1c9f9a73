"""Checks a member makes before it touches its data, and one line for a failed start.

etcd opens its listeners first, then its data directory; so does ``raftkv serve``, through
these checks, so that the usual mistakes stop the start before anything is created, each with
one line naming the cause and the path or URL.

Contracts:
- ``check_listen_urls(cfg)`` binds (and at once releases) every address the member will
  listen on: peer, client, client HTTP and metrics URLs; ``StartupError`` (``cannot listen for
  peer traffic on http://127.0.0.1:2380: Address already in use``) for the first that cannot be
  bound.  It is a check, not a reservation: the member binds again when it starts;
- ``check_dirs(cfg)`` checks the data directory and a dedicated WAL directory: an existing one
  must be a directory the member can list and write in, a missing one must have a nearest
  existing ancestor that is a writable directory (``StartupError``: ``cannot open data dir
  /x/y: Not a directory``);
- ``report(log, exc)`` logs ``exc`` as one CRITICAL line (``logsetup.exception_line``); its
  traceback goes in a DEBUG record, so only ``--log-level debug`` shows it.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
import stat
from collections.abc import Iterable
from urllib.parse import urlsplit

from raftkv.fileutil import is_dir_writeable
from raftkv.server.config import ServerConfig
from raftkv.server.logsetup import exception_line


class StartupError(Exception):
    """The member cannot start; the message is the one line to show."""


def _strerror(exc: OSError) -> str:
    return exc.strerror or os.strerror(exc.errno or errno.EIO)


# ----------------------------------------------------------------------------------- listeners


def _listeners(cfg: ServerConfig) -> Iterable[tuple[str, str]]:
    """(what, url) of every URL the member listens on, in etcd's order (peers first)."""
    for url in cfg.listen_peer_urls:
        yield "peer traffic", url
    for url in cfg.listen_client_urls:
        yield "client requests", url
    for url in cfg.listen_client_http_urls:
        yield "client HTTP requests", url
    for url in cfg.listen_metrics_urls:
        yield "metrics", url


def _bind_error(host: str, port: int) -> OSError | None:
    """Why ``host:port`` cannot be listened on, or None.  An address in use or not permitted
    on any of the host's addresses is an error; so is having no address that binds at all."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        return OSError(errno.EADDRNOTAVAIL, f"cannot resolve {host}: {exc.strerror}")
    first: OSError | None = None
    bound = False
    for family, kind, proto, _name, addr in infos:
        try:
            with socket.socket(family, kind, proto) as s:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                s.bind(addr)
                bound = True
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                return exc
            first = first or exc
    return None if bound else first


def check_listen_urls(cfg: ServerConfig) -> None:
    """See the module contract."""
    for what, url in _listeners(cfg):
        parts = urlsplit(url)
        if parts.hostname is None or parts.port is None:
            continue  # the configuration check has refused what is not host:port
        exc = _bind_error(parts.hostname, parts.port)
        if exc is not None:
            raise StartupError(f"cannot listen for {what} on {url}: {_strerror(exc)}")


# ----------------------------------------------------------------------------------- data dirs


def _check_dir(what: str, path: str) -> None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        _check_creatable(what, path)
        return
    except OSError as exc:
        raise StartupError(f"cannot open {what} {path}: {_strerror(exc)}") from None
    if not stat.S_ISDIR(st.st_mode):
        raise StartupError(f"cannot open {what} {path}: {os.strerror(errno.ENOTDIR)}")
    try:
        os.listdir(path)
    except OSError as exc:
        raise StartupError(f"cannot open {what} {path}: {_strerror(exc)}") from None
    try:
        is_dir_writeable(path)
    except OSError as exc:
        raise StartupError(f"cannot write to {what} {path}: {_strerror(exc)}") from None


def _check_creatable(what: str, path: str) -> None:
    """A missing ``path`` will be created with its parents: its nearest existing ancestor
    must be a directory this process may create entries in."""
    ancestor = os.path.dirname(os.path.abspath(path))
    while not os.path.lexists(ancestor):
        ancestor = os.path.dirname(ancestor)
    if not os.path.isdir(ancestor):
        raise StartupError(f"cannot create {what} {path}: {ancestor}: {os.strerror(errno.ENOTDIR)}")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise StartupError(f"cannot create {what} {path}: {ancestor}: {os.strerror(errno.EACCES)}")


def check_dirs(cfg: ServerConfig) -> None:
    """See the module contract."""
    _check_dir("data dir", cfg.resolved_data_dir)
    if cfg.wal_dir:
        _check_dir("wal dir", cfg.wal_dir)


# ----------------------------------------------------------------------------------- reporting


def report(log: logging.Logger, exc: BaseException, prefix: str = "") -> None:
    """``exc`` as one CRITICAL line (after ``prefix``); the traceback at DEBUG only."""
    log.critical("%s%s", prefix, exception_line(exc))
    log.debug("the traceback of the error above", exc_info=exc)
