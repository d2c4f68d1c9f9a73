"""Pending linearizable read requests on the leader (ReadIndex, SAFE mode).

Owns: ``ReadOnly``, the queue of read requests waiting for a heartbeat round
to confirm leadership.  Each request is keyed by its context; a quorum of
acknowledgements for one context also confirms every request queued before it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from raftkv.raft.types import Message


@dataclass(slots=True)
class ReadIndexStatus:
    """One pending read: the request, the commit index at arrival, who acknowledged it."""

    req: Message
    index: int
    acks: set[int] = field(default_factory=set)


class ReadOnly:
    """FIFO of pending reads; contexts must be unique among pending reads."""

    def __init__(self) -> None:
        self.pending: dict[bytes, ReadIndexStatus] = {}
        self.queue: list[bytes] = []

    def add_request(self, index: int, m: Message) -> None:
        """Queue read request ``m`` (its ``context`` is the key) at commit index ``index``."""
        ctx = m.context
        if ctx in self.pending:
            return
        self.pending[ctx] = ReadIndexStatus(req=m, index=index)
        self.queue.append(ctx)

    def recv_ack(self, node_id: int, ctx: bytes) -> set[int] | None:
        """Record that ``node_id`` acknowledged the heartbeat carrying ``ctx``.

        Returns the set of acknowledgers, or None if ``ctx`` is not pending.
        """
        rs = self.pending.get(ctx)
        if rs is None:
            return None
        rs.acks.add(node_id)
        return rs.acks

    def advance(self, ctx: bytes) -> list[ReadIndexStatus]:
        """Release the read with ``ctx`` and every read queued before it."""
        if ctx not in self.pending:
            return []
        pos = self.queue.index(ctx)
        released = [self.pending.pop(c) for c in self.queue[: pos + 1]]
        del self.queue[: pos + 1]
        return released

    def last_pending_request_ctx(self) -> bytes:
        return self.queue[-1] if self.queue else b""
