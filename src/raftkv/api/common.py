"""What every service shares: error translation and the servicer context type.

Contract: ``guarded`` runs one RPC body; an ``EtcdError`` becomes etcd's gRPC status and
message; any other exception is a server bug, logged with its traceback and reported as UNKNOWN
with its text — it never takes the member down.

Corruption at rest found while serving (``BackendCorruptionError``: a stored value failed its
CRC during a Range, a read-only Txn, HashKV, ...) is not a server bug: the client gets etcd's
``etcdserver: corrupt cluster`` (DATA_LOSS) and the error goes to the process's corruption
reporter (``set_corruption_reporter``; ``raftkv serve`` installs its member's
``report_backend_corruption``, which logs the bucket and key and fences the member with a
CORRUPT alarm through Raft).  The corrupt data itself is never returned.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc.aio

from raftkv import errors
from raftkv.mvcc.errors import BackendCorruptionError

log = logging.getLogger("raftkv.api")

Context = grpc.aio.ServicerContext[Any, Any]
T = TypeVar("T")

CorruptionReporter = Callable[[BackendCorruptionError], None]
"""Told about each corruption a client request ran into; must not block or raise."""

_reporter: CorruptionReporter | None = None


def set_corruption_reporter(reporter: CorruptionReporter | None) -> None:
    """Install the process's corruption reporter (one member per process; None: none)."""
    global _reporter
    _reporter = reporter


def report_corruption(exc: BackendCorruptionError) -> None:
    """Hand ``exc`` to the installed reporter, or log it when there is none; never raises."""
    reporter = _reporter
    if reporter is None:
        log.error("backend corruption while serving a request (no reporter installed): %s", exc)
        return
    try:
        reporter(exc)
    except Exception:
        log.exception("the corruption reporter failed on: %s", exc)


async def guarded(context: Context, body: Callable[[], Awaitable[T]]) -> T:
    try:
        return await body()
    except errors.EtcdError as exc:
        await errors.abort(context, exc)
    except BackendCorruptionError as exc:
        report_corruption(exc)
        await errors.abort(context, errors.ERR_CORRUPT())
    except (asyncio.CancelledError, grpc.aio.AbortError):
        raise
    except Exception as exc:
        log.exception("unexpected error serving a request")
        await errors.abort(context, exc)
