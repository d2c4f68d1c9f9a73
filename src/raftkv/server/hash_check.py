"""State hash checks of a running member: at start-up, periodically and at every compaction.

Owns: the state hashes this member took at checkpoint entries (the last ``KEEP``), the peer
handlers that report them and that ask the leader for a checkpoint, the comparison of all
voters' hashes at one checkpoint, the start-up check (``--initial-corrupt-check``) and the
leader's periodic check (``--corrupt-check-time``), and their counters.

Contracts:
- a checkpoint is a committed entry every member applies at the same index: a ``HASH_CHECK``
  entry the leader proposes, or a compaction.  Right after its batch commits, every member fixes
  its whole replicated state (``Applier.state_hash_deferred``) and hashes it in a worker thread,
  so the hashes of members that applied the same entries the same way are equal, part by part;
- the truth is the hash a majority of ALL voters holds (``raftkv.guard.digest.judge``); each
  member holding another one is named, with the parts that differ.  With no majority the
  result names every member only when every voter reported (the cluster then refuses writes);
  while a voter is missing nobody is named and the check is undecided;
- the leader compares at its periodic checkpoints and at every compaction; a named member
  gets a CORRUPT alarm through Raft (``raise_alarm``) and, when a majority of voters holds the
  truth, the guard's verdict directly (``on_named``, wired to ``ConsistencyGuard.verdicts``:
  a member that cannot apply the alarm entry fences itself all the same);
- the start-up check runs before the member serves clients: it asks the leader for a
  checkpoint, waits to apply it and compares; a member outside the quorum's hash raises
  ``InitialCheckError`` ("<id> found data inconsistency with peers", as etcd words it) and is
  not started.  A member that cannot tell (no leader, peers unreachable) starts with a warning.
"""

from __future__ import annotations

import asyncio
import json
import logging
import struct
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from raftkv.errors import EtcdError
from raftkv.guard.digest import judge, tied_by_copies
from raftkv.guard.state_hash import StateHash
from raftkv.mvcc.errors import BackendCorruptionError
from raftkv.peer.transport import PeerRequestError
from raftkv.proto import rpc_pb2 as pb
from raftkv.server.applier import Applier
from raftkv.server.environment import MemberTransport
from raftkv.server.fencing import EVIDENCE_STATE_HASH

log = logging.getLogger("raftkv.hashcheck")

KEEP = 10  # checkpoints whose hashes a member keeps (etcd keeps 10 compaction hashes)
_INDEX = struct.Struct(">Q")
# What a check that could not run raises: unreachable peers, no leader, a proposal that failed.
CANNOT_CHECK = (PeerRequestError, TimeoutError, EtcdError)


class InitialCheckError(RuntimeError):
    """This member's state differs from the one a quorum of its peers holds."""


@dataclass
class HashCheckCounters:
    checks: int = 0
    mismatches: int = 0
    undecided: int = 0
    last_check_index: int = 0
    compaction_checks: int = 0
    named: dict[int, int] = field(default_factory=dict)  # member -> index it was named at


@dataclass(frozen=True)
class CheckResult:
    """One comparison at ``index``: who reported what, the truth, and who was named."""

    index: int
    reports: dict[int, StateHash]
    truth: bytes | None
    named: tuple[int, ...]
    missing: tuple[int, ...]  # voters that did not report
    # When only unconfirmed copies kept a majority from forming (``tied_by_copies``): each
    # such member -> whose state it is a copy of.  Nobody is named on such a result.
    tied_copies: dict[int, int] = field(default_factory=dict)

    @property
    def decided(self) -> bool:
        return self.truth is not None or not (self.missing or self.tied_copies)


class StateHashChecker:
    def __init__(
        self,
        *,
        member_id: int,
        applier: Applier,
        transport: MemberTransport,
        voters: Callable[[], tuple[int, ...]],
        is_leader: Callable[[], bool],
        leader: Callable[[], int],
        propose_checkpoint: Callable[[], Awaitable[int]],
        wait_applied: Callable[[int], Awaitable[None]],
        raise_alarm: Callable[[int], Awaitable[None]],
        period: float,
        request_timeout: float,
    ) -> None:
        self.member_id = member_id
        self.applier = applier
        self.transport = transport
        self.voters = voters
        # Learners are compared too (a joining member is named at its first comparison);
        # only voters decide what the truth is.
        self.learners: Callable[[], tuple[int, ...]] = lambda: ()
        # Told of each member a majority names: (member, checkpoint index, first diverging
        # index or 0, evidence, reason); the member wires it to the guard's verdicts.
        self.on_named: Callable[[int, int, int, str, str], None] = lambda *_named: None
        self.is_leader = is_leader
        self.leader = leader
        self.propose_checkpoint = propose_checkpoint
        self.wait_applied = wait_applied
        self.raise_alarm = raise_alarm
        self.period = period
        self.request_timeout = request_timeout
        self.counters = HashCheckCounters()
        self.compaction_indexes: list[int] = []  # the last KEEP compaction checkpoints
        self._hashes: OrderedDict[int, asyncio.Future[StateHash]] = OrderedDict()
        self._background: set[asyncio.Task[None]] = set()
        applier.on_checkpoint = self._on_checkpoint
        transport.register_handler("state-hash-at", self._handle_hash_at)
        transport.register_handler("hash-checkpoint", self._handle_checkpoint)

    # -- taking hashes -------------------------------------------------------------------

    def _on_checkpoint(self, index: int, compaction: bool) -> None:
        """Called by the applier right after a checkpoint entry's batch committed."""
        compute = self.applier.state_hash_deferred()
        fut = asyncio.ensure_future(asyncio.to_thread(compute))
        fut.add_done_callback(_consume_exception)
        self._hashes[index] = fut
        while len(self._hashes) > KEEP:
            self._hashes.popitem(last=False)
        if compaction:
            self.compaction_indexes = [*self.compaction_indexes, index][-KEEP:]
            if self.is_leader():
                self._spawn(self._compare_and_alarm(index, "compaction"))

    async def local_hash(self, index: int) -> StateHash | None:
        """This member's state hash at checkpoint ``index``, None when it does not keep one.

        Raises ``BackendCorruptionError`` when its own backend failed its checksum on the way.
        """
        fut = self._hashes.get(index)
        if fut is None:
            return None
        return await asyncio.shield(fut)

    def kept_indexes(self) -> list[int]:
        return list(self._hashes)

    # -- answering peers -----------------------------------------------------------------

    async def _handle_hash_at(self, peer: int, payload: bytes) -> bytes:
        (index,) = _INDEX.unpack(payload)
        try:
            async with asyncio.timeout(self.request_timeout):
                await self.wait_applied(index)
        except TimeoutError:
            return b""
        try:
            sh = await self.local_hash(index)
        except BackendCorruptionError as exc:
            return json.dumps({"error": str(exc)}).encode()
        if sh is None:
            return b""
        answer: dict[str, Any] = dict(sh.to_dict())
        origin = self._origin_at(index)
        if origin != self.member_id:
            answer["copy_of"] = origin
        return json.dumps(answer).encode()

    def _origin_at(self, index: int) -> int:
        """Whose independent applies this member's state hash at ``index`` stands for: the
        origin of the unconfirmed copy it installed at or before ``index``, else itself
        (``raftkv.guard.vouch``; hashes taken before the copy are its own)."""
        vouch = self.applier.copy_vouch
        return vouch.origin if vouch is not None and vouch.index <= index else self.member_id

    async def _handle_checkpoint(self, peer: int, payload: bytes) -> bytes:
        if not self.is_leader():
            return b""
        return _INDEX.pack(await self.propose_checkpoint())

    # -- comparing -----------------------------------------------------------------------

    async def checkpoint(self) -> int:
        """Have a checkpoint entry committed (through the leader) and return its index."""
        if self.is_leader():
            return await self.propose_checkpoint()
        leader = self.leader()
        if not leader:
            raise PeerRequestError("no leader to ask for a checkpoint")
        raw = await self.transport.request(leader, "hash-checkpoint", b"", self.request_timeout * 2)
        if not raw:
            raise PeerRequestError(f"member {leader:x} is no longer the leader")
        return int(_INDEX.unpack(raw)[0])

    async def _peer_hash(self, peer: int, index: int) -> tuple[StateHash, int] | None:
        """``peer``'s state hash at ``index`` and its origin there, None when it has none."""
        try:
            raw = await self.transport.request(
                peer, "state-hash-at", _INDEX.pack(index), self.request_timeout * 2
            )
        except PeerRequestError as exc:
            log.warning("state hash of member %x at index %d unavailable: %s", peer, index, exc)
            return None
        if not raw:
            return None
        obj = json.loads(raw)
        origin = int(obj.get("copy_of", peer))
        if "error" in obj:
            log.error("member %x could not hash its state: %s", peer, obj["error"])
            return _unreadable(index), origin
        return StateHash.from_dict(obj), origin

    async def compare(self, index: int) -> CheckResult:
        """Gather every member's state hash at checkpoint ``index`` (learners' too) and judge
        them by the voters' majority."""
        voters = self.voters()
        async with asyncio.timeout(self.request_timeout * 4):
            await self.wait_applied(index)
        try:
            own = await self.local_hash(index)
        except BackendCorruptionError as exc:
            log.error("this member could not hash its own state: %s", exc)
            own = _unreadable(index)
        peers = [p for p in (*voters, *self.learners()) if p != self.member_id]
        answers = await asyncio.gather(*(self._peer_hash(p, index) for p in peers))
        reports = {m: a[0] for m, a in zip(peers, answers, strict=True) if a is not None}
        origins = {m: a[1] for m, a in zip(peers, answers, strict=True) if a is not None}
        if own is not None:
            reports[self.member_id] = own
            origins[self.member_id] = self._origin_at(index)
        missing = tuple(sorted(set(voters) - set(reports)))
        # A member already named is no witness (its state differs until it is repaired).
        alarmed = {m for m, alarm in self.applier.alarms if alarm == pb.CORRUPT}
        values = {m: sh.value for m, sh in reports.items() if m not in alarmed}
        # Unconfirmed copies are their origin's voice only in a dispute (``tied_by_copies``);
        # where every witness agrees there is nothing they could outvote.
        unanimous = len(set(values.values())) == 1
        truth, outliers = judge(values, voters, None if unanimous else origins)
        named: tuple[int, ...] = ()
        tied = truth is None and not missing and tied_by_copies(values, voters, origins)
        if truth is not None:
            named = tuple(sorted(m for m, sh in reports.items() if sh.value != truth))
        elif not (missing or tied):
            named = tuple(outliers)
        self.counters.checks += 1
        self.counters.last_check_index = index
        copies = {m: o for m, o in origins.items() if o != m}
        result = CheckResult(index, reports, truth, named, missing, copies if tied else {})
        self._log(result)
        return result

    def _log(self, result: CheckResult) -> None:
        if result.tied_copies:
            self.counters.undecided += 1
            log.error(
                "state hashes at raft index %d disagree and no majority of independent voters "
                "holds one (%s); nobody named: compare the members' data with `raftkv check "
                "data` and repair the diverged one",
                result.index,
                "; ".join(
                    f"{m:x} holds an unconfirmed copy of {o:x}'s state"
                    for m, o in sorted(result.tied_copies.items())
                ),
            )
            return
        if not result.decided and len({sh.value for sh in result.reports.values()}) > 1:
            self.counters.undecided += 1
            log.warning(
                "state hashes at raft index %d disagree and members %s did not report: "
                "undecided, nobody named",
                result.index,
                ",".join(f"{m:x}" for m in result.missing),
            )
            return
        if not result.named:
            return
        self.counters.mismatches += 1
        truth = next((sh for sh in result.reports.values() if sh.value == result.truth), None)
        for member in result.named:
            sh = result.reports[member]
            parts = ", ".join(truth.diff(sh)) if truth is not None else "no quorum agrees"
            log.error(
                "state hash mismatch at raft index %d (revision %d): member %x has %s, "
                "expected %s (%s differ)",
                result.index,
                sh.revision,
                member,
                sh.value.hex(),
                result.truth.hex() if result.truth is not None else "none: no quorum",
                parts,
            )

    async def _compare_and_alarm(self, index: int, reason: str) -> None:
        try:
            result = await self.compare(index)
        except CANNOT_CHECK as exc:
            log.warning("%s state hash check at index %d skipped: %s", reason, index, exc)
            return
        if reason == "compaction":
            self.counters.compaction_checks += 1
        truth = next((sh for sh in result.reports.values() if sh.value == result.truth), None)
        for member in result.named:
            self.counters.named.setdefault(member, index)
            if truth is not None:  # first: the member may not be able to apply the alarm
                parts = ", ".join(truth.diff(result.reports[member])) or "unreadable state"
                self.on_named(member, index, 0, EVIDENCE_STATE_HASH, f"{parts} differ")
            await self.raise_alarm(member)

    async def run_periodic(self) -> None:
        """The leader's check every ``period`` seconds (``--corrupt-check-time``)."""
        log.info("state hash check every %gs enabled", self.period)
        while True:
            await asyncio.sleep(self.period)
            if not self.is_leader():
                continue
            try:
                index = await self.checkpoint()
            except CANNOT_CHECK as exc:
                log.warning("periodic state hash check skipped: %s", exc)
                continue
            await self._compare_and_alarm(index, "periodic")

    # -- start-up ------------------------------------------------------------------------

    async def initial_check(self, leader_wait: float) -> None:
        """Compare this member's state with its peers' before it serves clients."""
        voters = self.voters()
        if voters == (self.member_id,) or not voters:
            log.info("initial corruption check skipped: this member is the only voter")
            return
        try:
            async with asyncio.timeout(leader_wait):
                while not self.leader():
                    await asyncio.sleep(0.05)
                index = await self.checkpoint()
        except CANNOT_CHECK as exc:
            log.warning("initial corruption check could not run (%s); starting unchecked", exc)
            return
        result = await self.compare(index)
        mine = result.reports.get(self.member_id)
        if self.member_id in result.named and result.truth is not None and mine is not None:
            truth = next(sh for sh in result.reports.values() if sh.value == result.truth)
            parts = ", ".join(truth.diff(mine)) or "unreadable state"
            raise InitialCheckError(
                f"{self.member_id:016x} found data inconsistency with peers: at raft index "
                f"{index} its state hash is {mine.value.hex()}, a quorum holds "
                f"{result.truth.hex()} ({parts} differ)"
            )
        if mine is not None and result.truth != mine.value:
            # No quorum holds this member's state and a peer disagrees with it: as etcd does,
            # the starting member is the one that does not serve.
            others = [m for m, sh in result.reports.items() if sh.value != mine.value]
            if others:
                parts = ", ".join(result.reports[others[0]].diff(mine)) or "unreadable state"
                raise InitialCheckError(
                    f"{self.member_id:016x} found data inconsistency with peers: at raft index "
                    f"{index} member {others[0]:x} holds another state ({parts} differ) and no "
                    "quorum holds this member's"
                )
        if not result.decided:
            log.warning("initial corruption check at index %d could not decide", index)
            return
        log.info(
            "initial corruption check passed at raft index %d; no corruption (%d members agree)",
            index,
            sum(1 for sh in result.reports.values() if sh.value == result.truth),
        )

    def _spawn(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)


def _unreadable(index: int) -> StateHash:
    """Stands for a member whose backend failed its checksum: equal to no real hash."""
    return StateHash(index, -1, -1, 0, b"unreadable", b"", b"")


def _consume_exception(fut: asyncio.Future[StateHash]) -> None:
    if not fut.cancelled() and fut.exception() is not None:
        log.error("state hash computation failed: %s", fut.exception())
