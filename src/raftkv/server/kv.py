"""The key-value requests of one member: Range, Put, DeleteRange, Txn, Compact.

Contracts:
- a write is acknowledged only after its entry was committed (durable on a quorum, the WAL
  fsynced before any acknowledgement) and applied on this member;
- a linearizable read (Range, read-only Txn) waits for ``ReadBarrier``; a serializable one
  reads this member's applied state at once, and is the only read a learner serves;
- a read-only Txn is served without Raft, as etcd serves it;
- while auth is enabled, a read is checked against the caller's permissions here (the state
  it reads is this member's); a write carries the caller into its entry and is checked at
  apply (``raftkv.server.auth_apply``);
- a Put, or a Txn with a put, that does not fit the backend quota is refused before it is
  proposed, after this member's NOSPACE alarm was raised (``raftkv.server.quota``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from raftkv.auth.tokens import AuthInfo
from raftkv.mvcc.errors import CompactedError, FutureRevError
from raftkv.proto import rpc_pb2 as pb
from raftkv.server import convert
from raftkv.server.applier import Applier
from raftkv.server.auth_apply import check_txn
from raftkv.server.fencing import Fence
from raftkv.server.proposals import Proposer
from raftkv.server.quota import KV_OVERHEAD, QuotaAlarmer, cost_txn, log_quota
from raftkv.server.reads import ReadBarrier
from raftkv.server.requests import RequestKind


class KV:
    def __init__(
        self,
        *,
        applier: Applier,
        proposer: Proposer,
        barrier: ReadBarrier,
        fence: Fence,
        header: Callable[..., pb.ResponseHeader],
        max_txn_ops: int,
    ) -> None:
        self.applier = applier
        self.proposer = proposer
        self.barrier = barrier
        self.fence = fence
        self.header = header
        self.max_txn_ops = max_txn_ops
        self.range_count = 0
        self.quota = QuotaAlarmer(
            member_id=fence.member_id, backend=lambda: applier.backend, proposer=proposer
        )
        log_quota(applier.backend.config.quota_bytes, "kv")

    async def range(self, req: pb.RangeRequest, who: AuthInfo | None = None) -> pb.RangeResponse:
        self.range_count += 1
        if req.serializable:
            self.fence.check()
        else:
            self.fence.check_voter()
            await self.barrier.wait()
        auth = self.applier.auth
        if auth.enabled:
            auth.is_range_permitted(who, req.key, req.range_end)
        try:
            resp = self.applier.store.range(convert.range_to_mvcc(req))
        except (CompactedError, FutureRevError) as exc:
            raise convert.error_to_etcd(exc) from None
        return convert.range_to_pb(resp, self.header(resp.revision))

    async def put(self, req: pb.PutRequest, who: AuthInfo | None = None) -> pb.PutResponse:
        self.fence.check_voter()
        backend = self.applier.backend  # quota.fits inlined: this is the hottest path
        limit = backend.quota_limit
        if limit is not None and (
            backend.committed_size + KV_OVERHEAD + len(req.key) + len(req.value) >= limit
        ):
            await self.quota.refuse()
        resp: pb.PutResponse = await self.proposer.propose(
            RequestKind.PUT, req.SerializeToString(), who
        )
        return resp

    async def delete_range(
        self, req: pb.DeleteRangeRequest, who: AuthInfo | None = None
    ) -> pb.DeleteRangeResponse:
        self.fence.check_voter()
        resp: pb.DeleteRangeResponse = await self.proposer.propose(
            RequestKind.DELETE_RANGE, req.SerializeToString(), who
        )
        return resp

    async def txn(self, req: pb.TxnRequest, who: AuthInfo | None = None) -> pb.TxnResponse:
        if txn_is_read_only(req):
            if txn_serializable(req):
                self.fence.check()
            else:
                self.fence.check_voter()
                await self.barrier.wait()
            if self.applier.auth.enabled:
                check_txn(self.applier.auth, self.applier.lessor, req, who)
            try:
                resp = self.applier.store.read_txn(convert.txn_to_mvcc(req))
            except (CompactedError, FutureRevError) as exc:
                raise convert.error_to_etcd(exc) from None
            return convert.txn_to_pb(resp, self.header())
        self.fence.check_voter()
        if not self.quota.available(cost_txn(req)):
            await self.quota.refuse()
        tresp: pb.TxnResponse = await self.proposer.propose(
            RequestKind.TXN, req.SerializeToString(), who
        )
        return tresp

    async def compact(
        self, req: pb.CompactionRequest, who: AuthInfo | None = None
    ) -> pb.CompactionResponse:
        self.fence.check_voter()
        resp: pb.CompactionResponse = await self.proposer.propose(
            RequestKind.COMPACTION, req.SerializeToString(), who
        )
        if req.physical:
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self.applier.compaction_waiters.append(fut)
            await fut
        return resp


def txn_is_read_only(req: pb.TxnRequest) -> bool:
    for op in list(req.success) + list(req.failure):
        which = op.WhichOneof("request")
        if which in ("request_put", "request_delete_range"):
            return False
        if which == "request_txn" and not txn_is_read_only(op.request_txn):
            return False
    return True


def txn_serializable(req: pb.TxnRequest) -> bool:
    ops = list(req.success) + list(req.failure)
    return bool(ops) and all(
        op.WhichOneof("request") == "request_range" and op.request_range.serializable for op in ops
    )
