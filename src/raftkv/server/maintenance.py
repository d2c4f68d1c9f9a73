"""The Maintenance service's work on one member: Status, Hash, HashKV, Alarm, Defragment,
MoveLeader, Snapshot (Downgrade is ``server.versions``).

Contracts:
- ``status`` reports the etcd API version in ``version`` (what etcd clients parse); raftkv's
  own versions travel beside it (``versions.Versions.metadata``);
- a snapshot's state is fixed when the call starts; writes go on while the file is written;
  a fenced member sends none (its state must not become anyone's backup);
- ``status`` lists, as etcd, ``etcdserver: no leader`` while there is none and every active
  alarm in its ``errors`` (``memberID:<id> alarm:<type> ``, gogoproto's compact text);
- when apply finds this member's backend over the quota (``Applier.on_no_space``), this member's
  NOSPACE alarm is proposed (one proposal at a time) and the writes so answered fail with
  ``ERR_NO_SPACE`` once it is applied or failed (etcd's ``applyEntryNormal``).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import secrets
from collections.abc import AsyncIterator, Callable
from typing import Any

from raftkv import errors
from raftkv.backup.snapshot_file import SNAPSHOT_FORMAT_LMDB
from raftkv.mvcc.errors import CompactedError, FutureRevError
from raftkv.proto import rpc_pb2 as pb
from raftkv.server import convert
from raftkv.server.applier import Applier
from raftkv.server.fencing import Fence
from raftkv.server.proposals import Proposer
from raftkv.server.quota import no_space_alarm
from raftkv.server.raft_node import RaftNode
from raftkv.server.reads import ReadBarrier
from raftkv.server.requests import RequestKind
from raftkv.version import ETCD_API_VERSION

log = logging.getLogger("raftkv.maintenance")


class Maintenance:
    def __init__(
        self,
        *,
        member_id: int,
        applier: Applier,
        raft: RaftNode,
        proposer: Proposer,
        barrier: ReadBarrier,
        fence: Fence,
        header: Callable[..., pb.ResponseHeader],
        snap_dir: str,
        on_state_reloaded: Callable[[], None],
    ) -> None:
        self.member_id = member_id
        self.applier = applier
        self.raft = raft
        self.proposer = proposer
        self.barrier = barrier
        self.fence = fence
        self.header = header
        self.snap_dir = snap_dir
        self._on_state_reloaded = on_state_reloaded
        # The writes waiting for this member's NOSPACE alarm (None: no proposal in flight).
        self._no_space_waiters: list[asyncio.Future[Any]] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        # The applier's alarm and reload hooks: alarms are this part's duty.
        applier.on_no_space = self._raise_no_space
        applier.on_state_reloaded = on_state_reloaded

    async def status(self) -> pb.StatusResponse:
        backend = self.applier.backend
        hs = self.raft.storage.hard_state()
        storage = self.applier.storage_version()
        resp = pb.StatusResponse(
            header=self.header(),
            version=ETCD_API_VERSION,
            dbSize=backend.file_size(),
            leader=self.raft.lead,
            raftIndex=hs.commit,
            raftTerm=self.raft.node.term,
            raftAppliedIndex=self.applier.applied_index(),
            errors=self._status_errors(),
            dbSizeInUse=backend.size(),
            isLearner=self.member_id in self.raft.conf_state.learners,
            storageVersion=str(storage) if storage else "",
            dbSizeQuota=backend.quota,
        )
        downgrade = self.applier.cluster.downgrade
        if downgrade is not None:  # etcd 3.6's field: a downgrade in progress and its target
            resp.downgradeInfo.enabled = True
            resp.downgradeInfo.targetVersion = str(downgrade.target)
        return resp

    def _status_errors(self) -> list[str]:
        """etcd's ``Status.errors``: no leader, then each active alarm as gogoproto's compact
        text prints an ``AlarmMember`` (fields that are zero left out, a space after each)."""
        out = [errors.ERR_NO_LEADER.message] if not self.raft.lead else []
        for member_id, alarm in sorted(self.applier.alarms):
            text = f"memberID:{member_id} " if member_id else ""
            if alarm:
                text += f"alarm:{pb.AlarmType.Name(pb.AlarmType.ValueType(alarm))} "
            out.append(text)
        return out

    def _raise_no_space(self, waiters: list[asyncio.Future[Any]]) -> None:
        """Apply found this member's backend over the quota: propose its NOSPACE alarm (unless
        a proposal is in flight), then fail ``waiters`` with ``ERR_NO_SPACE``."""
        if self._no_space_waiters is not None:
            self._no_space_waiters.extend(waiters)
            return
        self._no_space_waiters = list(waiters)
        task = asyncio.get_running_loop().create_task(self._propose_no_space())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _propose_no_space(self) -> None:
        try:
            with contextlib.suppress(errors.EtcdError):
                await self.proposer.propose(RequestKind.ALARM, no_space_alarm(self.member_id))
        finally:
            waiters, self._no_space_waiters = self._no_space_waiters or [], None
            for fut in waiters:
                if not fut.done():
                    fut.set_exception(errors.ERR_NO_SPACE())

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
            await self.barrier.wait()
            # etcd sends alarm lists without a header.
            resp = pb.AlarmResponse()
            for member_id, alarm in sorted(self.applier.alarms):
                if req.alarm in (pb.NONE, alarm) and (req.memberID in (0, member_id)):
                    resp.alarms.add(memberID=member_id, alarm=pb.AlarmType.ValueType(alarm))
            return resp
        aresp: pb.AlarmResponse = await self.proposer.propose(
            RequestKind.ALARM, req.SerializeToString()
        )
        return aresp

    async def defragment(self) -> pb.DefragmentResponse:
        before = self.applier.backend.file_size()
        self.applier.defragment()
        self._on_state_reloaded()
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
        async with asyncio.timeout(self.proposer.request_timeout):
            while self.raft.lead != target:
                await asyncio.sleep(0.05)
        return pb.MoveLeaderResponse(header=self.header())

    async def snapshot_stream(self, fmt: str = "etcd") -> AsyncIterator[pb.SnapshotResponse]:
        """The backend as a snapshot stream: an etcd-format (bbolt) database by default, which
        etcd's tools read; ``fmt="lmdb"`` streams the LMDB file itself (repair's fast path)."""
        self.fence.check()  # a diverged member's state must not become anyone's backup
        path = os.path.join(self.snap_dir, f"client-snapshot-{secrets.token_hex(4)}.db")
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
