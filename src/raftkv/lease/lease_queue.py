"""A min-queue of (time, lease ID) with at most one live entry per lease.

Owns: the ordering structure behind the lessor's expiry notifier and its
checkpoint schedule (etcd's LeaseQueue / LeaseExpiredNotifier).

Implementation: ``heapq`` with lazy deletion.  ``register`` pushes a new entry
and records the lease's current time in a dict; an entry in the heap is live
only while its time equals the recorded one, stale entries are dropped when
they reach the top.  When stale entries outnumber live ones the heap is rebuilt
(O(n), amortised O(1) per operation), so memory stays O(live leases) however
often leases are renewed.

Contracts: ties on time are broken by lease ID, so the pop order is a function
of the registered (time, ID) pairs alone; ``peek`` and ``pop`` are O(log n)
amortised, ``register`` and ``remove`` O(log n).
"""

from __future__ import annotations

import heapq

_COMPACT_MIN = 64


class LeaseQueue:
    """Lease IDs ordered by a time each; re-registering a lease moves it."""

    __slots__ = ("_heap", "_times")

    def __init__(self) -> None:
        self._heap: list[tuple[float, int]] = []
        self._times: dict[int, float] = {}

    def __len__(self) -> int:
        """Number of live entries (one per registered lease)."""
        return len(self._times)

    def __contains__(self, lease_id: object) -> bool:
        return lease_id in self._times

    def time_of(self, lease_id: int) -> float | None:
        """The time a lease is registered at, or ``None`` when it is not queued."""
        return self._times.get(lease_id)

    def register(self, lease_id: int, time: float) -> None:
        """Queue ``lease_id`` at ``time``, replacing any earlier registration."""
        if self._times.get(lease_id) == time:
            return
        self._times[lease_id] = time
        heapq.heappush(self._heap, (time, lease_id))
        self._maybe_compact()

    def remove(self, lease_id: int) -> None:
        """Drop ``lease_id`` from the queue; no-op when it is not queued."""
        if self._times.pop(lease_id, None) is not None:
            self._maybe_compact()

    def peek(self) -> tuple[float, int] | None:
        """The earliest live (time, lease_id), or ``None`` when empty."""
        self._drop_stale()
        return self._heap[0] if self._heap else None

    def pop(self) -> tuple[float, int]:
        """Remove and return the earliest live (time, lease_id); ``IndexError`` when empty."""
        self._drop_stale()
        time, lease_id = heapq.heappop(self._heap)
        del self._times[lease_id]
        return time, lease_id

    def clear(self) -> None:
        self._heap.clear()
        self._times.clear()

    def _drop_stale(self) -> None:
        heap, times = self._heap, self._times
        while heap:
            time, lease_id = heap[0]
            if times.get(lease_id) == time:
                return
            heapq.heappop(heap)

    def _maybe_compact(self) -> None:
        if len(self._heap) > _COMPACT_MIN and len(self._heap) > 2 * len(self._times):
            self._heap = [(time, lease_id) for lease_id, time in self._times.items()]
            heapq.heapify(self._heap)
