"""Simulated clients and the history they record.

Owns: ``Client`` (one outstanding operation at a time: put, linearizable get,
cas; retries on another node; gives up after a deadline) and ``OpRecord`` (one
entry of the client-observed history).

Contracts:
- a request keeps its (client, request ID) across retries, so the state
  machine's session table applies it at most once;
- an operation that gets no answer before its deadline is recorded as pending
  (``ret is None``): it may or may not have taken effect;
- ``call``/``ret`` are stamps of the simulation's history clock, strictly
  increasing, so no two events of the history tie;
- after the heal phase begins every client runs a fixed number of final
  operations, which must all complete (liveness).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from tests.sim.linearizability import Operation

if TYPE_CHECKING:
    from tests.sim.cluster import Simulation

Kind = Literal["put", "get", "cas"]


@dataclass
class OpRecord:
    client: int
    req: int
    kind: Kind
    key: str
    value: str | None
    expected: str | None
    call: int
    start_time: int
    ret: int | None = None
    result: str | bool | None = None
    final: bool = False
    gave_up: bool = False
    untrusted: bool = False  # answered by a diverged state machine

    def to_operation(self, effect: int | None) -> Operation | None:
        """The checker's view; a pending write is bounded by its first apply, or dropped."""
        ret = None if self.untrusted else self.ret
        result = self.result
        if ret is None:
            if self.kind == "get" or effect is None:
                return None
            ret = effect
            result = None
        if self.kind == "put":
            assert self.value is not None
            return Operation.put(self.key, self.value, self.call, ret, self.client)
        if self.kind == "get":
            assert not isinstance(result, bool)
            return Operation.get(self.key, result, self.call, ret, self.client)
        assert self.value is not None and not isinstance(result, str)
        return Operation.cas(
            self.key, self.expected, self.value, result, self.call, ret, self.client
        )


class Client:
    def __init__(self, sim: Simulation, cid: int) -> None:
        self.sim = sim
        self.id = cid
        self.req = 0
        self.op: OpRecord | None = None
        self.attempt = 0
        self.deadline = 0
        self.final_done = 0
        self.seen: dict[str, str | None] = {}
        self.leader_hint = 0

    @property
    def finished(self) -> bool:
        return self.final_done >= self.sim.params.final_ops

    def start_next(self) -> None:
        sim = self.sim
        if self.op is not None or sim.done:
            return
        if sim.healing and self.finished:
            sim.check_final_done()
            return
        rng = sim.rng
        self.req += 1
        key = f"k{rng.randrange(sim.params.keys)}"
        r = rng.random()
        kind: Kind = "put" if r < 0.4 else "get" if r < 0.8 else "cas"
        value = None if kind == "get" else f"c{self.id}.{self.req}"
        expected = None
        if kind == "cas":
            if rng.random() < 0.7:
                expected = self.seen.get(key)
            elif sim.written:
                expected = sim.written[rng.randrange(len(sim.written))]
        self.op = OpRecord(
            self.id, self.req, kind, key, value, expected, sim.stamp(), sim.sched.now
        )
        self.op.final = sim.healing
        sim.history.append(self.op)
        if value is not None:
            sim.written.append(value)
        # A final operation never gives up: the heal phase's liveness deadline judges it.
        self.deadline = sim.heal_deadline if sim.healing else sim.sched.now + sim.params.op_deadline
        self.attempt = 0
        self._send()

    def _send(self) -> None:
        sim = self.sim
        op = self.op
        assert op is not None
        self.attempt += 1
        attempt = self.attempt
        target = self.leader_hint if self.leader_hint and sim.rng.random() < 0.8 else 0
        if not target or target not in sim.nodes or sim.nodes[target].removed:
            target = sim.pick_member()
        sim.client_request(target, self.id, op)
        sim.sched.after(sim.params.attempt_timeout, lambda: self._timeout(op.req, attempt))

    def _timeout(self, req: int, attempt: int) -> None:
        if self.op is None or self.op.req != req or self.attempt != attempt:
            return
        if self.sim.rng.random() < 0.5:
            self.leader_hint = 0
        self._retry_or_give_up()

    def _retry_or_give_up(self) -> None:
        assert self.op is not None
        if self.sim.sched.now >= self.deadline:
            self.op.gave_up = True
            self.sim.trace(f"giveup c{self.id} r{self.op.req}")
            self._done()
        else:
            self._send()

    def on_dropped(self, req: int) -> None:
        """The node refused the proposal (no leader yet): retry soon on another node."""
        if self.op is None or self.op.req != req:
            return
        self.attempt += 1
        attempt = self.attempt
        self.leader_hint = 0
        self.sim.sched.after(self.sim.params.retry_backoff, lambda: self._timeout(req, attempt))

    def on_reply(
        self, node: int, req: int, result: str | bool | None, trusted: bool = True
    ) -> None:
        op = self.op
        if op is None or op.req != req:
            return
        op.ret = self.sim.stamp()
        op.result = result
        op.untrusted = not trusted
        self.leader_hint = node
        if op.kind == "get":
            assert not isinstance(result, bool)
            self.seen[op.key] = result
        elif op.kind == "put" or result is True:
            self.seen[op.key] = op.value
        self.sim.trace(f"done c{self.id} r{req} {result!r}")
        self._done()

    def _done(self) -> None:
        op = self.op
        assert op is not None
        sim = self.sim
        if op.final:
            self.final_done += 1
        self.op = None
        sim.sched.after(sim.rng.randint(0, sim.params.think_max), self.start_next)
