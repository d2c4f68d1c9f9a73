"""Leases as one member serves them: Grant, Revoke, KeepAlive, TimeToLive, Leases, and the
leader's duties (expiring leases, checkpointing remaining TTLs).

Contracts:
- only the leader's lessor is primary: it alone renews, expires and checkpoints; a follower
  forwards KeepAlive and TimeToLive to the leader over the peer transport (typed calls: the
  etcd request and response messages, serialized);
- an expired lease is revoked through Raft (a LEASE_REVOKE proposal), like a client's revoke,
  and only after a read-index round confirmed this member still leads (as checkpoints);
- lease IDs are chosen before proposing, so apply is deterministic;
- a Grant that does not fit the backend quota is refused before it is proposed, after this
  member's NOSPACE alarm was raised (``raftkv.server.quota``).
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable, Coroutine
from typing import Any

from raftkv import errors
from raftkv.auth.store import ROOT_USER
from raftkv.auth.tokens import AuthInfo
from raftkv.lease.errors import LeaseNotFoundError
from raftkv.peer.transport import PeerRequestError
from raftkv.proto import rpc_pb2 as pb
from raftkv.server.applier import Applier
from raftkv.server.environment import Entropy, MemberTransport
from raftkv.server.fencing import Fence
from raftkv.server.leader_calls import ask_leader
from raftkv.server.proposals import Proposer
from raftkv.server.quota import LEASE_OVERHEAD, QuotaAlarmer
from raftkv.server.raft_node import RaftNode
from raftkv.server.reads import ReadBarrier
from raftkv.server.requests import RequestKind

LEASE_EXPIRY_CHECK_INTERVAL = 0.5
PEER_RENEW = "lease-renew"  # LeaseKeepAliveRequest -> LeaseKeepAliveResponse (TTL -1: none)
PEER_TTL = "lease-ttl"  # LeaseTimeToLiveRequest -> LeaseTimeToLiveResponse (TTL -1: none)

log = logging.getLogger("raftkv.leases")


class Leases:
    def __init__(
        self,
        *,
        applier: Applier,
        raft: RaftNode,
        transport: MemberTransport,
        proposer: Proposer,
        barrier: ReadBarrier,
        fence: Fence,
        header: Callable[..., pb.ResponseHeader],
        election_timeout: float,
        spawn: Callable[[Coroutine[Any, Any, None]], None],
        entropy: Entropy,
    ) -> None:
        """``entropy`` draws the IDs of leases granted without one."""
        self.applier = applier
        self.raft = raft
        self.transport = transport
        self.proposer = proposer
        self.barrier = barrier
        self.fence = fence
        self.header = header
        self.election_timeout = election_timeout
        self._spawn = spawn
        self.entropy = entropy
        self.quota = QuotaAlarmer(
            member_id=fence.member_id, backend=lambda: applier.backend, proposer=proposer
        )
        transport.register_handler(PEER_RENEW, self._handle_remote_renew)
        transport.register_handler(PEER_TTL, self._handle_remote_ttl)

    def leader_changed(self, is_leader: bool) -> None:
        """Promote the lessor on the new leader (every lease gets a fresh TTL), demote it on
        the old one."""
        lessor = self.applier.lessor
        if is_leader:
            lessor.promote(self.election_timeout, self.applier.clock.monotonic())
        elif lessor.is_primary:
            lessor.demote()

    # -- client requests --------------------------------------------------------------------

    async def grant(self, req: pb.LeaseGrantRequest) -> pb.LeaseGrantResponse:
        self.fence.check_voter()
        if not self.quota.available(LEASE_OVERHEAD):
            await self.quota.refuse()
        lease_id = req.ID
        while lease_id == 0:
            candidate = self.entropy.getrandbits(63)
            if candidate and self.applier.lessor.lookup(candidate) is None:
                lease_id = candidate
        body = pb.LeaseGrantRequest(TTL=req.TTL, ID=lease_id).SerializeToString()
        resp: pb.LeaseGrantResponse = await self.proposer.propose(RequestKind.LEASE_GRANT, body)
        return resp

    async def revoke(
        self, req: pb.LeaseRevokeRequest, who: AuthInfo | None = None
    ) -> pb.LeaseRevokeResponse:
        self.fence.check_voter()
        resp: pb.LeaseRevokeResponse = await self.proposer.propose(
            RequestKind.LEASE_REVOKE, req.SerializeToString(), who
        )
        return resp

    async def renew(self, lease_id: int) -> int:
        """Keepalive: answered by the leader (forwarded there from a follower)."""
        await self._caught_up()
        if self.raft.is_leader:
            return self._renew_local(lease_id)
        reply = pb.LeaseKeepAliveResponse.FromString(
            await self._ask_leader(PEER_RENEW, pb.LeaseKeepAliveRequest(ID=lease_id))
        )
        if reply.TTL < 0:
            raise errors.ERR_LEASE_NOT_FOUND
        return reply.TTL

    async def time_to_live(self, req: pb.LeaseTimeToLiveRequest) -> pb.LeaseTimeToLiveResponse:
        await self._caught_up()
        if self.raft.is_leader:
            resp = self._ttl_local(req)
        else:
            resp = pb.LeaseTimeToLiveResponse.FromString(await self._ask_leader(PEER_TTL, req))
        # etcd answers an unknown (revoked, expired) lease with TTL -1, not an error.
        resp.header.CopyFrom(self.header())
        return resp

    async def leases(self) -> pb.LeaseLeasesResponse:
        await self._caught_up()
        # etcd lists leases by expiry (soonest first); followers have none, so ID order.
        leases = sorted(
            self.applier.lessor.leases(),
            key=lambda lease: (lease.expiry if lease.expiry is not None else math.inf, lease.id),
        )
        return pb.LeaseLeasesResponse(
            header=self.header(), leases=[pb.LeaseStatus(ID=lease.id) for lease in leases]
        )

    async def _caught_up(self) -> None:
        """What every lease read and renewal passes first, local or forwarded by a follower:
        this member's fence (a voter not fenced), then a read-index round that brings its
        applied state up to the leader's commit index (etcd's waitAppliedIndex), so no lease
        a committed entry revoked is renewed or reported alive."""
        self.fence.check_voter()
        await self.barrier.wait()

    # -- answered on the leader -------------------------------------------------------------

    def _renew_local(self, lease_id: int) -> int:
        try:
            return self.applier.lessor.renew(lease_id, self.applier.clock.monotonic())
        except LeaseNotFoundError:
            raise errors.ERR_LEASE_NOT_FOUND from None

    def _ttl_local(self, req: pb.LeaseTimeToLiveRequest) -> pb.LeaseTimeToLiveResponse:
        try:
            applier = self.applier
            granted, remaining, keys = applier.lessor.time_to_live(
                req.ID, applier.clock.monotonic()
            )
        except LeaseNotFoundError:
            return pb.LeaseTimeToLiveResponse(ID=req.ID, TTL=-1)
        resp = pb.LeaseTimeToLiveResponse(ID=req.ID, TTL=remaining, grantedTTL=granted)
        if req.keys:
            resp.keys.extend(keys)
        return resp

    async def _handle_remote_renew(self, peer: int, payload: bytes) -> bytes:
        """A follower's forwarded keepalive, served as a local one (``_caught_up`` first): a
        leader whose apply lags or stopped (a corrupt backend) never renews a lease that
        committed entries already revoked.  A refusal reaches the follower as the request's
        failure."""
        req = pb.LeaseKeepAliveRequest.FromString(payload)
        await self._caught_up()
        try:
            ttl = self._renew_local(req.ID)
        except errors.ERR_LEASE_NOT_FOUND:
            ttl = -1
        return pb.LeaseKeepAliveResponse(ID=req.ID, TTL=ttl).SerializeToString()

    async def _handle_remote_ttl(self, peer: int, payload: bytes) -> bytes:
        """A follower's forwarded TimeToLive, served as a local one (see the keepalive's)."""
        req = pb.LeaseTimeToLiveRequest.FromString(payload)
        await self._caught_up()
        return self._ttl_local(req).SerializeToString()

    async def _ask_leader(self, kind: str, req: Any) -> bytes:
        try:
            return await ask_leader(
                self.raft,
                self.transport,
                kind,
                req.SerializeToString(),
                self.proposer.request_timeout,
            )
        except PeerRequestError:
            raise errors.ERR_TIMEOUT from None

    # -- the leader's duties ----------------------------------------------------------------

    async def run(self) -> None:
        """Expire leases and checkpoint remaining TTLs while this member leads (a task)."""
        while True:
            await asyncio.sleep(LEASE_EXPIRY_CHECK_INTERVAL)
            lessor = self.applier.lessor
            if not (self.raft.is_leader and lessor.is_primary):
                continue
            now = self.applier.clock.monotonic()
            expired = lessor.expired_leases(now)
            checkpoints = lessor.checkpoint_candidates(now)
            if expired or checkpoints:
                self._spawn(self._propose_duties(expired, checkpoints))

    async def _propose_duties(self, expired: list[int], checkpoints: list[tuple[int, int]]) -> None:
        """Propose the revokes of ``expired`` leases and one checkpoint entry, once a read-index
        round confirmed this member still leads (etcd's ensureLeadership, etcd issue 15247).

        A leader cut off from the others keeps believing it leads until check-quorum steps it
        down, while clients keep their leases alive on the new leader; its revoke, forwarded
        to the new leader as a follower's proposal, would delete keys of a live lease.  A
        lease renewed while the round ran is not revoked."""
        if not await self._confirmed_leader():
            log.warning(
                "ignored %d lease revokes and %d checkpoints: this member %x is no longer "
                "the leader",
                len(expired),
                len(checkpoints),
                self.fence.member_id,
            )
            return
        lessor = self.applier.lessor
        now = self.applier.clock.monotonic()
        auth = self.applier.auth
        # As etcd's WithRoot: an expiry is the cluster's act, allowed whatever keys it holds.
        who = AuthInfo(ROOT_USER, auth.revision) if auth.enabled else None
        for lease_id in expired:
            lease = lessor.lookup(lease_id)
            if lease is None or lease.expiry is None or lease.expiry > now:
                continue  # revoked, or renewed while leadership was confirmed
            body = pb.LeaseRevokeRequest(ID=lease_id).SerializeToString()
            self._spawn(self.proposer.propose_quietly(RequestKind.LEASE_REVOKE, body, who))
        if checkpoints:
            body = pb.LeaseCheckpointRequest(
                checkpoints=[pb.LeaseCheckpoint(ID=i, remaining_TTL=t) for i, t in checkpoints]
            ).SerializeToString()
            self._spawn(self.proposer.propose_quietly(RequestKind.LEASE_CHECKPOINT, body))

    async def _confirmed_leader(self) -> bool:
        """True when a read-index round just confirmed this member as the primary leader."""
        try:
            await self.barrier.wait()
        except errors.EtcdError:
            return False
        return self.raft.is_leader and self.applier.lessor.is_primary
