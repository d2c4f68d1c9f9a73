"""One raftkv member: the object the gRPC services talk to (etcd's EtcdServer).

Owns: start-up (data dir, Raft side, state machine, peer transport), the proposal/wait path,
batched linearizable reads (ReadIndex), the leader's lease duties (expiry, checkpoints), the
background compaction driver, and the answers of the Cluster and Maintenance services.

Contracts:
- a write is acknowledged only after its entry was committed (so durable on a quorum, the WAL
  fsynced before any acknowledgement) and applied on this member;
- a linearizable read waits for a ReadIndex round that started after the read arrived, then for
  this member to apply up to that index; reads arriving while a round is in flight share the
  next round (one heartbeat round for many reads);
- every request ends within ``request_timeout`` with an answer or etcd's timeout error.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import math
import os
import secrets
import time
from collections.abc import AsyncIterator, Coroutine
from typing import Any

from raftkv import errors
from raftkv.backup.snapshot_file import SNAPSHOT_FORMAT_LMDB
from raftkv.lease.errors import LeaseNotFoundError
from raftkv.lease.lessor import min_lease_ttl
from raftkv.mvcc.backend import BackendConfig
from raftkv.mvcc.errors import BackendCorruptionError, CompactedError, FutureRevError
from raftkv.peer.transport import PeerRequestError, PeerTransport
from raftkv.proto import rpc_pb2 as pb
from raftkv.raft import RawNode
from raftkv.raft.config import Config as RaftConfig
from raftkv.raft.errors import ProposalDroppedError
from raftkv.server import convert
from raftkv.server.applier import Applier
from raftkv.server.bootstrap import DataDir, MemberInfo, open_raft_side
from raftkv.server.compactor import AutoCompactor, parse_retention
from raftkv.server.config import ServerConfig
from raftkv.server.deadlines import Deadlines
from raftkv.server.guard import ConsistencyGuard
from raftkv.server.hash_check import StateHashChecker
from raftkv.server.metrics import DiskMetrics
from raftkv.server.raft_node import RaftNode
from raftkv.server.repair import Repairer
from raftkv.server.requests import RequestIdGenerator, RequestKind, encode_request

log = logging.getLogger("raftkv.member")

LEASE_EXPIRY_CHECK_INTERVAL = 0.5
COMPACTION_STEP_PAUSE = 0.01
HASH_CHECK_REQUEST_TIMEOUT = 2.0
FENCED_LEADER_CHECK_INTERVAL = 0.2
MAX_LEASE_ID = (1 << 63) - 1


class Member:
    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.data_dir = DataDir(config.resolved_data_dir, config.wal_dir)
        hb = config.heartbeat_interval_ms
        self.election_ticks = max(1, config.election_timeout_ms // hb)
        # etcd: 5 s plus two election timeouts before a request gives up.
        self.request_timeout = 5.0 + 2 * config.election_timeout_ms / 1000
        self._deadlines = Deadlines(self.request_timeout, errors.ERR_TIMEOUT)
        self.disk_metrics = DiskMetrics()
        self.member_id = 0
        self.cluster_id = 0
        self.raft: RaftNode
        self.applier: Applier
        self.transport: PeerTransport
        self._ids: RequestIdGenerator
        self._read_pending: asyncio.Future[None] | None = None
        self._read_wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._published = False
        self.range_count = 0
        self.proposals_failed = 0  # etcd_server_proposals_failed_total
        self._peers: dict[int, tuple[str, ...]] = {}
        self._background: set[asyncio.Task[None]] = set()
        self.stopped = asyncio.Event()
        self.fatal_error: BaseException | None = None
        # True from apply meeting a corrupt stored value until a repair verified the new state.
        self.state_broken = False

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        cfg = self.config
        rec = open_raft_side(cfg)
        self.member_id, self.cluster_id = rec.member_id, rec.cluster_id
        self._ids = RequestIdGenerator(self.member_id)
        md = rec.snapshot.metadata
        node = RawNode(
            RaftConfig(
                id=self.member_id,
                storage=rec.storage,
                election_tick=self.election_ticks,
                heartbeat_tick=1,
                applied=md.index,
                max_size_per_msg=1 << 20,
                max_inflight_msgs=512,
                check_quorum=True,
                pre_vote=True,
                seed=int.from_bytes(os.urandom(8), "big"),
            )
        )
        self.raft = RaftNode(
            node=node,
            storage=rec.storage,
            wal=rec.wal,
            snapshotter=rec.snapshotter,
            snap_dir=self.data_dir.snap,
            conf_state=rec.conf_state,
            snapshot_index=md.index,
            tick_interval=cfg.heartbeat_interval_ms / 1000,
            snapshot_count=cfg.snapshot_count,
            snapshot_catchup_entries=cfg.snapshot_catchup_entries,
        )
        self.raft.on_fatal = self._fatal
        self.applier = Applier(
            data_dir=self.data_dir,
            backend_config=BackendConfig(
                map_size=cfg.quota_backend_bytes,
                batch_interval=cfg.backend_batch_interval_s,
                batch_limit=cfg.backend_batch_limit,
            ),
            min_lease_ttl=min_lease_ttl(self.election_ticks, cfg.heartbeat_interval_ms),
            header=self.header,
            apply_conf_change=self.raft.apply_conf_change,
            on_members_changed=self._members_changed,
        )
        if self.applier.applied_index() < md.index:
            db = self.data_dir.received_backend(md.index, md.term)
            if db is None and md.index > 1:
                raise RuntimeError(
                    f"backend at index {self.applier.applied_index()} is behind snapshot "
                    f"{md.index} and no received backend file is present"
                )
            if db is not None:
                self.applier.install_snapshot(rec.snapshot, db)
        if rec.new_cluster:
            self.applier.write_initial_members(rec.initial_members)
        rec.wal.on_fsync = self.disk_metrics.wal_fsync.observe
        self.applier.store.on_commit = self.disk_metrics.backend_commit.observe
        self.transport = PeerTransport(
            member_id=self.member_id,
            cluster_id=self.cluster_id,
            listen_urls=list(cfg.listen_peer_urls),
            on_message=self.raft.step,
            on_snapshot=self.raft.receive_snapshot,
            on_unreachable=self.raft.report_unreachable,
            on_snapshot_status=self.raft.report_snapshot,
            snapshot_dir=self.data_dir.snap,
        )
        self.guard = ConsistencyGuard(
            member_id=self.member_id,
            applier=self.applier,
            transport=self.transport,
            voters=lambda: self.raft.conf_state.voters,
            is_leader=lambda: self.raft.is_leader,
            raise_alarm=self._raise_corrupt_alarm,
            interval=cfg.apply_digest_check_interval_ms / 1000,
        )
        self.hash_checker = StateHashChecker(
            member_id=self.member_id,
            applier=self.applier,
            transport=self.transport,
            voters=lambda: self.raft.conf_state.voters,
            is_leader=lambda: self.raft.is_leader,
            leader=lambda: self.raft.lead,
            propose_checkpoint=self._propose_checkpoint,
            wait_applied=self.raft.wait_applied,
            raise_alarm=self._raise_corrupt_alarm,
            period=cfg.corrupt_check_time_s,
            request_timeout=HASH_CHECK_REQUEST_TIMEOUT,
        )
        self.repairer = Repairer(self)
        self.transport.register_handler("lease-renew", self._handle_remote_renew)
        self.transport.register_handler("lease-ttl", self._handle_remote_ttl)
        await self.transport.start()
        self._members_changed(dict(self.applier.members))
        self.raft.on_leader_change = self._leader_changed
        self.raft.may_send_snapshot = lambda: not self._self_alarmed()
        self.raft.on_apply_corruption = self._apply_corruption
        self.raft.start(self.transport, self.applier)
        if len(rec.conf_state.voters) == 1 and rec.conf_state.voters[0] == self.member_id:
            node.campaign()  # a lone voter need not wait an election timeout
        self._tasks = [
            asyncio.create_task(self._read_loop(), name="read-index"),
            asyncio.create_task(self._lease_loop(), name="lease-expiry"),
            asyncio.create_task(self._compaction_loop(), name="compaction"),
            asyncio.create_task(self._auto_compaction_loop(), name="auto-compaction"),
            asyncio.create_task(self._watch_sync_loop(), name="watch-sync"),
            asyncio.create_task(self._fenced_leader_loop(), name="fenced-leader"),
            asyncio.create_task(self._publish(), name="publish"),
            asyncio.create_task(self.guard.run(), name="consistency-guard"),
        ]
        if cfg.corrupt_check_time_s > 0:
            self._tasks.append(
                asyncio.create_task(self.hash_checker.run_periodic(), name="state-hash-check")
            )
        if cfg.initial_corrupt_check:
            # Before serving: a member whose state a quorum does not share does not start.
            await self.hash_checker.initial_check(leader_wait=self.request_timeout)
        log.info(
            "member %x of cluster %x started (data dir %s)",
            self.member_id,
            self.cluster_id,
            self.data_dir.root,
        )

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.transport.stop()
        await self.raft.stop()
        self._deadlines.close()
        self.applier.force_commit()
        self.applier.close()
        self.stopped.set()

    def _fatal(self, exc: BaseException) -> None:
        self.fatal_error = exc
        self.stopped.set()

    def _members_changed(self, members: dict[int, MemberInfo]) -> None:
        """Keep the transport's peer table equal to the replicated member list."""
        if not hasattr(self, "transport"):
            return
        wanted = {mid: info.peer_urls for mid, info in members.items() if mid != self.member_id}
        for mid in set(self._peers) - set(wanted):
            self.transport.remove_peer(mid)
            del self._peers[mid]
        for mid, urls in sorted(wanted.items()):
            if mid not in self._peers:
                self.transport.add_peer(mid, list(urls))
            elif self._peers[mid] != urls:
                self.transport.update_peer(mid, list(urls))
            self._peers[mid] = urls

    def _leader_changed(self, is_leader: bool) -> None:
        lessor = self.applier.lessor
        if is_leader:
            lessor.promote(self.config.election_timeout_ms / 1000, time.monotonic())
        elif lessor.is_primary:
            lessor.demote()

    # -- headers ----------------------------------------------------------------------------

    def header(self, revision: int | None = None) -> pb.ResponseHeader:
        rev = self.applier.store.current_revision if revision is None else revision
        return pb.ResponseHeader(
            cluster_id=self.cluster_id,
            member_id=self.member_id,
            revision=rev,
            raft_term=self.raft.node.term,
        )

    def cluster_header(self) -> pb.ResponseHeader:
        """The Cluster service's header: etcd leaves the revision out."""
        return pb.ResponseHeader(
            cluster_id=self.cluster_id, member_id=self.member_id, raft_term=self.raft.node.term
        )

    # -- fencing ----------------------------------------------------------------------------

    def check_fence(self) -> None:
        """Refuse client requests with etcd's ``corrupt cluster`` (DataLoss) when fenced.

        Policy ``member``: only a member named by a CORRUPT alarm stops serving; ``cluster``:
        any CORRUPT alarm stops every member, as etcd does.
        """
        if self.state_broken:
            raise errors.ERR_CORRUPT
        corrupt = {m for m, alarm in self.applier.alarms if alarm == pb.CORRUPT}
        if not corrupt:
            return
        if self.member_id in corrupt or self.config.corrupt_alarm_policy == "cluster":
            raise errors.ERR_CORRUPT

    async def propose_internal(self, kind: RequestKind, body: bytes) -> Any:
        """Propose a member-internal request (not fenced) and return its applied answer."""
        return await self._propose(kind, body)

    def on_state_replaced(self) -> None:
        """The backend was swapped (repair): a leader's lessor must be promoted again."""
        if self.raft.is_leader:
            self._leader_changed(True)

    def _self_alarmed(self) -> bool:
        return self.state_broken or (self.member_id, int(pb.CORRUPT)) in self.applier.alarms

    def _apply_corruption(self, exc: BackendCorruptionError) -> None:
        """Apply met a corrupt stored value and parked: fence now, before the alarm applies
        (it cannot apply here until the state is repaired)."""
        self.state_broken = True
        self.report_backend_corruption(exc)

    async def _fenced_leader_loop(self) -> None:
        """A leader named diverged hands leadership to a healthy voter: its state must not be
        the one lagging followers receive, nor lead lease expiry."""
        while True:
            await asyncio.sleep(FENCED_LEADER_CHECK_INTERVAL)
            if not (self.raft.is_leader and self._self_alarmed()):
                continue
            alarmed = {m for m, _a in self.applier.alarms}
            healthy = [
                v for v in self.raft.conf_state.voters if v not in alarmed and v != self.member_id
            ]
            if not healthy:
                continue
            log.warning("this leader is under a CORRUPT alarm: transferring to %x", healthy[0])
            self.raft.transfer_leader(healthy[0])
            await asyncio.sleep(self.config.election_timeout_ms / 1000)

    def is_fenced(self) -> bool:
        """True while ``check_fence`` refuses this member's client requests."""
        try:
            self.check_fence()
        except errors.EtcdError:
            return True
        return False

    async def _propose_checkpoint(self) -> int:
        """Commit a HASH_CHECK entry; every member hashes its state at the returned index."""
        index: int = await self._propose(RequestKind.HASH_CHECK, b"")
        return index

    async def _raise_corrupt_alarm(self, member_id: int) -> None:
        body = pb.AlarmRequest(
            action=pb.AlarmRequest.ACTIVATE, memberID=member_id, alarm=pb.CORRUPT
        ).SerializeToString()
        await self._propose_quietly(RequestKind.ALARM, body)

    def report_backend_corruption(self, exc: Exception) -> None:
        """A read found a value failing its CRC in this member's backend: fence this member.

        ``exc`` is the backend's corruption error (its text names the bucket and key).  Logs it,
        counts it in ``raftkv_corruption_detected_total`` and proposes, in the background, a
        CORRUPT alarm naming this member, after whose apply ``check_fence`` refuses this
        member's client requests; nothing is proposed while that alarm is already active.
        Never blocks or raises (the caller is serving a client).
        """
        log.error(
            "member %x: corrupt data in its backend (%s); raising a CORRUPT alarm for itself",
            self.member_id,
            exc,
        )
        self.guard.counters.corruption_detected += 1
        if (self.member_id, pb.CORRUPT) not in self.applier.alarms:
            self._spawn(self._raise_corrupt_alarm(self.member_id))

    # -- proposals ----------------------------------------------------------------------------

    async def _propose(self, kind: RequestKind, body: bytes) -> Any:
        """Propose one request and return its applied answer, or raise etcd's error: ``no
        leader`` when it cannot be proposed, ``request timed out`` after ``request_timeout``."""
        if len(body) > self.config.max_request_bytes:
            raise errors.ERR_REQUEST_TOO_LARGE
        loop = asyncio.get_running_loop()
        request_id = self._ids.next()
        fut: asyncio.Future[Any] = loop.create_future()
        deadline = self._deadlines.add(fut, loop)
        waiters = self.applier.waiters
        waiters[request_id] = fut
        try:
            if not self.raft.lead:
                try:
                    async with asyncio.timeout_at(deadline):
                        await self.raft.wait_leader()
                except TimeoutError:
                    raise errors.ERR_TIMEOUT from None
            self.raft.propose(encode_request(kind, request_id, body), fut)
            return await fut
        except ProposalDroppedError:
            self.proposals_failed += 1
            raise errors.ERR_NO_LEADER from None
        except (errors.ERR_TIMEOUT, asyncio.CancelledError):
            self.proposals_failed += 1  # as etcd: a proposal whose request ended unanswered
            raise
        finally:
            waiters.pop(request_id, None)
            if not fut.done():
                fut.cancel()  # the caller went away: nobody will read it

    async def put(self, req: pb.PutRequest) -> pb.PutResponse:
        self.check_fence()
        resp: pb.PutResponse = await self._propose(RequestKind.PUT, req.SerializeToString())
        return resp

    async def delete_range(self, req: pb.DeleteRangeRequest) -> pb.DeleteRangeResponse:
        self.check_fence()
        resp: pb.DeleteRangeResponse = await self._propose(
            RequestKind.DELETE_RANGE, req.SerializeToString()
        )
        return resp

    async def txn(self, req: pb.TxnRequest) -> pb.TxnResponse:
        self.check_fence()
        if _txn_is_read_only(req):
            if not _txn_serializable(req):
                await self.linearizable_barrier()
            try:
                resp = self.applier.store.read_txn(convert.txn_to_mvcc(req))
            except (CompactedError, FutureRevError) as exc:
                raise convert.error_to_etcd(exc) from None
            return convert.txn_to_pb(resp, self.header())
        tresp: pb.TxnResponse = await self._propose(RequestKind.TXN, req.SerializeToString())
        return tresp

    async def compact(self, req: pb.CompactionRequest) -> pb.CompactionResponse:
        self.check_fence()
        resp: pb.CompactionResponse = await self._propose(
            RequestKind.COMPACTION, req.SerializeToString()
        )
        if req.physical:
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self.applier.compaction_waiters.append(fut)
            await fut
        return resp

    # -- reads --------------------------------------------------------------------------------

    async def range(self, req: pb.RangeRequest) -> pb.RangeResponse:
        self.range_count += 1
        self.check_fence()
        if not req.serializable:
            await self.linearizable_barrier()
        try:
            resp = self.applier.store.range(convert.range_to_mvcc(req))
        except (CompactedError, FutureRevError) as exc:
            raise convert.error_to_etcd(exc) from None
        return convert.range_to_pb(resp, self.header(resp.revision))

    async def linearizable_barrier(self) -> None:
        if self._read_pending is None:
            self._read_pending = asyncio.get_running_loop().create_future()
            self._read_wake.set()
        await asyncio.shield(self._read_pending)

    async def _read_loop(self) -> None:
        while True:
            await self._read_wake.wait()
            self._read_wake.clear()
            fut, self._read_pending = self._read_pending, None
            if fut is None:
                continue
            try:
                async with asyncio.timeout(self.request_timeout):
                    await self.raft.wait_leader()
                    index = await self.raft.read_index(secrets.token_bytes(8))
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

    # -- leases -------------------------------------------------------------------------------

    async def lease_grant(self, req: pb.LeaseGrantRequest) -> pb.LeaseGrantResponse:
        self.check_fence()
        lease_id = req.ID
        while lease_id == 0:
            candidate = secrets.randbits(63)
            if candidate and self.applier.lessor.lookup(candidate) is None:
                lease_id = candidate
        body = pb.LeaseGrantRequest(TTL=req.TTL, ID=lease_id).SerializeToString()
        resp: pb.LeaseGrantResponse = await self._propose(RequestKind.LEASE_GRANT, body)
        return resp

    async def lease_revoke(self, req: pb.LeaseRevokeRequest) -> pb.LeaseRevokeResponse:
        self.check_fence()
        resp: pb.LeaseRevokeResponse = await self._propose(
            RequestKind.LEASE_REVOKE, req.SerializeToString()
        )
        return resp

    async def lease_renew(self, lease_id: int) -> int:
        """Keepalive: answered by the leader (forwarded there from a follower)."""
        await self.linearizable_barrier()
        if self.raft.is_leader:
            return self._renew_local(lease_id)
        reply = await self._ask_leader("lease-renew", lease_id.to_bytes(8, "big"))
        ttl = int.from_bytes(reply, "big", signed=True)
        if ttl < 0:
            raise errors.ERR_LEASE_NOT_FOUND
        return ttl

    def _renew_local(self, lease_id: int) -> int:
        try:
            return self.applier.lessor.renew(lease_id, time.monotonic())
        except LeaseNotFoundError:
            raise errors.ERR_LEASE_NOT_FOUND from None

    async def _handle_remote_renew(self, peer: int, payload: bytes) -> bytes:
        try:
            ttl = self._renew_local(int.from_bytes(payload, "big"))
        except errors.ERR_LEASE_NOT_FOUND:
            ttl = -1
        return ttl.to_bytes(8, "big", signed=True)

    async def lease_time_to_live(
        self, req: pb.LeaseTimeToLiveRequest
    ) -> pb.LeaseTimeToLiveResponse:
        await self.linearizable_barrier()
        try:
            if self.raft.is_leader:
                granted, remaining, keys = self._ttl_local(req.ID)
            else:
                reply = json.loads(await self._ask_leader("lease-ttl", str(req.ID).encode()))
                if reply is None:
                    raise errors.ERR_LEASE_NOT_FOUND
                granted, remaining = reply["granted"], reply["remaining"]
                keys = [bytes.fromhex(k) for k in reply["keys"]]
        except errors.ERR_LEASE_NOT_FOUND:
            # etcd answers an unknown (revoked, expired) lease with TTL -1, not an error.
            return pb.LeaseTimeToLiveResponse(header=self.header(), ID=req.ID, TTL=-1)
        resp = pb.LeaseTimeToLiveResponse(
            header=self.header(), ID=req.ID, TTL=remaining, grantedTTL=granted
        )
        if req.keys:
            resp.keys.extend(keys)
        return resp

    def _ttl_local(self, lease_id: int) -> tuple[int, int, list[bytes]]:
        try:
            return self.applier.lessor.time_to_live(lease_id, time.monotonic())
        except LeaseNotFoundError:
            raise errors.ERR_LEASE_NOT_FOUND from None

    async def _handle_remote_ttl(self, peer: int, payload: bytes) -> bytes:
        try:
            granted, remaining, keys = self._ttl_local(int(payload.decode()))
        except errors.ERR_LEASE_NOT_FOUND:
            return b"null"
        return json.dumps(
            {"granted": granted, "remaining": remaining, "keys": [k.hex() for k in keys]}
        ).encode()

    async def _ask_leader(self, kind: str, payload: bytes) -> bytes:
        async with asyncio.timeout(self.request_timeout):
            await self.raft.wait_leader()
        try:
            return await self.transport.request(
                self.raft.lead, kind, payload, timeout=self.request_timeout
            )
        except PeerRequestError:
            raise errors.ERR_TIMEOUT from None

    async def lease_leases(self) -> pb.LeaseLeasesResponse:
        await self.linearizable_barrier()
        # etcd lists leases by expiry (soonest first); followers have none, so ID order.
        leases = sorted(
            self.applier.lessor.leases(),
            key=lambda lease: (lease.expiry if lease.expiry is not None else math.inf, lease.id),
        )
        return pb.LeaseLeasesResponse(
            header=self.header(), leases=[pb.LeaseStatus(ID=lease.id) for lease in leases]
        )

    async def _lease_loop(self) -> None:
        while True:
            await asyncio.sleep(LEASE_EXPIRY_CHECK_INTERVAL)
            lessor = self.applier.lessor
            if not (self.raft.is_leader and lessor.is_primary):
                continue
            now = time.monotonic()
            for lease_id in lessor.expired_leases(now):
                body = pb.LeaseRevokeRequest(ID=lease_id).SerializeToString()
                self._spawn(self._propose_quietly(RequestKind.LEASE_REVOKE, body))
            cps = lessor.checkpoint_candidates(now)
            if cps:
                body = pb.LeaseCheckpointRequest(
                    checkpoints=[pb.LeaseCheckpoint(ID=i, remaining_TTL=t) for i, t in cps]
                ).SerializeToString()
                self._spawn(self._propose_quietly(RequestKind.LEASE_CHECKPOINT, body))

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _propose_quietly(self, kind: RequestKind, body: bytes) -> None:
        try:
            await self._propose(kind, body)
        except errors.EtcdError as exc:
            log.debug("internal proposal %s failed: %s", kind.name, exc.message)

    # -- background work ----------------------------------------------------------------------

    async def _compaction_loop(self) -> None:
        while True:
            if self.applier.store.compaction_pending():
                self.applier.compact_some()
                await asyncio.sleep(COMPACTION_STEP_PAUSE)
            else:
                await asyncio.sleep(0.1)

    async def _auto_compaction_loop(self) -> None:
        cfg = self.config
        compactor = AutoCompactor(
            cfg.auto_compaction_mode,
            parse_retention(cfg.auto_compaction_mode, cfg.auto_compaction_retention),
        )
        if not compactor.enabled:
            return
        while True:
            await asyncio.sleep(min(compactor.interval, 1.0))
            store = self.applier.store
            target = compactor.decide(
                time.monotonic(), store.current_revision, store.compact_revision
            )
            if target is not None and self.raft.is_leader:
                log.info("auto-compaction: compacting to revision %d", target)
                body = pb.CompactionRequest(revision=target).SerializeToString()
                await self._propose_quietly(RequestKind.COMPACTION, body)

    async def _watch_sync_loop(self) -> None:
        while True:
            await asyncio.sleep(0.1)
            if self.is_fenced():
                continue  # the watch streams are being closed; nothing more is read
            try:
                self.applier.watchable.sync_watchers()
            except BackendCorruptionError as exc:
                self.report_backend_corruption(exc)

    async def _publish(self) -> None:
        """Record this member's name and client URLs in the replicated member list."""
        info = MemberInfo(
            self.member_id, self.config.name, (), tuple(self.config.advertise_client_urls)
        )
        body = json.dumps(info.to_json()).encode()
        while not self._published:
            try:
                await self._propose(RequestKind.MEMBER_ATTRIBUTES, body)
                self._published = True
            except errors.EtcdError:
                await asyncio.sleep(0.5)

    # -- cluster and maintenance ------------------------------------------------------------

    def _member_pb(self, info: MemberInfo) -> pb.Member:
        return pb.Member(
            ID=info.id,
            name=info.name,
            peerURLs=list(info.peer_urls),
            clientURLs=list(info.client_urls),
            isLearner=info.is_learner,
        )

    async def member_list(self, req: pb.MemberListRequest) -> pb.MemberListResponse:
        if req.linearizable:
            await self.linearizable_barrier()
        members = sorted(self.applier.members.values(), key=lambda i: i.id)
        return pb.MemberListResponse(
            header=self.cluster_header(), members=[self._member_pb(i) for i in members]
        )

    async def member_add(self, req: pb.MemberAddRequest) -> pb.MemberAddResponse:
        raise errors.ERR_NOT_CAPABLE

    async def member_remove(self, req: pb.MemberRemoveRequest) -> pb.MemberRemoveResponse:
        raise errors.ERR_NOT_CAPABLE

    async def member_update(self, req: pb.MemberUpdateRequest) -> pb.MemberUpdateResponse:
        raise errors.ERR_NOT_CAPABLE

    async def member_promote(self, req: pb.MemberPromoteRequest) -> pb.MemberPromoteResponse:
        raise errors.ERR_NOT_CAPABLE

    async def status(self) -> pb.StatusResponse:
        backend = self.applier.backend
        hs = self.raft.storage.hard_state()
        return pb.StatusResponse(
            header=self.header(),
            version=_etcd_compatible_version(),
            dbSize=backend.file_size(),
            leader=self.raft.lead,
            raftIndex=hs.commit,
            raftTerm=self.raft.node.term,
            raftAppliedIndex=self.applier.applied_index(),
            errors=[],
            dbSizeInUse=backend.size(),
            isLearner=self.member_id in self.raft.conf_state.learners,
        )

    async def hash(self) -> pb.HashResponse:
        h, _rev = self.applier.store.hash_kv(0)
        return pb.HashResponse(header=self.header(), hash=h.hash)

    async def hash_kv(self, revision: int) -> pb.HashKVResponse:
        try:
            h, current = self.applier.store.hash_kv(revision)
        except (CompactedError, FutureRevError) as exc:
            raise convert.error_to_etcd(exc) from None
        return pb.HashKVResponse(
            header=self.header(current), hash=h.hash, compact_revision=h.compact_revision
        )

    async def alarm(self, req: pb.AlarmRequest) -> pb.AlarmResponse:
        if req.action == pb.AlarmRequest.GET:
            await self.linearizable_barrier()
            # etcd sends alarm lists without a header.
            resp = pb.AlarmResponse()
            for member_id, alarm in sorted(self.applier.alarms):
                if req.alarm in (pb.NONE, alarm) and (req.memberID in (0, member_id)):
                    resp.alarms.add(memberID=member_id, alarm=pb.AlarmType.ValueType(alarm))
            return resp
        aresp: pb.AlarmResponse = await self._propose(RequestKind.ALARM, req.SerializeToString())
        return aresp

    async def defragment(self) -> pb.DefragmentResponse:
        before = self.applier.backend.file_size()
        self.applier.defragment()
        if self.raft.is_leader:
            self._leader_changed(True)
        log.info(
            "defragmented the backend: %d -> %d bytes", before, self.applier.backend.file_size()
        )
        return pb.DefragmentResponse(header=self.header())

    async def move_leader(self, target: int) -> pb.MoveLeaderResponse:
        if not self.raft.is_leader:
            raise errors.ERR_NOT_LEADER
        if target not in self.raft.conf_state.voters:
            raise errors.ERR_BAD_LEADER_TRANSFEREE
        self.raft.transfer_leader(target)
        async with asyncio.timeout(self.request_timeout):
            while self.raft.lead != target:
                await asyncio.sleep(0.05)
        return pb.MoveLeaderResponse(header=self.header())

    async def snapshot_stream(self, fmt: str = "etcd") -> AsyncIterator[pb.SnapshotResponse]:
        """The backend as a snapshot stream: an etcd-format (bbolt) database by default, which
        etcd's tools read; ``fmt="lmdb"`` streams the LMDB file itself (repair's fast path).
        The state is fixed when the call starts; writes go on while the file is written."""
        self.check_fence()  # a diverged member's state must not become anyone's backup
        path = os.path.join(self.data_dir.snap, f"client-snapshot-{secrets.token_hex(4)}.db")
        self.applier.commit_pending()  # the copy holds everything applied until now
        # Every message's header carries the snapshot's revision (the proto: the first header
        # is the snapshot's point in time), not the revision when the message is sent.
        revision = self.applier.store.current_revision
        try:
            if fmt == SNAPSHOT_FORMAT_LMDB:
                await asyncio.to_thread(self.applier.copy_backend, path)
            else:
                await asyncio.to_thread(self.applier.etcd_snapshot_deferred(), path)
            total = os.path.getsize(path)
            sent = 0
            digest = hashlib.sha256()
            with open(path, "rb") as f:
                while True:
                    chunk = await asyncio.to_thread(f.read, 1 << 20)
                    if not chunk:
                        break
                    sent += len(chunk)
                    digest.update(chunk)
                    yield pb.SnapshotResponse(
                        header=self.header(revision), remaining_bytes=total - sent, blob=chunk
                    )
            # As etcd: the stream ends with the SHA-256 of the database, which
            # `etcdctl snapshot save` and restore verify.
            yield pb.SnapshotResponse(
                header=self.header(revision), remaining_bytes=0, blob=digest.digest()
            )
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.remove(path)  # also a partial file an export that failed left


def _txn_is_read_only(req: pb.TxnRequest) -> bool:
    for op in list(req.success) + list(req.failure):
        which = op.WhichOneof("request")
        if which in ("request_put", "request_delete_range"):
            return False
        if which == "request_txn" and not _txn_is_read_only(op.request_txn):
            return False
    return True


def _txn_serializable(req: pb.TxnRequest) -> bool:
    ops = list(req.success) + list(req.failure)
    return bool(ops) and all(
        op.WhichOneof("request") == "request_range" and op.request_range.serializable for op in ops
    )


def _etcd_compatible_version() -> str:
    """The server version etcd clients see: the etcd API level raftkv implements."""
    return "3.5.0"
