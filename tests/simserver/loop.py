"""An asyncio event loop on virtual time, with simulated processes that can crash.

Owns: ``VirtualLoop`` (time that jumps to the next timer instead of waiting for it; blocking
calls handed to the executor run in place), ``Process`` (the code of one simulated member or
client: every callback scheduled from its context belongs to it) and ``SimClock`` (a member's
``raftkv.clock.Clock``, the loop's time plus the member's own offset).

Contracts:
- nothing waits in real time: when no callback is ready, ``time()`` jumps to the earliest
  timer; with no timer either the simulation is stuck, and ``SimulationStuckError`` says so;
- the order callbacks run in depends only on the order they were scheduled and their times,
  so a program that draws its randomness from seeds runs the same way every time (no threads:
  ``run_in_executor`` runs the call at once and returns its finished future);
- a ``Process``'s context carries it in ``CURRENT_PROCESS``; every callback scheduled from that
  context (task steps, future callbacks, timers) is guarded: once ``Process.kill`` ran, none of
  them runs again, exactly as nothing of a killed process runs again.  A killed process's
  pending tasks are left suspended, never resumed (``close`` closes their coroutines); their
  "destroyed but pending" report is silenced.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import selectors
import threading
from collections.abc import Callable, Coroutine, Mapping
from typing import Any, TypeVar

T = TypeVar("T")

EPOCH_NS = 1_796_000_000_000_000_000
"""The wall clock of virtual time 0 (late 2026), so IDs seeded by the wall clock look real."""

CURRENT_PROCESS: contextvars.ContextVar[Process | None] = contextvars.ContextVar(
    "simulated_process", default=None
)


class SimulationStuckError(RuntimeError):
    """Nothing is ready and no timer is set: every task waits for something that never comes."""


class Process:
    """One simulated OS process: a context whose callbacks stop for good at ``kill``."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.alive = True
        self.context = contextvars.copy_context()
        self.context.run(CURRENT_PROCESS.set, self)

    def spawn(
        self, loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, T]
    ) -> asyncio.Task[T]:
        """Run ``coro`` as a task of this process."""
        return loop.create_task(coro, context=self.context)

    def kill(self) -> None:
        self.alive = False

    def __repr__(self) -> str:
        return f"Process({self.name}, {'alive' if self.alive else 'killed'})"


def _guarded(proc: Process, callback: Callable[..., Any], *args: Any) -> None:
    if proc.alive:
        callback(*args)


class _VirtualSelector(selectors.BaseSelector):
    """Holds registrations (the loop registers none of its own) and never reports I/O; a
    ``select`` with a timeout moves virtual time forward by it."""

    def __init__(self, loop: VirtualLoop) -> None:
        self._loop = loop
        self._keys: dict[int, selectors.SelectorKey] = {}

    def register(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        raise RuntimeError("a simulated member opened real I/O; the simulation has none")

    def unregister(self, fileobj: Any) -> selectors.SelectorKey:
        raise KeyError(fileobj)

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        if timeout is None:
            raise SimulationStuckError(
                f"at virtual time {self._loop.time():.3f}s nothing is ready and no timer is set"
            )
        self._loop.advance(timeout)
        return []

    def get_map(self) -> Mapping[Any, selectors.SelectorKey]:
        return self._keys

    def close(self) -> None:
        pass


class VirtualLoop(asyncio.BaseEventLoop):
    def __init__(self) -> None:
        super().__init__()
        self._now = 0.0
        self._selector = _VirtualSelector(self)
        self.set_exception_handler(self._handle_exception)
        # Every unfinished task of a process, held until it ends or the loop closes.
        self._task_process: dict[asyncio.Task[Any], Process] = {}
        self.unhandled: list[dict[str, Any]] = []
        """Exceptions no task retrieved, from live processes (a simulation may fail on them)."""

    # -- time -------------------------------------------------------------------------------

    def time(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        if seconds > 0:
            self._now += seconds

    # -- the process guard --------------------------------------------------------------------

    def create_task(  # type: ignore[override]
        self,
        coro: Coroutine[Any, Any, T],
        *,
        name: str | None = None,
        context: contextvars.Context | None = None,
    ) -> asyncio.Task[T]:
        task = super().create_task(coro, name=name, context=context)
        proc = CURRENT_PROCESS.get() if context is None else context.get(CURRENT_PROCESS)
        if proc is not None:
            self._task_process[task] = proc
            task.add_done_callback(self._task_process.pop)
        return task

    def close(self) -> None:
        """Close the loop and the coroutines of every task left pending (the killed processes'
        and, at the end of a run, the live ones'): their ``finally`` clauses run now, against
        closed files and a loop that runs nothing more, rather than at some later collection."""
        for proc in {id(p): p for p in self._task_process.values()}.values():
            proc.kill()
        pending, self._task_process = list(self._task_process), {}
        for task in pending:
            with contextlib.suppress(BaseException):
                task.get_coro().close()
        super().close()

    def call_soon(  # type: ignore[override]
        self,
        callback: Callable[..., Any],
        *args: Any,
        context: contextvars.Context | None = None,
    ) -> asyncio.Handle:
        proc = CURRENT_PROCESS.get() if context is None else context.get(CURRENT_PROCESS)
        if proc is None:
            return super().call_soon(callback, *args, context=context)
        return super().call_soon(_guarded, proc, callback, *args, context=context)

    def call_at(  # type: ignore[override]
        self,
        when: float,
        callback: Callable[..., Any],
        *args: Any,
        context: contextvars.Context | None = None,
    ) -> asyncio.TimerHandle:
        proc = CURRENT_PROCESS.get() if context is None else context.get(CURRENT_PROCESS)
        if proc is None:
            return super().call_at(when, callback, *args, context=context)
        return super().call_at(when, _guarded, proc, callback, *args, context=context)

    def call_soon_threadsafe(  # type: ignore[override]
        self, callback: Callable[..., Any], *args: Any, context: contextvars.Context | None = None
    ) -> asyncio.Handle:
        """Only from the loop's own thread (asyncio uses it for async generators' finalizers):
        the simulation runs no other thread."""
        if getattr(self, "_thread_id", None) not in (None, threading.get_ident()):
            raise RuntimeError("a thread reached the simulated loop; the simulation runs none")
        return self.call_soon(callback, *args, context=context)

    # -- blocking calls run in place ---------------------------------------------------------

    def run_in_executor(  # type: ignore[override]
        self, executor: Any, func: Callable[..., T], *args: Any
    ) -> asyncio.Future[T]:
        fut: asyncio.Future[T] = self.create_future()
        try:
            fut.set_result(func(*args))
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            fut.set_exception(exc)
        return fut

    # -- what BaseEventLoop leaves to its subclasses -------------------------------------------

    def _process_events(self, event_list: list[Any]) -> None:
        pass

    def _write_to_self(self) -> None:
        pass

    def _handle_exception(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        task = context.get("task") or context.get("future")
        proc = self._task_process.get(task) if isinstance(task, asyncio.Task) else None
        if proc is not None and not proc.alive:
            return  # what a killed process left behind
        self.unhandled.append(context)


class SimClock:
    """A member's clock: the loop's virtual time plus its own offset (``jump`` moves it)."""

    def __init__(self, loop: VirtualLoop, offset: float = 0.0) -> None:
        self._loop = loop
        self.offset = offset

    def monotonic(self) -> float:
        return self._loop.time() + self.offset

    def wall_ns(self) -> int:
        return EPOCH_NS + int(self.monotonic() * 1e9)

    def jump(self, seconds: float) -> None:
        """Move this member's clock forward (a paused VM, a stepped clock): never back, as a
        monotonic clock."""
        self.offset += max(0.0, seconds)
