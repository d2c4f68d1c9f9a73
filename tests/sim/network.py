"""Simulated time and the simulated network between Raft nodes.

Owns: ``Scheduler`` (a priority queue of events by simulated time) and
``Network`` (per-message loss, delay, reordering, duplication, partitions).

Contracts:
- time is an integer count of simulated units; nothing reads a real clock;
- events at the same time run in the order they were scheduled (a sequence
  number breaks ties), so one seed gives one trace;
- every random choice comes from the one ``random.Random`` passed in;
- a link is directed: ``block(a, b)`` stops messages from a to b only, so
  symmetric partitions block both directions and asymmetric faults one; blocks
  nest (each ``block`` is undone by one ``unblock``).
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable
from dataclasses import dataclass

from raftkv.raft.types import Message

Action = Callable[[], None]


class Scheduler:
    def __init__(self) -> None:
        self.now = 0
        self._seq = 0
        self._queue: list[tuple[int, int, Action]] = []

    def at(self, when: int, action: Action) -> None:
        assert when >= self.now, f"event in the past: {when} < {self.now}"
        self._seq += 1
        heapq.heappush(self._queue, (when, self._seq, action))

    def after(self, delay: int, action: Action) -> None:
        self.at(self.now + delay, action)

    def run_next(self) -> bool:
        """Run the earliest event; False when the queue is empty."""
        if not self._queue:
            return False
        when, _, action = heapq.heappop(self._queue)
        self.now = when
        action()
        return True

    def next_time(self) -> int | None:
        return self._queue[0][0] if self._queue else None


@dataclass
class NetworkParams:
    """Fault rates of the network; ``slow_*`` models long delays that reorder messages."""

    min_delay: int = 1
    max_delay: int = 5
    loss: float = 0.0
    duplicate: float = 0.0
    slow_probability: float = 0.0
    slow_max_delay: int = 50


class Network:
    """Delivers ``Message``s between node IDs through ``deliver(msg)``.

    Every message that is dropped (at send time or in flight) is reported once
    through ``lost(msg)``, the way a real transport notices a failed stream.
    """

    def __init__(
        self,
        sched: Scheduler,
        rng: random.Random,
        deliver: Callable[[Message], None],
        params: NetworkParams,
        lost: Callable[[Message], None],
    ) -> None:
        self.sched = sched
        self.rng = rng
        self.deliver = deliver
        self.lost = lost
        self.params = params
        self._blocked: dict[tuple[int, int], int] = {}
        self.sent = 0
        self.dropped = 0

    def block(self, frm: int, to: int) -> None:
        self._blocked[(frm, to)] = self._blocked.get((frm, to), 0) + 1

    def unblock(self, frm: int, to: int) -> None:
        n = self._blocked[(frm, to)] - 1
        if n:
            self._blocked[(frm, to)] = n
        else:
            del self._blocked[(frm, to)]

    def heal_all(self) -> None:
        self._blocked.clear()

    def connected(self, frm: int, to: int) -> bool:
        return (frm, to) not in self._blocked

    def _delay(self) -> int:
        p = self.params
        if p.slow_probability and self.rng.random() < p.slow_probability:
            return self.rng.randint(p.max_delay, p.slow_max_delay)
        return self.rng.randint(p.min_delay, p.max_delay)

    def send(self, msg: Message) -> bool:
        """Queue ``msg``; False when it is dropped at once (blocked link or loss)."""
        self.sent += 1
        if (msg.frm, msg.to) in self._blocked or (
            self.params.loss and self.rng.random() < self.params.loss
        ):
            self.dropped += 1
            self.lost(msg)
            return False
        copies = 1
        if self.params.duplicate and self.rng.random() < self.params.duplicate:
            copies = 2
        for _ in range(copies):
            self.sched.after(self._delay(), lambda: self._arrive(msg))
        return True

    def _arrive(self, msg: Message) -> None:
        # A partition that started while the message was in flight also drops it.
        if (msg.frm, msg.to) in self._blocked:
            self.dropped += 1
            self.lost(msg)
            return
        self.deliver(msg)
