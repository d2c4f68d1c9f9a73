"""Linearizable reads: one ReadIndex round for all the reads that arrive while it is pending.

Contract: ``wait`` returns once this member has applied everything committed when a ReadIndex
round that started after the call began was answered (etcd's linearizable read); reads
arriving while a round is in flight share the next round (one heartbeat round for many reads);
it raises etcd's ``request timed out`` after ``request_timeout``.
"""

from __future__ import annotations

import asyncio

from raftkv import errors
from raftkv.server.environment import Entropy
from raftkv.server.raft_node import RaftNode


class ReadBarrier:
    def __init__(self, raft: RaftNode, request_timeout: float, entropy: Entropy) -> None:
        """``entropy`` draws each round's read-index context."""
        self.raft = raft
        self.entropy = entropy
        self.request_timeout = request_timeout
        self._pending: asyncio.Future[None] | None = None
        self._wake = asyncio.Event()

    async def wait(self) -> None:
        if self._pending is None:
            self._pending = asyncio.get_running_loop().create_future()
            self._wake.set()
        await asyncio.shield(self._pending)

    async def run(self) -> None:
        """The loop that runs the rounds (a member task)."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            fut, self._pending = self._pending, None
            if fut is None:
                continue
            try:
                async with asyncio.timeout(self.request_timeout):
                    await self.raft.wait_leader()
                    index = await self.raft.read_index(self.entropy.randbytes(8))
                    await self.raft.wait_applied(index)
            except TimeoutError:
                fut.set_exception(errors.ERR_TIMEOUT())
            except Exception as exc:
                fut.set_exception(exc)
            else:
                fut.set_result(None)
            # Consume the exception if nobody awaited (all callers cancelled).
            if fut.done() and not fut.cancelled():
                fut.exception()
