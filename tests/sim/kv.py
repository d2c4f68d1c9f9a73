"""The simulated replicated state machine: a small key-value map with client sessions.

Owns: the command encoding carried in Raft entry data, ``KVStateMachine``
(apply, digest, apply digest chain, snapshot encode/decode) and the apply faults a
member's state machine can be made to suffer (``FaultKind``).

Contracts:
- apply is deterministic: the same commands in the same order give byte-identical
  state and digests on every node;
- each client issues requests with increasing request IDs; the session table
  keeps, per client, the last applied request and its result, so a duplicated
  proposal (network duplication, client retry on another node) takes effect at
  most once and a retry of the last request gets the cached result; a request
  older than the client's last is ignored (the client has moved on);
- keys carry etcd's revisions: a fresh write bumps the store revision; each key
  keeps (create revision, mod revision, version);
- membership as the state machine stores it (``members``: ID -> learner?) is
  separate from Raft's ``conf_state`` (which the node owns), so a dropped
  membership effect leaves Raft intact and only the stored record wrong;
- the digest covers data, revisions, sessions and membership, so two nodes with
  the same digest at the same applied index have identical state machines;
- every applied entry (commands, stale ones, no-ops, conf changes) folds its
  effects into ``chain`` (``raftkv.guard.digest.ApplyDigest``): a put per key
  written (as stored), the session record of the request (its cas outcome),
  member_set / member_remove per conf change; the chain head travels in the
  snapshot data, so a restart or a snapshot install continues the same chain.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Literal

from raftkv.guard.digest import GENESIS, ApplyDigest
from raftkv.raft.codec import decode_conf_change
from raftkv.raft.types import ConfChange, ConfChangeType, ConfState, Entry, EntryType

CmdKind = Literal["put", "cas"]
Result = bool | None
"""Outcome of an applied command: cas -> bool, put -> None."""

FaultKind = Literal["skip", "corrupt", "twice", "drop-conf"]
"""An apply fault: skip one entry's effects, store a changed value for one write, apply one
command twice (the second time past the session check), drop one conf change's effect."""

FAULT_KINDS: tuple[FaultKind, ...] = ("skip", "corrupt", "twice", "drop-conf")

SESSION_PREFIX = b"\x00session/"
"""Session records are folded into the digest as puts of reserved keys (no client key has it)."""

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


@dataclass(frozen=True, slots=True)
class Outcome:
    """What applying one entry did: the command's result or the conf change to hand to Raft;
    ``hit`` is True when the fault passed in took effect on this entry."""

    applied: Applied | None = None
    conf_change: ConfChange | None = None
    hit: bool = False


class KVStateMachine:
    """Key-value map + revisions + session table + membership, as of ``applied``."""

    __slots__ = (
        "applied",
        "chain",
        "conf_state",
        "data",
        "members",
        "meta",
        "revision",
        "sessions",
    )

    def __init__(self, applied: int = 0, conf_state: ConfState | None = None) -> None:
        self.data: dict[str, str] = {}
        self.meta: dict[str, tuple[int, int, int]] = {}  # key -> (create rev, mod rev, version)
        self.revision = 1
        self.sessions: dict[int, tuple[int, Result]] = {}
        self.applied = applied
        self.conf_state = conf_state if conf_state is not None else ConfState()
        self.members: dict[int, bool] = {v: False for v in self.conf_state.voters}
        self.members.update({v: True for v in self.conf_state.learners})
        self.chain = ApplyDigest(applied, GENESIS)

    def get(self, key: str) -> str | None:
        return self.data.get(key)

    # -- applying ---------------------------------------------------------------------

    def apply_entry(self, e: Entry, fault: FaultKind | None = None) -> Outcome:
        """Apply committed entry ``e`` (must be ``applied + 1``), folding it into the chain.

        ``fault`` (if any) takes effect only on an entry it can change: skip/twice on a fresh
        command, corrupt on a fresh command that writes, drop-conf on a conf change.
        """
        if e.type == EntryType.CONF_CHANGE:
            cc = decode_conf_change(e.data) if e.data else None
            self.advance_to(e.index)
            hit = cc is not None and fault == "drop-conf"
            if cc is not None and not hit:
                self._member_effect(cc)
            self._finish(e.index)
            return Outcome(conf_change=cc, hit=hit)
        if not e.data:
            self.advance_to(e.index)
            self._finish(e.index)
            return Outcome()
        cmd = Command.decode(e.data)
        fault = fault if fault in ("skip", "corrupt", "twice") else None
        applied, hit = self._apply_command(e.index, cmd, fault)
        self._finish(e.index)
        return Outcome(applied=applied, hit=hit)

    def apply(self, index: int, cmd: Command) -> Applied:
        """Apply the command of entry ``index`` (must be ``applied + 1``)."""
        applied, _ = self._apply_command(index, cmd, None)
        self._finish(index)
        return applied

    def _apply_command(
        self, index: int, cmd: Command, fault: FaultKind | None
    ) -> tuple[Applied, bool]:
        self.advance_to(index)
        last = self.sessions.get(cmd.client)
        if last is not None and cmd.req <= last[0]:
            if cmd.req == last[0]:
                return Applied(cmd, last[1], fresh=False, answer=True), False
            return Applied(cmd, None, fresh=False, answer=False), False
        if fault == "skip":
            return Applied(cmd, None, fresh=False, answer=False), True
        if fault == "corrupt" and not self._writes(cmd):
            fault = None
        result = self._execute(index, cmd, fault == "corrupt")
        if fault == "twice":
            result = self._execute(index, cmd, False)
        return Applied(cmd, result, fresh=True, answer=True), fault is not None

    def _writes(self, cmd: Command) -> bool:
        return cmd.kind == "put" or self.data.get(cmd.key) == cmd.expected

    def _execute(self, index: int, cmd: Command, corrupt: bool) -> Result:
        result: Result = None
        if cmd.kind == "cas":
            result = self.data.get(cmd.key) == cmd.expected
        if result is not False:
            value = cmd.value + "\u0000corrupt" if corrupt else cmd.value
            self.revision += 1
            create, _, version = self.meta.get(cmd.key, (self.revision, 0, 0))
            self.data[cmd.key] = value
            self.meta[cmd.key] = (create, self.revision, version + 1)
            self.chain.recorder.put(
                cmd.key.encode(), value.encode(), 0, self.revision, create, version + 1
            )
        self.sessions[cmd.client] = (cmd.req, result)
        self.chain.recorder.put(
            SESSION_PREFIX + str(cmd.client).encode(), repr(result).encode(), 0, index, 0, cmd.req
        )
        return result

    def _member_effect(self, cc: ConfChange) -> None:
        recorder = self.chain.recorder
        if cc.type == ConfChangeType.REMOVE_NODE:
            self.members.pop(cc.node_id, None)
            recorder.member_remove(cc.node_id)
            return
        learner = cc.type == ConfChangeType.ADD_LEARNER_NODE or (
            cc.type == ConfChangeType.UPDATE_NODE and self.members.get(cc.node_id, False)
        )
        self.members[cc.node_id] = learner
        record = json.dumps({"id": cc.node_id, "learner": learner}, sort_keys=True)
        recorder.member_set(cc.node_id, record.encode())

    def _finish(self, index: int) -> None:
        self.chain.recorder.finish(index)
        self.chain.commit()

    def advance_to(self, index: int) -> None:
        """Account for entry ``index`` (no-op, conf change or command)."""
        assert index == self.applied + 1, f"apply out of order: {index} after {self.applied}"
        self.applied = index

    # -- digests and snapshots ----------------------------------------------------------

    def digest(self) -> bytes:
        payload = repr(
            (
                sorted(self.data.items()),
                sorted(self.meta.items()),
                self.revision,
                sorted(self.sessions.items()),
                sorted(self.members.items()),
                self.conf_state.voters,
                self.conf_state.learners,
            )
        )
        return hashlib.blake2b(payload.encode(), digest_size=12).digest()

    def encode(self) -> bytes:
        """Snapshot data (with the chain head); Raft's membership travels in the metadata."""
        head_index, head = self.chain.latest()
        assert head_index == self.applied, (head_index, self.applied)
        body = {
            "data": sorted([k, v, *self.meta[k]] for k, v in self.data.items()),
            "revision": self.revision,
            "sessions": sorted([c, r, res] for c, (r, res) in self.sessions.items()),
            "members": sorted([m, learner] for m, learner in self.members.items()),
            "chain": head.hex(),
        }
        return json.dumps(body, separators=(",", ":")).encode()

    @staticmethod
    def decode(data: bytes, applied: int, conf_state: ConfState) -> KVStateMachine:
        """The state machine of a snapshot; empty data is the boot state (members from Raft)."""
        sm = KVStateMachine(applied, conf_state)
        if data:
            body = json.loads(data)
            sm.data = {k: v for k, v, *_ in body["data"]}
            sm.meta = {k: (c, m, ver) for k, _, c, m, ver in body["data"]}
            sm.revision = body["revision"]
            sm.sessions = {c: (r, res) for c, r, res in body["sessions"]}
            sm.members = {m: learner for m, learner in body["members"]}
            sm.chain.reset(applied, bytes.fromhex(body["chain"]))
        return sm
