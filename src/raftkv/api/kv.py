"""The KV service: Range, Put, DeleteRange, Txn, Compact.

Contract: every request is validated as etcd validates it (``raftkv.api.validate``) before the
member sees it; errors are translated by ``raftkv.api.common`` (``fail`` in Range and Put, the
hottest paths, ``guarded`` elsewhere).
"""

from __future__ import annotations

from raftkv.api import validate
from raftkv.api.common import Context, caller, fail, guarded
from raftkv.api.ports import AuthPort, KVPort
from raftkv.proto import rpc_pb2 as pb
from raftkv.proto import rpc_pb2_grpc as pb_grpc


class KVService(pb_grpc.KVServicer):
    def __init__(self, kv: KVPort, auth: AuthPort) -> None:
        self.kv = kv
        self.auth = auth

    async def Range(self, request: pb.RangeRequest, context: Context) -> pb.RangeResponse:
        try:
            validate.check_range(request)
            who = await caller(self.auth, context) if self.auth.enabled else None
            return await self.kv.range(request, who)
        except Exception as exc:
            await fail(context, exc)

    async def Put(self, request: pb.PutRequest, context: Context) -> pb.PutResponse:
        try:
            validate.check_put(request)
            who = await caller(self.auth, context) if self.auth.enabled else None
            return await self.kv.put(request, who)
        except Exception as exc:
            await fail(context, exc)

    async def DeleteRange(
        self, request: pb.DeleteRangeRequest, context: Context
    ) -> pb.DeleteRangeResponse:
        async def body() -> pb.DeleteRangeResponse:
            validate.check_delete_range(request)
            return await self.kv.delete_range(request, await caller(self.auth, context))

        return await guarded(context, body)

    async def Txn(self, request: pb.TxnRequest, context: Context) -> pb.TxnResponse:
        async def body() -> pb.TxnResponse:
            validate.check_txn(request, self.kv.max_txn_ops)
            return await self.kv.txn(request, await caller(self.auth, context))

        return await guarded(context, body)

    async def Compact(
        self, request: pb.CompactionRequest, context: Context
    ) -> pb.CompactionResponse:
        async def body() -> pb.CompactionResponse:
            return await self.kv.compact(request, await caller(self.auth, context))

        return await guarded(context, body)
