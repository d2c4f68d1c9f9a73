"""Simulated clients: puts, linearizable gets and compare-and-swap txns against the members'
own request handlers, recorded as a history for the linearizability checker.

Owns: ``SimClient`` (one client process: its operations, their outcomes, its history).

Contracts:
- a request goes to the member's own KV service (``raftkv.api.kv``, what gRPC calls) as a task
  of the member's process, and
  the client waits for it at most ``attempt_timeout`` without awaiting it directly (a crashed
  member's task never ends): a write that got no answer is recorded with ``ret=None`` (it may
  or may not have taken effect), a read that got no answer is left out;
- a write still unanswered when the run ends is in ``full_history`` as pending;
- every written value is unique (``c<client>-<n>``), so the checker can tell writers apart;
- call and return times are the loop's virtual time.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import Callable, Collection, Coroutine
from typing import Any

from raftkv.api.gateway import GatewayContext
from raftkv.app.services import Services, build_services
from raftkv.proto import rpc_pb2 as pb
from tests.cluster.workload import cas_request
from tests.linearizability import Operation
from tests.simserver.loop import Process, VirtualLoop
from tests.simserver.members import SimMember


class SimClient:
    def __init__(
        self,
        *,
        index: int,
        loop: VirtualLoop,
        members: list[SimMember],
        rng: random.Random,
        keys: int,
        attempt_timeout: float = 3.0,
        think_max: float = 0.05,
    ) -> None:
        self.index = index
        self.loop = loop
        self.members = members
        self.rng = rng
        self.keys = [f"k{i}" for i in range(keys)]
        self.attempt_timeout = attempt_timeout
        self.think_max = think_max
        self.history: list[Operation] = []
        self.served_by: list[str] = []  # the member that answered each operation of history
        # Writes sent and not yet answered, by value: they may take effect at any time.
        self._pending: dict[str, Operation] = {}
        self.outcomes: Counter[str] = Counter()
        self.process = Process(f"client-{index}")
        self._n = 0
        self.stopping = False

    def start(self) -> asyncio.Task[None]:
        return self.process.spawn(self.loop, self._run())

    async def _run(self) -> None:
        while not self.stopping:
            await self.one_op()
            await asyncio.sleep(self.rng.uniform(0, self.think_max))

    def _record(self, op: Operation, target: SimMember) -> None:
        self.history.append(op)
        self.served_by.append(target.name)

    def full_history(self, distrust: Collection[str] = ()) -> list[Operation]:
        """The history, with the writes still unanswered as pending (``ret=None``).

        Answers from the members ``distrust`` (whose state machines were made to diverge)
        are not evidence: its reads are left out and its compare-and-swaps count as
        unanswered (their outcome came from its state); its puts went through Raft as
        anyone's."""
        ops = []
        for op, by in zip(self.history, self.served_by, strict=True):
            if by in distrust and op.ret is not None:
                if op.kind == "get":
                    continue
                if op.kind == "cas":
                    op = Operation.cas(
                        op.key, op.expected, op.value or "", None, op.call, None, op.client
                    )
            ops.append(op)
        return ops + list(self._pending.values())

    async def final_ops(self, n: int, deadline: float) -> bool:
        """``n`` operations that must all be answered before ``deadline`` (virtual seconds):
        the liveness check after healing.  True when they were."""
        done = 0
        while done < n and self.loop.time() < deadline:
            if await self.one_op(must_answer=True):
                done += 1
            else:
                await asyncio.sleep(0.1)
        return done == n

    async def one_op(self, must_answer: bool = False) -> bool:
        """One operation against a random running member; True if it was answered."""
        up = [m for m in self.members if m.up]
        if not up:
            await asyncio.sleep(0.1)
            return False
        target = self.rng.choice(up)
        key = self.rng.choice(self.keys)
        kind = self.rng.choice(("put", "get", "cas"))
        call = self.loop.time()
        if kind == "put":
            value = self._value()
            self._pending[value] = Operation.put(key, value, call, None, self.index)
            resp = await self._call(
                target,
                lambda kv, ctx: kv.Put(pb.PutRequest(key=key.encode(), value=value.encode()), ctx),
            )
            del self._pending[value]
            self._record(Operation.put(key, value, call, self._ret(resp), self.index), target)
        elif kind == "get":
            resp = await self._call(
                target, lambda kv, ctx: kv.Range(pb.RangeRequest(key=key.encode()), ctx)
            )
            if isinstance(resp, pb.RangeResponse):
                got = resp.kvs[0].value.decode() if resp.kvs else None
                self._record(Operation.get(key, got, call, self.loop.time(), self.index), target)
        else:
            expected = self._expected(key)
            value = self._value()
            self._pending[value] = Operation.cas(key, expected, value, None, call, None, self.index)
            resp = await self._call(
                target, lambda kv, ctx: kv.Txn(cas_request(key.encode(), expected, value), ctx)
            )
            ok = resp.succeeded if isinstance(resp, pb.TxnResponse) else None
            del self._pending[value]
            self._record(
                Operation.cas(key, expected, value, ok, call, self._ret(resp), self.index), target
            )
        return resp is not None

    def _value(self) -> str:
        self._n += 1
        return f"c{self.index}-{self._n}"

    def _expected(self, key: str) -> str | None:
        """A plausible current value: the last one this client saw or wrote for ``key``."""
        for op in reversed(self.history):
            if op.key == key and op.ret is not None:
                if op.kind == "get":
                    return op.result if isinstance(op.result, str) else None
                if op.kind == "put" or (op.kind == "cas" and op.result):
                    return op.value
        return None

    def _ret(self, resp: Any) -> float | None:
        return self.loop.time() if resp is not None else None

    async def _call(
        self, target: SimMember, request: Callable[[Any, Any], Coroutine[Any, Any, Any]]
    ) -> Any:
        """The answer, or None (an error, or no answer in time)."""
        answer, outcome = await call_member(
            self.loop,
            target,
            lambda services, ctx: request(services.kv, ctx),
            self.attempt_timeout,
            f"client-{self.index}",
        )
        self.outcomes[outcome] += 1
        return answer


async def call_member(
    loop: VirtualLoop,
    target: SimMember,
    request: Callable[[Services, Any], Coroutine[Any, Any, Any]],
    timeout: float,
    peer: str,
) -> tuple[Any, str]:
    """Call one of ``target``'s services (``request(services, context)``) as a task of its
    process, as a gRPC call would run; (the answer or None, what happened in a few words).

    Never awaits the task itself (a crashed member's task never ends): after ``timeout`` it is
    cancelled, as a gRPC deadline would cancel it."""
    m, proc = target.member, target.process
    if m is None or proc is None:
        return None, "member down"
    task = proc.spawn(loop, request(build_services(m), GatewayContext((), {}, peer)))
    done, _ = await asyncio.wait([task], timeout=timeout)
    if not done:
        task.cancel()
        task.add_done_callback(consume_outcome)
        return None, "no answer"
    exc = task.exception()
    if exc is not None:
        return None, type(exc).__name__ + ": " + str(exc)[:60]
    return task.result(), "ok"


def consume_outcome(task: asyncio.Task[Any]) -> None:
    """An abandoned request's outcome: nobody waits for it any more."""
    if not task.cancelled():
        task.exception()
