"""The Maintenance service: Status, Hash, HashKV, Alarm, Defragment, Snapshot, MoveLeader."""

from __future__ import annotations

from collections.abc import AsyncIterator

from raftkv import errors
from raftkv.api.common import Context, fail, guarded
from raftkv.backup.snapshot_file import SNAPSHOT_FORMAT_METADATA
from raftkv.proto import rpc_pb2 as pb
from raftkv.proto import rpc_pb2_grpc as pb_grpc
from raftkv.server.member import Member


class MaintenanceService(pb_grpc.MaintenanceServicer):
    def __init__(self, member: Member) -> None:
        self.member = member

    async def Status(self, request: pb.StatusRequest, context: Context) -> pb.StatusResponse:
        return await guarded(context, self.member.status)

    async def Hash(self, request: pb.HashRequest, context: Context) -> pb.HashResponse:
        return await guarded(context, self.member.hash)

    async def HashKV(self, request: pb.HashKVRequest, context: Context) -> pb.HashKVResponse:
        return await guarded(context, lambda: self.member.hash_kv(request.revision))

    async def Alarm(self, request: pb.AlarmRequest, context: Context) -> pb.AlarmResponse:
        return await guarded(context, lambda: self.member.alarm(request))

    async def Defragment(
        self, request: pb.DefragmentRequest, context: Context
    ) -> pb.DefragmentResponse:
        return await guarded(context, self.member.defragment)

    async def MoveLeader(
        self, request: pb.MoveLeaderRequest, context: Context
    ) -> pb.MoveLeaderResponse:
        return await guarded(context, lambda: self.member.move_leader(request.targetID))

    async def Downgrade(
        self, request: pb.DowngradeRequest, context: Context
    ) -> pb.DowngradeResponse:
        async def body() -> pb.DowngradeResponse:
            raise errors.ERR_NOT_CAPABLE

        return await guarded(context, body)

    async def Snapshot(
        self, request: pb.SnapshotRequest, context: Context
    ) -> AsyncIterator[pb.SnapshotResponse]:
        metadata = dict(context.invocation_metadata() or ())
        fmt = metadata.get(SNAPSHOT_FORMAT_METADATA, "etcd")
        try:
            async for chunk in self.member.snapshot_stream(str(fmt)):
                yield chunk
        except Exception as exc:  # a corrupt value met while exporting: DataLoss, fenced
            await fail(context, exc)
