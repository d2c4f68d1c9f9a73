"""Linearizability checker for key-value histories (Wing-Gong search, porcupine style).

Owns: the ``Operation`` record of a client history, the register-map model
(``put``/``get``/``cas`` per key) and ``check_history``.

Contracts:
- a history is partitioned by key (the register map is P-compositional: a
  history is linearizable iff every per-key sub-history is);
- ``Operation.ret is None`` means the client never saw a response: the operation
  may have taken effect at any point after its call, or never.  A pending ``get``
  therefore constrains nothing and is ignored; a pending ``cas`` has an unknown
  outcome (``result is None``);
- equal timestamps are treated as concurrent (a call at time t overlaps a return
  at time t), which can only make the checker more permissive, never report a
  false violation;
- the search memoizes (set of linearized operations, register value), so each
  distinct configuration is explored once;
- two reductions keep histories with many pending writes tractable, both exact: a
  value no completed read returned and no compare-and-swap compared against is
  indistinguishable from any other such value, so all of them are one register
  state; and pending operations of the same effect (same kind, same compared and
  written value after that merge) are interchangeable, so they are linearized
  in call order only (any linearization can be rearranged so);
- a failure is explained with a
  1-minimal failing sub-history of the offending key (greedy removal that keeps
  every observed value's writer).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

OpKind = Literal["put", "get", "cas"]
Value = str | None
"""A register value; ``None`` means the key is absent."""


@dataclass(frozen=True, slots=True)
class Operation:
    """One client operation: input, output and its real-time interval.

    - ``put``: writes ``value``; no output.
    - ``get``: ``result`` is the value read (``None`` when absent).
    - ``cas``: if the key holds ``expected`` write ``value``; ``result`` is the
      boolean outcome, or ``None`` when unknown (pending).
    """

    kind: OpKind
    key: str
    call: float
    ret: float | None
    value: Value = None
    expected: Value = None
    result: Value | bool = None
    client: int = 0

    @staticmethod
    def put(key: str, value: str, call: float, ret: float | None, client: int = 0) -> Operation:
        return Operation("put", key, call, ret, value=value, client=client)

    @staticmethod
    def get(key: str, result: Value, call: float, ret: float | None, client: int = 0) -> Operation:
        return Operation("get", key, call, ret, result=result, client=client)

    @staticmethod
    def cas(
        key: str,
        expected: Value,
        new: str,
        result: bool | None,
        call: float,
        ret: float | None,
        client: int = 0,
    ) -> Operation:
        return Operation(
            "cas", key, call, ret, value=new, expected=expected, result=result, client=client
        )

    def describe(self) -> str:
        when = f"[{self.call:g}, {'never' if self.ret is None else f'{self.ret:g}'}]"
        if self.kind == "put":
            text = f"put({self.key}, {self.value!r})"
        elif self.kind == "get":
            out = "?" if self.ret is None else repr(self.result)
            text = f"get({self.key}) -> {out}"
        else:
            out = "?" if self.result is None else str(self.result)
            text = f"cas({self.key}, {self.expected!r} => {self.value!r}) -> {out}"
        return f"client {self.client} {text} {when}"


@dataclass(frozen=True, slots=True)
class CheckResult:
    ok: bool
    key: str | None = None
    explanation: str = ""
    culprits: tuple[Operation, ...] = field(default=())


_UNREAD = "\x00unread"
"""The register state standing for every written value nothing reads or compares against."""


def _step(state: Value, op: Operation, value: Value) -> tuple[bool, Value]:
    """Apply ``op`` (writing ``value``: its own, or ``_UNREAD``) to a register holding
    ``state``; (consistent with its output, new state)."""
    if op.kind == "put":
        return True, value
    if op.kind == "get":
        return state == op.result, state
    if op.result is None:
        return True, value if state == op.expected else state
    if op.result:
        return state == op.expected, value
    return state != op.expected, state


def _distinguishable(ops: Sequence[Operation]) -> set[Value]:
    """Values some operation's output depends on: completed reads' results, and every
    compare-and-swap's expected value."""
    seen: set[Value] = {None}
    for op in ops:
        if op.kind == "get" and op.ret is not None:
            seen.add(op.result)  # type: ignore[arg-type]
        elif op.kind == "cas":
            seen.add(op.expected)
    return seen


def _pending_predecessors(ops: Sequence[Operation], values: list[Value]) -> list[int]:
    """For each pending operation, the pending operation of the same effect called just
    before it (-1: none, or not pending); it must be linearized first."""
    pred = [-1] * len(ops)
    last: dict[tuple[str, Value, Value], int] = {}
    for i in sorted(range(len(ops)), key=lambda i: (ops[i].call, i)):
        op = ops[i]
        if op.ret is not None:
            continue
        effect = (op.kind, op.expected if op.kind == "cas" else None, values[i])
        pred[i] = last.get(effect, -1)
        last[effect] = i
    return pred


class _Event:
    __slots__ = ("is_call", "next", "op", "opid", "prev")

    def __init__(self, op: Operation | None, opid: int, is_call: bool) -> None:
        self.op = op
        self.opid = opid
        self.is_call = is_call
        self.prev: _Event | None = None
        self.next: _Event | None = None


def _relevant(ops: Sequence[Operation]) -> list[Operation]:
    """Drop operations that cannot constrain the search (pending gets, late pending ops)."""
    kept = [op for op in ops if not (op.ret is None and op.kind == "get")]
    last_ret = max((op.ret for op in kept if op.ret is not None), default=-math.inf)
    return [op for op in kept if op.ret is not None or op.call <= last_ret]


@dataclass(slots=True)
class _Outcome:
    ok: bool
    blocked: Operation | None = None
    states: set[Value] = field(default_factory=set)


def _search(ops: Sequence[Operation]) -> _Outcome:
    """Wing-Gong search over one key's history; on failure name the op that blocked deepest."""
    events: list[tuple[float, int, int, _Event]] = []
    calls: list[_Event] = []
    completed = 0
    for i, op in enumerate(ops):
        call = _Event(op, i, True)
        calls.append(call)
        events.append((op.call, 0, i, call))
        if op.ret is not None:
            completed += 1
            events.append((op.ret, 1, i, _Event(op, i, False)))
    events.sort(key=lambda e: (e[0], e[1], e[2]))
    head = _Event(None, -1, False)
    match: list[_Event | None] = [None] * len(ops)
    prev = head
    for _, _, i, ev in events:
        prev.next = ev
        ev.prev = prev
        prev = ev
        if not ev.is_call:
            match[i] = ev

    def lift(ev: _Event) -> None:
        for node in (ev, match[ev.opid]):
            if node is not None:
                assert node.prev is not None
                node.prev.next = node.next
                if node.next is not None:
                    node.next.prev = node.prev

    def unlift(ev: _Event) -> None:
        for node in (match[ev.opid], ev):
            if node is not None:
                assert node.prev is not None
                node.prev.next = node
                if node.next is not None:
                    node.next.prev = node

    seen = _distinguishable(ops)
    values = [op.value if op.value in seen else _UNREAD for op in ops]
    pred = _pending_predecessors(ops, values)
    state: Value = None
    linearized = 0
    done = 0
    cache: set[tuple[int, Value]] = set()
    # Frames: (call event, state before it, forced).  A completed read-only op
    # (get, failed cas) that fits the current state is linearized at once and
    # "forced": any linearization from here can be rearranged to take it first
    # (it changes nothing and every op that must precede it is already placed),
    # so when its subtree fails the configuration below it fails too.
    stack: list[tuple[_Event, Value, bool]] = []
    best = -1
    outcome = _Outcome(False)
    entry = head.next
    while done < completed:
        if entry is not None and entry.is_call:
            cur = entry.op
            assert cur is not None
            first = pred[entry.opid]
            if first >= 0 and not linearized >> first & 1:
                entry = entry.next  # a pending op of the same effect, called earlier, goes first
                continue
            fits, new_state = _step(state, cur, values[entry.opid])
            if fits:
                forced = cur.ret is not None and (cur.kind == "get" or cur.result is False)
                bits = linearized | (1 << entry.opid)
                if (bits, new_state) not in cache:
                    cache.add((bits, new_state))
                    stack.append((entry, state, forced))
                    state = new_state
                    linearized = bits
                    lift(entry)
                    if cur.ret is not None:
                        done += 1
                    entry = head.next
                    continue
                if not forced:
                    entry = entry.next
                    continue
                entry = None  # its subtree already failed: so does this configuration
            else:
                entry = entry.next
                continue
        # A return of an unlinearized op (or a dead end): backtrack.
        if entry is not None and done >= best:
            if done > best:
                best = done
                outcome.states = set()
            outcome.blocked = entry.op
            if len(outcome.states) < 8:
                outcome.states.add(state)
        while True:
            if not stack:
                return outcome
            entry, state, forced = stack.pop()
            linearized &= ~(1 << entry.opid)
            unlift(entry)
            assert entry.op is not None
            if entry.op.ret is not None:
                done -= 1
            if not forced:
                break
        entry = entry.next
    return _Outcome(True)


def _observed_values(ops: Sequence[Operation]) -> set[Value]:
    seen: set[Value] = set()
    for op in ops:
        if op.kind == "get" and op.ret is not None:
            seen.add(op.result)  # type: ignore[arg-type]
        elif op.kind == "cas" and op.result is True:
            seen.add(op.expected)
    return seen


def _minimize(ops: list[Operation], budget: int) -> list[Operation]:
    """A 1-minimal-ish failing subset (chunked greedy removal), keeping observed values' writers."""
    current = list(ops)
    chunk = max(len(current) // 2, 1)
    while budget > 0:
        i = 0
        while i < len(current) and budget > 0:
            candidate = current[:i] + current[i + chunk :]
            written = {op.value for op in current[i : i + chunk] if op.kind != "get"}
            if written.isdisjoint(_observed_values(candidate)):
                budget -= 1
                if not _search(_relevant(candidate)).ok:
                    current = candidate
                    continue
            i += chunk
        if chunk == 1:
            break
        chunk //= 2
    return current


def check_key(key: str, ops: Sequence[Operation], minimize_budget: int = 2000) -> CheckResult:
    """Check one key's sub-history."""
    relevant = _relevant(ops)
    outcome = _search(relevant)
    if outcome.ok:
        return CheckResult(True, key)
    culprits = _minimize(sorted(relevant, key=lambda o: (o.call, o.client)), minimize_budget)
    small = _search(_relevant(culprits))
    blocked = small.blocked or outcome.blocked
    states = small.states or outcome.states
    lines = [f"key {key!r}: not linearizable ({len(culprits)} of {len(ops)} ops suffice)"]
    if blocked is not None:
        values = ", ".join(sorted(repr(s) for s in states))
        lines.append(f"  cannot place: {blocked.describe()}; register could hold only {{{values}}}")
    lines.extend(f"  {op.describe()}" for op in sorted(culprits, key=lambda o: (o.call, o.client)))
    return CheckResult(False, key, "\n".join(lines), tuple(culprits))


def check_history(ops: Sequence[Operation]) -> CheckResult:
    """Return ok, or the first (by key order) key whose sub-history is not linearizable."""
    by_key: dict[str, list[Operation]] = {}
    for op in ops:
        by_key.setdefault(op.key, []).append(op)
    for key in sorted(by_key):
        result = check_key(key, by_key[key])
        if not result.ok:
            return result
    return CheckResult(True)
