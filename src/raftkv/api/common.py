"""What every service shares: error translation and the servicer context type.

Contract: ``guarded`` runs one RPC body; an ``EtcdError`` becomes etcd's gRPC status and
message; any other exception is a server bug, logged with its traceback and reported as UNKNOWN
with its text — it never takes the member down.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc.aio

from raftkv import errors

log = logging.getLogger("raftkv.api")

Context = grpc.aio.ServicerContext[Any, Any]
T = TypeVar("T")


async def guarded(context: Context, body: Callable[[], Awaitable[T]]) -> T:
    try:
        return await body()
    except errors.EtcdError as exc:
        await errors.abort(context, exc)
    except (asyncio.CancelledError, grpc.aio.AbortError):
        raise
    except Exception as exc:
        log.exception("unexpected error serving a request")
        await errors.abort(context, exc)
