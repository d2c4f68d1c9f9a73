"""One raftkv member (etcd's EtcdServer): its parts assembled, started and stopped.

Owns: start-up (data dir, Raft side, state machine, peer transport) and shutdown, the response
header, fencing on corruption, and the member's background loops (compaction, watch sync, a
fenced leader handing over).  Each duty the gRPC services reach lives in a part of its own:
``kv`` (reads and writes), ``leases``, ``membership``, ``maintenance``, ``versions``; the
proposal wait registry is ``proposer``, linearizable reads wait on ``barrier``.

Contracts:
- every request ends within ``request_timeout`` with an answer or etcd's timeout error;
- a member whose version the cluster does not admit, or that the cluster removed, stops with
  one line saying why (``fatal_error``), never a traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine
from typing import Any

from raftkv.auth.tokens import AuthTokenError, TokenProvider, new_token_provider
from raftkv.lease.lessor import min_lease_ttl
from raftkv.mvcc.backend import BackendConfig, verify_file
from raftkv.mvcc.errors import BackendCorruptionError
from raftkv.mvcc.watchable import WatchableStore
from raftkv.peer.security import PeerSecurity, unauthenticated_warning
from raftkv.proto import rpc_pb2 as pb
from raftkv.raft import RawNode
from raftkv.raft.config import Config as RaftConfig
from raftkv.server import join, security
from raftkv.server.applier import Applier
from raftkv.server.auth import Auth
from raftkv.server.bootstrap import (
    BootstrapError,
    ExistingCluster,
    MemberInfo,
    open_raft_side,
)
from raftkv.server.compactor import AutoCompactor, parse_retention
from raftkv.server.config import ServerConfig
from raftkv.server.data_dir import DataDir
from raftkv.server.environment import PRODUCTION, MemberEnvironment, MemberTransport
from raftkv.server.fencing import VERDICT_KIND, Fence
from raftkv.server.guard import ConsistencyGuard
from raftkv.server.hash_check import StateHashChecker
from raftkv.server.kv import KV
from raftkv.server.leases import Leases
from raftkv.server.maintenance import Maintenance
from raftkv.server.membership import Membership
from raftkv.server.metrics import DiskMetrics
from raftkv.server.proposals import Proposer
from raftkv.server.raft_node import FatalStateMachineError, RaftNode
from raftkv.server.reads import ReadBarrier
from raftkv.server.repair import Repairer
from raftkv.server.requests import RequestKind
from raftkv.server.versions import Versions
from raftkv.wal import WAL

log = logging.getLogger("raftkv.member")

COMPACTION_STEP_PAUSE = 0.01
HASH_CHECK_REQUEST_TIMEOUT = 2.0
FENCED_LEADER_CHECK_INTERVAL = 0.2
PARKED_ALARM_RETRY = 2.0  # seconds between a parked member's proposals of its own alarm


class MemberStoppedError(FatalStateMachineError):
    """The member must not go on (removed from the cluster, version not admitted)."""


class Member:
    def __init__(self, config: ServerConfig, env: MemberEnvironment = PRODUCTION) -> None:
        """``env``: the member's clock, randomness, peer transport and WAL worker
        (``server.environment``); its waits go through the event loop it runs on, whose time
        must be ``env.clock``'s."""
        self.config = config
        self.env = env
        self.clock = env.clock
        self.data_dir = DataDir(config.resolved_data_dir, config.wal_dir)
        hb = config.heartbeat_interval_ms
        self.election_ticks = max(1, config.election_timeout_ms // hb)
        # etcd: 5 s plus two election timeouts before a request gives up.
        self.request_timeout = 5.0 + 2 * config.election_timeout_ms / 1000
        self.disk_metrics = DiskMetrics()
        self.member_id = 0
        self.cluster_id = 0
        self.wal: WAL | None = None  # once ``start`` opened it (``raft.wal`` once Raft runs)
        self.raft: RaftNode
        self.applier: Applier
        self.transport: MemberTransport
        self.proposer: Proposer
        self.fence: Fence
        self.kv: KV
        self.leases: Leases
        self.membership: Membership
        self.maintenance: Maintenance
        self.auth: Auth
        self.auth_tokens: TokenProvider
        self.versions: Versions
        self._tasks: list[asyncio.Task[None]] = []
        self._background: set[asyncio.Task[None]] = set()
        self._alarming_while_parked = False
        self.stopped = asyncio.Event()
        self.fatal_error: BaseException | None = None
        self._leaving = False  # this member was removed; it stops shortly

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        cfg = self.config
        existing = None
        peer_security = security.peer_security(cfg)
        try:
            self.auth_tokens = new_token_provider(cfg.auth_token, simple_ttl=cfg.auth_token_ttl_s)
        except AuthTokenError as exc:
            raise BootstrapError(f"--auth-token: {exc}") from None
        if cfg.initial_cluster_state == "existing" and not self.data_dir.has_wal():
            existing = await self._ask_running_cluster(peer_security)
        rec = open_raft_side(cfg, existing)
        self.wal = rec.wal
        self.member_id, self.cluster_id = rec.member_id, rec.cluster_id
        md = rec.snapshot.metadata
        seed_members = rec.initial_members if existing is not None else []
        try:
            if existing is None and md.index == 0:
                seed_members = await self._rediscover_peers(peer_security)
            node = RawNode(
                RaftConfig(
                    id=self.member_id,
                    storage=rec.storage,
                    election_tick=self.election_ticks,
                    heartbeat_tick=1,
                    applied=md.index,
                    max_size_per_msg=cfg.raft_max_size_per_msg,
                    max_inflight_msgs=cfg.raft_max_inflight_msgs,
                    check_quorum=True,
                    pre_vote=True,
                    seed=self.env.entropy.getrandbits(64),
                )
            )
        except BaseException:
            rec.wal.close()  # unlock: the caller may start this member again in this process
            raise
        self.raft = raft = RaftNode(
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
            clock=self.clock,
            new_worker=self.env.serial_worker,
        )
        raft.on_fatal = self._fatal
        if self.env.ready_observer is not None:
            observe, member_id = self.env.ready_observer, self.member_id
            raft.on_persisted = lambda rd: observe(member_id, rd, node, rec.storage)
        self.proposer = Proposer(
            member_id=self.member_id,
            raft=raft,
            request_timeout=self.request_timeout,
            max_request_bytes=cfg.max_request_bytes,
            cluster_version=lambda: self.applier.cluster.cluster_version,
            first_request_ms=self.clock.wall_ns() // 1_000_000,
        )
        raft.waiting = self.proposer.waiters.__len__
        self.applier = applier = Applier(
            data_dir=self.data_dir,
            backend_config=BackendConfig(
                quota_bytes=cfg.quota_backend_bytes,  # LMDB's map: mvcc.backend.map_size_for
                batch_interval=cfg.backend_batch_interval_s,
                batch_limit=cfg.backend_batch_limit,
                clock=self.clock,
            ),
            min_lease_ttl=min_lease_ttl(self.election_ticks, cfg.heartbeat_interval_ms),
            header=self.header,
            apply_conf_change=raft.apply_conf_change,
            on_members_changed=self._members_changed,
            max_learners=cfg.max_learners,
            waiters=self.proposer.waiters,
            auth_tokens=self.auth_tokens,
        )
        applier.install_if_behind(rec.snapshot)
        if rec.new_cluster:
            applier.write_initial_members(rec.initial_members)
        rec.wal.on_fsync = self.disk_metrics.wal_fsync.observe
        applier.store.on_commit = self.disk_metrics.backend_commit.observe
        self.transport = transport = self.env.peer_transport(
            member_id=self.member_id,
            cluster_id=self.cluster_id,
            listen_urls=list(cfg.listen_peer_urls),
            on_message=raft.step,
            on_snapshot=raft.receive_snapshot,
            check_snapshot=verify_file,  # a value failing its CRC would stop the install
            on_unreachable=raft.report_unreachable,
            on_snapshot_status=raft.report_snapshot,
            snapshot_dir=self.data_dir.snap,
            on_removed=self._removed,
            security=peer_security,
        )
        transport.cluster_info = lambda: join.cluster_info(self.cluster_id, self.applier)
        self.fence = Fence(
            member_id=self.member_id,
            alarms=lambda: self.applier.alarms,
            policy=cfg.corrupt_alarm_policy,
            # A learner, and a member not (yet) in the configuration: one that joined and
            # has not received its snapshot knows no configuration at all.
            is_learner=lambda: self.member_id not in self.raft.conf_state.voters,
            members=lambda: self.applier.members.keys(),
            verdict_dir=self.data_dir.member,  # an accepted guard verdict survives restarts
        )
        transport.register_handler(VERDICT_KIND, self.fence.handle_verdict)
        self.barrier = ReadBarrier(raft, self.request_timeout, self.env.entropy)
        self.kv = KV(
            applier=applier,
            proposer=self.proposer,
            barrier=self.barrier,
            fence=self.fence,
            header=self.header,
            max_txn_ops=cfg.max_txn_ops,
        )
        self.leases = Leases(
            applier=applier,
            raft=raft,
            transport=transport,
            proposer=self.proposer,
            barrier=self.barrier,
            fence=self.fence,
            header=self.header,
            election_timeout=cfg.election_timeout_ms / 1000,
            spawn=self._spawn,
            entropy=self.env.entropy,
        )
        self.membership = Membership(
            member_id=self.member_id,
            config=cfg,
            applier=applier,
            raft=raft,
            transport=transport,
            proposer=self.proposer,
            barrier=self.barrier,
            header=self.cluster_header,
            spawn=self._spawn,
        )
        self.versions = Versions(
            applier=applier,
            raft=raft,
            proposer=self.proposer,
            barrier=self.barrier,
            header=self.header,
        )
        self.maintenance = Maintenance(
            member_id=self.member_id,
            applier=applier,
            raft=raft,
            proposer=self.proposer,
            barrier=self.barrier,
            fence=self.fence,
            header=self.header,
            snap_dir=self.data_dir.snap,
            on_state_reloaded=self.on_state_replaced,
        )
        self.auth = Auth(
            applier=applier,
            raft=raft,
            proposer=self.proposer,
            barrier=self.barrier,
            fence=self.fence,
            header=self.header,
            bcrypt_cost=cfg.bcrypt_cost,
            client_cert_auth=cfg.client_cert_auth,
            request_timeout=self.request_timeout,
        )
        self.versions.check_admitted()
        self.guard = ConsistencyGuard(
            member_id=self.member_id,
            applier=applier,
            transport=transport,
            voters=lambda: self.raft.conf_state.voters,
            is_leader=lambda: self.raft.is_leader,
            raise_alarm=self._raise_corrupt_alarm,
            interval=cfg.apply_digest_check_interval_ms / 1000,
            term=lambda: self.raft.node.term,
        )
        self.hash_checker = StateHashChecker(
            member_id=self.member_id,
            applier=applier,
            transport=transport,
            voters=lambda: self.raft.conf_state.voters,
            is_leader=lambda: self.raft.is_leader,
            leader=lambda: self.raft.lead,
            propose_checkpoint=self._propose_checkpoint,
            wait_applied=raft.wait_applied,
            raise_alarm=self._raise_corrupt_alarm,
            period=cfg.corrupt_check_time_s,
            request_timeout=HASH_CHECK_REQUEST_TIMEOUT,
        )
        self.guard.learners = self.hash_checker.learners = lambda: self.raft.conf_state.learners
        self.hash_checker.on_named = self.guard.verdicts.name
        self.repairer = Repairer(self)
        if seed_members:
            self.membership.seed(seed_members)
        # Peers first: the transport refuses streams from members it does not know.
        self._members_changed(dict(applier.members))
        await transport.start()
        warning = unauthenticated_warning(cfg.listen_peer_urls, peer_security)
        if warning is not None:
            log.warning("%s", warning)
        raft.on_leader_change = self.leases.leader_changed
        raft.may_send_snapshot = lambda: not self.fence.self_alarmed()
        raft.confirm_snapshot = self.guard.confirm
        raft.on_apply_corruption = self._apply_corruption
        raft.on_backend_corruption = self.report_backend_corruption
        raft.start(transport, applier)
        if len(rec.conf_state.voters) == 1 and rec.conf_state.voters[0] == self.member_id:
            node.campaign()  # a lone voter need not wait an election timeout
        self._tasks = [
            asyncio.create_task(self.barrier.run(), name="read-index"),
            asyncio.create_task(self.leases.run(), name="lease-expiry"),
            asyncio.create_task(self._compaction_loop(), name="compaction"),
            asyncio.create_task(self._auto_compaction_loop(), name="auto-compaction"),
            asyncio.create_task(self._watch_sync_loop(), name="watch-sync"),
            asyncio.create_task(self._fenced_leader_loop(), name="fenced-leader"),
            asyncio.create_task(self.membership.publish(), name="publish"),
            asyncio.create_task(self.versions.run(), name="cluster-version"),
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

    async def _ask_running_cluster(self, peer_security: PeerSecurity) -> ExistingCluster:
        """This member's ID and the running members, from a member of ``--initial-cluster``."""
        return await join.discover(
            self.config,
            timeout=self.request_timeout / 2,
            security=peer_security,
            fetch=self.env.fetch_cluster_info,
        )

    async def _rediscover_peers(self, peer_security: PeerSecurity) -> list[MemberInfo]:
        """The running members, for a member that joined and stopped before its first snapshot
        arrived: its member list comes with that snapshot, so without asking the cluster again
        (as at its join) it would know no member to answer."""
        found = await self._ask_running_cluster(peer_security)
        if (found.cluster_id, found.member_id) != (self.cluster_id, self.member_id):
            raise BootstrapError(
                f"this data dir holds member {self.member_id:x} of cluster {self.cluster_id:x}, "
                f"which joined and has not received its first snapshot, but the running cluster "
                f"knows this member's peer URLs as member {found.member_id:x} of cluster "
                f"{found.cluster_id:x}"
            )
        log.info(
            "member %x joined but has no snapshot yet: the running cluster named %d members",
            self.member_id,
            len(found.members),
        )
        return list(found.members)

    async def stop(self) -> None:
        """Stop what ``start`` started (all of it, or as far as a failed start got)."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if hasattr(self, "transport"):
            await self.transport.stop()
        if hasattr(self, "raft"):
            await self.raft.stop()
        if hasattr(self, "proposer"):
            self.proposer.close()
        if hasattr(self, "applier"):
            self.applier.force_commit()
            self.applier.close()
        self.stopped.set()

    def _fatal(self, exc: BaseException) -> None:
        if self.fatal_error is None:
            self.fatal_error = exc
        self.stopped.set()

    def _removed(self) -> None:
        self._fatal(MemberStoppedError("the member has been permanently removed from the cluster"))

    def _members_changed(self, members: dict[int, MemberInfo]) -> None:
        if not hasattr(self, "membership"):
            return  # start-up: the transport is not there yet; start() syncs it
        self.membership.members_changed(members)
        if self.membership.removed_self() and not self._leaving:
            # As etcd: stop ten ticks later, so the answer to the request that removed this
            # member (and the entries that carried it to the others) still go out.
            self._leaving = True
            delay = 10 * self.config.heartbeat_interval_ms / 1000
            asyncio.get_running_loop().call_later(delay, self._removed)
        try:
            self.versions.check_admitted()
        except Exception as exc:
            self._fatal(MemberStoppedError(str(exc)))

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

    # -- what the watch service reads -------------------------------------------------------

    @property
    def watchable(self) -> WatchableStore:
        return self.applier.watchable

    @property
    def compact_revision(self) -> int:
        return self.applier.store.compact_revision

    @property
    def max_request_bytes(self) -> int:
        return self.config.max_request_bytes

    def is_fenced(self) -> bool:
        return self.fence.is_fenced()

    def check_watch(self) -> None:
        """A watch stream may be opened here (not fenced, not a learner)."""
        self.fence.check_voter()

    # -- fencing and repair -----------------------------------------------------------------

    @property
    def state_broken(self) -> bool:
        return self.fence.state_broken

    @state_broken.setter
    def state_broken(self, value: bool) -> None:
        self.fence.state_broken = value

    async def propose_internal(self, kind: RequestKind, body: bytes) -> Any:
        """Propose a member-internal request (not fenced) and return its applied answer."""
        return await self.proposer.propose(kind, body)

    def on_state_replaced(self) -> None:
        """The backend was swapped or reloaded: a leader's lessor must be promoted again."""
        if self.raft.is_leader:
            self.leases.leader_changed(True)

    def _apply_corruption(self, exc: BackendCorruptionError) -> None:
        """Apply met a corrupt stored value and parked: fence now, before the alarm applies
        (it cannot apply here until the state is repaired)."""
        self.fence.state_broken = True
        self.report_backend_corruption(exc)
        if not self._alarming_while_parked:
            self._alarming_while_parked = True
            self._spawn(self._alarm_while_parked())

    async def _alarm_while_parked(self) -> None:
        """Apply is parked on a corrupt value, so this member cannot apply its own CORRUPT
        alarm and cannot see whether the proposal committed (a leader change loses it): it
        proposes it again every ``PARKED_ALARM_RETRY`` seconds until its state is replaced (a
        repair, a snapshot).  Activating an active alarm changes nothing."""
        try:
            while self.raft.apply_parked:
                await asyncio.sleep(PARKED_ALARM_RETRY)
                if self.raft.apply_parked:
                    await self._raise_corrupt_alarm(self.member_id)
        finally:
            self._alarming_while_parked = False

    async def _fenced_leader_loop(self) -> None:
        """A leader named diverged hands leadership to a healthy voter: its state must not be
        the one lagging followers receive, nor lead lease expiry."""
        while True:
            await asyncio.sleep(FENCED_LEADER_CHECK_INTERVAL)
            if not (self.raft.is_leader and self.fence.self_alarmed()):
                continue
            alarmed = {m for m, _a in self.applier.alarms}
            healthy = [
                v for v in self.raft.conf_state.voters if v not in alarmed and v != self.member_id
            ]
            if not healthy:
                continue
            # The most caught-up one: a voter that needs a snapshot cannot get one from this
            # fenced leader, so it could never take over (--apply-faults seed 248).
            progress = self.raft.node.status().progress
            target = max(healthy, key=lambda v: (p.match if (p := progress.get(v)) else -1, -v))
            log.warning("this leader is under a CORRUPT alarm: transferring to %x", target)
            self.raft.transfer_leader(target)
            await asyncio.sleep(self.config.election_timeout_ms / 1000)

    async def _propose_checkpoint(self) -> int:
        """Commit a HASH_CHECK entry; every member hashes its state at the returned index."""
        index: int = await self.proposer.propose(RequestKind.HASH_CHECK, b"")
        return index

    async def _raise_corrupt_alarm(self, member_id: int) -> None:
        body = pb.AlarmRequest(
            action=pb.AlarmRequest.ACTIVATE, memberID=member_id, alarm=pb.CORRUPT
        ).SerializeToString()
        await self.proposer.propose_quietly(RequestKind.ALARM, body)

    def report_backend_corruption(self, exc: Exception) -> None:
        """A read found a value failing its CRC in this member's backend: fence this member.

        ``exc`` is the backend's corruption error (its text names the bucket and key).  Logs it,
        counts it in ``raftkv_corruption_detected_total`` and proposes, in the background, a
        CORRUPT alarm naming this member, after whose apply the fence refuses this member's
        client requests; nothing is proposed while that alarm is already active.
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

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

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
                self.applier.clock.monotonic(), store.current_revision, store.compact_revision
            )
            if target is not None and self.raft.is_leader:
                log.info("auto-compaction: compacting to revision %d", target)
                body = pb.CompactionRequest(revision=target).SerializeToString()
                await self.proposer.propose_quietly(RequestKind.COMPACTION, body)

    async def _watch_sync_loop(self) -> None:
        while True:
            await asyncio.sleep(0.1)
            if self.is_fenced():
                continue  # the watch streams are being closed; nothing more is read
            try:
                self.applier.watchable.sync_watchers()
            except BackendCorruptionError as exc:
                self.report_backend_corruption(exc)
