"""One dedicated thread that runs blocking calls for the event loop, one at a time, in order.

The Ready loop hands the WAL's fdatasync to it once per Ready.  ``asyncio.to_thread`` would
do, but costs several times more per call (a context copy, a thread-pool submission with its
locks, a concurrent future chained to an asyncio one); under load this handoff runs a few
hundred times a second on every member.

Contracts:
- calls run in submission order, never two at once, all in the same thread;
- ``run`` returns an asyncio future of the call's result or exception, resolved on the loop
  that submitted it; cancelling the future does not stop a call already running;
- ``close`` lets the calls already submitted finish, then ends the thread; ``run`` after
  ``close`` raises ``RuntimeError``.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

_Job = tuple[Callable[..., Any], tuple[Any, ...], asyncio.Future[Any], asyncio.AbstractEventLoop]


def _resolve(fut: asyncio.Future[Any], ok: bool, value: Any) -> None:
    if fut.cancelled():
        return
    if ok:
        fut.set_result(value)
    else:
        fut.set_exception(value)


class SerialWorker:
    def __init__(self, name: str) -> None:
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._closed = False
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._thread.start()

    def run(self, fn: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        """Run ``fn(*args)`` in the worker thread; await the returned future for its result."""
        if self._closed:
            raise RuntimeError("the worker is closed")
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[T] = loop.create_future()
        self._jobs.put((fn, args, fut, loop))
        return fut

    def close(self) -> None:
        """Finish the submitted calls, then end the thread (without waiting for it)."""
        if not self._closed:
            self._closed = True
            self._jobs.put(None)

    def _serve(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            fn, args, fut, loop = job
            try:
                value, ok = fn(*args), True
            except BaseException as exc:  # handed to the awaiting coroutine
                value, ok = exc, False
            # A closed loop raises RuntimeError: nobody awaits the result any more.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_resolve, fut, ok, value)
