"""Simulated lease holders and the lease guarantee every run checks.

Owns: ``SimLeaseHolder`` (one client process: grants leases through the member's own Lease
service, attaches two keys to each, keeps some alive, lets some expire, revokes some, and
reads its keys back) and ``check_leases``.

The guarantee (etcd's): a lease is not revoked before its TTL has passed since it was granted
or last kept alive.  A read that finds a lease's key gone while its keepalive deadline (the
call time of the last successful grant or keepalive plus the TTL it returned) is still ahead
is a violation, unless the holder revoked it itself or the leader's clock jumped meanwhile
(a jump forward of the leader's clock expires leases early, in etcd as here).

The lease's two keys are under the watched prefix, so an expiry's deletes also test the
watch's atomicity (both keys go at one revision).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Callable, Collection, Coroutine
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from raftkv.app.services import Services
from raftkv.proto import rpc_pb2 as pb
from tests.simserver.clients import call_member
from tests.simserver.loop import Process, VirtualLoop
from tests.simserver.members import SimMember

ATTEMPT_TIMEOUT = 2.0


@dataclass
class HeldLease:
    lease_id: int
    keys: tuple[bytes, bytes]
    # (call time, TTL returned) of each successful grant or keepalive
    renewals: list[tuple[float, int]] = field(default_factory=list)
    revoked_at: float | None = None  # call time of the holder's own revoke, if any
    # (call time, return time, found, member that answered) of each read of the first key
    probes: list[tuple[float, float, bool, str]] = field(default_factory=list)


class SimLeaseHolder:
    def __init__(
        self, *, index: int, loop: VirtualLoop, members: list[SimMember], rng: random.Random
    ) -> None:
        self.index = index
        self.loop = loop
        self.members = members
        self.rng = rng
        self.process = Process(f"lease-holder-{index}")
        self.leases: list[HeldLease] = []
        self.stopping = False
        self._n = 0

    def start(self) -> asyncio.Task[None]:
        return self.process.spawn(self.loop, self._run())

    async def _call(self, build: Callable[[Services, Any], Coroutine[Any, Any, Any]]) -> Any:
        return (await self._call_any(build))[0]

    async def _call_any(
        self, build: Callable[[Services, Any], Coroutine[Any, Any, Any]]
    ) -> tuple[Any, str]:
        """(answer or None, name of the member asked) of one call to a random live member."""
        up = [m for m in self.members if m.up]
        if not up:
            await asyncio.sleep(0.2)
            return None, ""
        target = self.rng.choice(up)
        answer, _outcome = await call_member(
            self.loop, target, build, ATTEMPT_TIMEOUT, f"lease-holder-{self.index}"
        )
        return answer, target.name

    async def _run(self) -> None:
        while not self.stopping:
            lease = await self._grant()
            if lease is None:
                await asyncio.sleep(0.3)
                continue
            await self._hold(lease)

    async def _grant(self) -> HeldLease | None:
        ttl = self.rng.choice((2, 3, 4))
        call = self.loop.time()
        resp = await self._call(
            lambda s, ctx: s.lease.LeaseGrant(pb.LeaseGrantRequest(TTL=ttl), ctx)
        )
        if not isinstance(resp, pb.LeaseGrantResponse) or resp.error:
            return None
        self._n += 1
        base = f"kl{self.index}-{self._n}"
        lease = HeldLease(resp.ID, (f"{base}a".encode(), f"{base}b".encode()))
        lease.renewals.append((call, resp.TTL))
        self.leases.append(lease)
        for key in lease.keys:
            put = pb.PutRequest(key=key, value=b"held", lease=lease.lease_id)
            if not isinstance(await self._call(partial(_put, put)), pb.PutResponse):
                return None  # a key may be missing: not probed
        return lease

    async def _hold(self, lease: HeldLease) -> None:
        """Keep ``lease`` alive for a while, reading its key; then revoke it or let it go."""
        until = self.loop.time() + self.rng.uniform(3.0, 15.0)
        while self.loop.time() < until and not self.stopping:
            await asyncio.sleep(self.rng.uniform(0.1, 0.4))
            if self.rng.random() < 0.5:
                await self._keepalive(lease)
            else:
                await self._probe(lease)
        if self.rng.random() < 0.3:
            lease.revoked_at = self.loop.time()
            await self._call(
                lambda s, ctx: s.lease.LeaseRevoke(pb.LeaseRevokeRequest(ID=lease.lease_id), ctx)
            )

    async def _keepalive(self, lease: HeldLease) -> None:
        async def one() -> AsyncIterator[pb.LeaseKeepAliveRequest]:
            yield pb.LeaseKeepAliveRequest(ID=lease.lease_id)

        async def first(s: Services, ctx: Any) -> pb.LeaseKeepAliveResponse | None:
            async for resp in s.lease.LeaseKeepAlive(one(), ctx):
                return resp
            return None

        call = self.loop.time()
        resp = await self._call(first)
        if isinstance(resp, pb.LeaseKeepAliveResponse) and resp.TTL > 0:
            lease.renewals.append((call, resp.TTL))

    async def _probe(self, lease: HeldLease) -> None:
        call = self.loop.time()
        resp, by = await self._call_any(
            lambda s, ctx: s.kv.Range(pb.RangeRequest(key=lease.keys[0]), ctx)
        )
        if isinstance(resp, pb.RangeResponse):
            lease.probes.append((call, self.loop.time(), bool(resp.kvs), by))


async def _put(req: pb.PutRequest, s: Services, ctx: Any) -> pb.PutResponse:
    return await s.kv.Put(req, ctx)


def check_leases(
    holders: list[SimLeaseHolder], clock_jumps: list[float], distrust: Collection[str] = ()
) -> list[str]:
    """Every read that found a live lease's key gone, one line each; reads answered by
    ``distrust`` (members whose state machines were made to diverge) are not evidence."""
    problems = []
    for h in holders:
        for lease in h.leases:
            for call, ret, found, by in lease.probes:
                if found or by in distrust:
                    continue
                if lease.revoked_at is not None and lease.revoked_at <= ret:
                    continue
                before = [(t, ttl) for t, ttl in lease.renewals if t <= call]
                if not before:
                    continue
                renewed, ttl = before[-1]
                if ret >= renewed + ttl:
                    continue  # it may have expired
                if any(renewed <= j <= ret for j in clock_jumps):
                    continue  # a clock jumped meanwhile: it may expire early
                problems.append(
                    f"lease {lease.lease_id:x} of holder {h.index}: its key was gone at "
                    f"[{call:.3f}, {ret:.3f}], {renewed + ttl - ret:.3f}s before its TTL of "
                    f"{ttl}s from {renewed:.3f} ran out"
                )
    return problems
