"""The simulated replicated state machine: a small key-value map with client sessions.

Owns: the command encoding carried in Raft entry data, ``KVStateMachine``
(apply, digest, snapshot encode/decode).

Contracts:
- apply is deterministic: the same commands in the same order give byte-identical
  state and digests on every node;
- each client issues requests with increasing request IDs; the session table
  keeps, per client, the last applied request and its result, so a duplicated
  proposal (network duplication, client retry on another node) takes effect at
  most once and a retry of the last request gets the cached result; a request
  older than the client's last is ignored (the client has moved on);
- the digest covers data, sessions and membership, so two nodes with the same
  digest at the same applied index have identical state machines.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Literal

from raftkv.raft.types import ConfState

CmdKind = Literal["put", "cas"]
Result = bool | None
"""Outcome of an applied command: cas -> bool, put -> None."""

_SEP = "\x1f"
_ABSENT = "\x1e"


@dataclass(frozen=True, slots=True)
class Command:
    kind: CmdKind
    client: int
    req: int
    key: str
    value: str
    expected: str | None = None

    def encode(self) -> bytes:
        exp = _ABSENT if self.expected is None else self.expected
        fields = (self.kind, str(self.client), str(self.req), self.key, self.value, exp)
        return _SEP.join(fields).encode()

    @staticmethod
    def decode(data: bytes) -> Command:
        kind, client, req, key, value, exp = data.decode().split(_SEP)
        assert kind in ("put", "cas"), kind
        expected = None if exp == _ABSENT else exp
        return Command(kind, int(client), int(req), key, value, expected)  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class Applied:
    """What applying one command did: ``fresh`` is False for a duplicate or stale request."""

    command: Command
    result: Result
    fresh: bool
    answer: bool  # whether a waiting client may be answered with ``result``


class KVStateMachine:
    """Key-value map + session table + membership, as of ``applied``."""

    __slots__ = ("applied", "conf_state", "data", "sessions")

    def __init__(self, applied: int = 0, conf_state: ConfState | None = None) -> None:
        self.data: dict[str, str] = {}
        self.sessions: dict[int, tuple[int, Result]] = {}
        self.applied = applied
        self.conf_state = conf_state if conf_state is not None else ConfState()

    def get(self, key: str) -> str | None:
        return self.data.get(key)

    def apply(self, index: int, cmd: Command) -> Applied:
        """Apply the command of entry ``index`` (must be ``applied + 1``)."""
        self.advance_to(index)
        last = self.sessions.get(cmd.client)
        if last is not None and cmd.req <= last[0]:
            if cmd.req == last[0]:
                return Applied(cmd, last[1], fresh=False, answer=True)
            return Applied(cmd, None, fresh=False, answer=False)
        result: Result
        if cmd.kind == "put":
            self.data[cmd.key] = cmd.value
            result = None
        else:
            result = self.data.get(cmd.key) == cmd.expected
            if result:
                self.data[cmd.key] = cmd.value
        self.sessions[cmd.client] = (cmd.req, result)
        return Applied(cmd, result, fresh=True, answer=True)

    def advance_to(self, index: int) -> None:
        """Account for entry ``index`` (no-op, conf change or command)."""
        assert index == self.applied + 1, f"apply out of order: {index} after {self.applied}"
        self.applied = index

    def digest(self) -> bytes:
        payload = repr(
            (
                sorted(self.data.items()),
                sorted(self.sessions.items()),
                self.conf_state.voters,
                self.conf_state.learners,
            )
        )
        return hashlib.blake2b(payload.encode(), digest_size=12).digest()

    def encode(self) -> bytes:
        """Snapshot data; membership travels in the snapshot metadata."""
        body = {
            "data": sorted(self.data.items()),
            "sessions": sorted([c, r, res] for c, (r, res) in self.sessions.items()),
        }
        return json.dumps(body, separators=(",", ":")).encode()

    @staticmethod
    def decode(data: bytes, applied: int, conf_state: ConfState) -> KVStateMachine:
        sm = KVStateMachine(applied, conf_state)
        if data:
            body = json.loads(data)
            sm.data = {k: v for k, v in body["data"]}
            sm.sessions = {c: (r, res) for c, r, res in body["sessions"]}
        return sm
