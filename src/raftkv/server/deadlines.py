"""Request deadlines for proposals: one timer for all of a member's waiting requests.

Owns: failing each registered future with a fresh error once its deadline passes.

Contracts:
- every deadline is ``now + timeout`` for one fixed ``timeout``, so deadlines are registered in
  order and the queue stays sorted without a heap; at most one loop timer is armed, and it
  fires at most every ``GRANULARITY`` seconds: a future fails at most that late;
- a future that is done by its deadline is left alone (answered, failed or cancelled by its
  owner); one that is not gets ``make_error()`` as its exception;
- used only from the event loop thread.

Why not ``asyncio.timeout`` per request: under load a member holds thousands of proposals in
flight, and a timeout context per request (a Timeout object, a TimerHandle armed then cancelled,
a current-task lookup) costs more CPU than everything else the member does for a put outside
gRPC, Raft and apply.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import Any

GRANULARITY = 0.05


class Deadlines:
    def __init__(self, timeout: float, make_error: Callable[[], BaseException]) -> None:
        self.timeout = timeout
        self._make_error = make_error
        self._queue: deque[tuple[float, asyncio.Future[Any]]] = deque()
        self._timer: asyncio.TimerHandle | None = None

    def add(self, fut: asyncio.Future[Any], loop: asyncio.AbstractEventLoop) -> float:
        """Fail ``fut`` unless it is done ``timeout`` seconds from now; returns the deadline."""
        deadline = loop.time() + self.timeout
        self._queue.append((deadline, fut))
        if self._timer is None:
            self._timer = loop.call_at(deadline, self._expire, loop)
        return deadline

    def pending(self) -> int:
        """Futures registered and not yet past their deadline (done or not)."""
        return len(self._queue)

    def _expire(self, loop: asyncio.AbstractEventLoop) -> None:
        self._timer = None
        queue = self._queue
        now = loop.time()
        while queue and queue[0][0] <= now:
            _, fut = queue.popleft()
            if not fut.done():
                fut.set_exception(self._make_error())
        if queue:
            self._timer = loop.call_at(max(queue[0][0], now + GRANULARITY), self._expire, loop)

    def close(self) -> None:
        """Disarm the timer and forget every future (the member is stopping)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._queue.clear()
