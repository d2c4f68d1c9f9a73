"""The consistency guard of a running member: apply digests compared across the cluster.

Owns: the peer handlers that report this member's apply digests, the leader's periodic
comparison, locating the first diverging Raft index, naming the diverged members by quorum and
raising the CORRUPT alarm for them through Raft, and the guard's counters.

Contracts:
- only the leader compares (every ``interval``); any member answers digest queries;
- members are compared at one common index: the lowest index every answering voter has
  applied, provided everyone still keeps its digest; the digest held by a majority of ALL voters
  is the truth (``raftkv.guard.digest.judge``), each member holding another one is named; with
  no majority every reporter is named, so the whole cluster stops taking writes;
- a named member gets one CORRUPT alarm (etcd's ``AlarmType.CORRUPT`` with its member ID),
  raised through Raft so every member learns it; fencing itself is the member's job.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from raftkv.guard.digest import judge
from raftkv.peer.transport import PeerRequestError, PeerTransport
from raftkv.proto import rpc_pb2 as pb
from raftkv.server.applier import Applier

log = logging.getLogger("raftkv.guard")

_LATEST = struct.Struct(">QQ16s")  # oldest kept index, latest index, latest digest
_INDEX = struct.Struct(">Q")
REQUEST_TIMEOUT = 1.0


@dataclass
class GuardCounters:
    checks: int = 0
    apply_digest_mismatch: int = 0
    corruption_detected: int = 0
    last_divergence: dict[int, int] = field(default_factory=dict)  # member -> first bad index


class ConsistencyGuard:
    def __init__(
        self,
        *,
        member_id: int,
        applier: Applier,
        transport: PeerTransport,
        voters: Callable[[], tuple[int, ...]],
        is_leader: Callable[[], bool],
        raise_alarm: Callable[[int], Awaitable[None]],
        interval: float,
    ) -> None:
        self.member_id = member_id
        self.applier = applier
        self.transport = transport
        self.voters = voters
        self.is_leader = is_leader
        self.raise_alarm = raise_alarm
        self.interval = interval
        self.counters = GuardCounters()
        transport.register_handler("digest-latest", self._handle_latest)
        transport.register_handler("digest-at", self._handle_at)

    # -- answering peers --------------------------------------------------------------------

    async def _handle_latest(self, peer: int, payload: bytes) -> bytes:
        digest = self.applier.digest
        index, value = digest.latest()
        return _LATEST.pack(digest.oldest_index(), index, value)

    async def _handle_at(self, peer: int, payload: bytes) -> bytes:
        (index,) = _INDEX.unpack(payload)
        return self.applier.digest.digest_at(index) or b""

    # -- the leader's comparison ------------------------------------------------------------

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            if not self.is_leader():
                continue
            try:
                await self.check_once()
            except (PeerRequestError, TimeoutError) as exc:
                log.debug("digest comparison skipped: %s", exc)

    async def check_once(self) -> list[int]:
        """Compare every voter's digest at a common index; returns the members named."""
        voters = self.voters()
        digest = self.applier.digest
        latest: dict[int, tuple[int, int, bytes]] = {}
        local_index, local_value = digest.latest()
        latest[self.member_id] = (digest.oldest_index(), local_index, local_value)
        for peer in voters:
            if peer == self.member_id:
                continue
            try:
                raw = await self.transport.request(peer, "digest-latest", b"", REQUEST_TIMEOUT)
            except PeerRequestError:
                continue  # unreachable: judged as not reporting
            latest[peer] = _LATEST.unpack(raw)
        if len(latest) < 2:
            return []
        common = min(entry[1] for entry in latest.values())
        floor = max(entry[0] for entry in latest.values())
        if common < floor or common == 0:
            return []  # some member moved past what another still keeps: next round
        reports: dict[int, bytes] = {}
        for member, (_oldest, index, value) in latest.items():
            if index == common:
                reports[member] = value
            else:
                at = await self._digest_at(member, common)
                if at is not None:
                    reports[member] = at
        self.counters.checks += 1
        truth, outliers = judge(reports, voters)
        if not outliers:
            return []
        self.counters.apply_digest_mismatch += 1
        named = []
        for member in outliers:
            if self._already_alarmed(member):
                continue
            first = await self._first_divergence(member, floor, common, truth)
            self.counters.corruption_detected += 1
            self.counters.last_divergence[member] = first
            log.error(
                "apply digest mismatch: member %x diverged at raft index %d "
                "(compared at index %d: expected %s, member has %s; %s)",
                member,
                first,
                common,
                truth.hex() if truth is not None else "no majority",
                reports[member].hex(),
                "quorum agrees on the expected digest"
                if truth is not None
                else "no quorum agrees: every member is suspect",
            )
            await self.raise_alarm(member)
            named.append(member)
        return named

    def _already_alarmed(self, member: int) -> bool:
        return (member, int(pb.CORRUPT)) in self.applier.alarms

    async def _digest_at(self, member: int, index: int) -> bytes | None:
        if member == self.member_id:
            return self.applier.digest.digest_at(index)
        raw = await self.transport.request(member, "digest-at", _INDEX.pack(index), REQUEST_TIMEOUT)
        return raw or None

    async def _first_divergence(self, member: int, lo: int, hi: int, truth: bytes | None) -> int:
        """The first index in (lo, hi] where ``member`` left the majority's chain.

        Compares with this member's own digests when they are the truth (the common case);
        otherwise the index where the member's chain left the leader's.
        """
        local = self.applier.digest

        async def same(i: int) -> bool:
            return await self._digest_at(member, i) == local.digest_at(i)

        if member == self.member_id or not await same(lo):
            return lo
        while hi - lo > 1:  # invariant: same at lo, different at hi
            mid = (lo + hi) // 2
            if await same(mid):
                lo = mid
            else:
                hi = mid
        return hi
