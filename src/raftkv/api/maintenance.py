"""The Maintenance service: Status, Hash, HashKV, Alarm, Defragment, Snapshot, MoveLeader."""

from __future__ import annotations

from collections.abc import AsyncIterator

from raftkv.api.common import Context, fail, guarded
from raftkv.api.ports import MaintenancePort, VersionPort
from raftkv.backup.snapshot_file import SNAPSHOT_FORMAT_METADATA
from raftkv.proto import rpc_pb2 as pb
from raftkv.proto import rpc_pb2_grpc as pb_grpc


class MaintenanceService(pb_grpc.MaintenanceServicer):
    def __init__(self, maintenance: MaintenancePort, versions: VersionPort) -> None:
        self.maintenance = maintenance
        self.versions = versions

    async def Status(self, request: pb.StatusRequest, context: Context) -> pb.StatusResponse:
        # raftkv's own versions travel beside etcd's ``version`` field (which etcd clients
        # parse as the etcd API level) as response metadata.
        await context.send_initial_metadata(self.versions.metadata())
        return await guarded(context, self.maintenance.status)

    async def Hash(self, request: pb.HashRequest, context: Context) -> pb.HashResponse:
        return await guarded(context, self.maintenance.hash)

    async def HashKV(self, request: pb.HashKVRequest, context: Context) -> pb.HashKVResponse:
        return await guarded(context, lambda: self.maintenance.hash_kv(request.revision))

    async def Alarm(self, request: pb.AlarmRequest, context: Context) -> pb.AlarmResponse:
        return await guarded(context, lambda: self.maintenance.alarm(request))

    async def Defragment(
        self, request: pb.DefragmentRequest, context: Context
    ) -> pb.DefragmentResponse:
        return await guarded(context, self.maintenance.defragment)

    async def MoveLeader(
        self, request: pb.MoveLeaderRequest, context: Context
    ) -> pb.MoveLeaderResponse:
        return await guarded(context, lambda: self.maintenance.move_leader(request.targetID))

    async def Downgrade(
        self, request: pb.DowngradeRequest, context: Context
    ) -> pb.DowngradeResponse:
        return await guarded(context, lambda: self.versions.downgrade(request))

    async def Snapshot(
        self, request: pb.SnapshotRequest, context: Context
    ) -> AsyncIterator[pb.SnapshotResponse]:
        metadata = dict(context.invocation_metadata() or ())
        fmt = metadata.get(SNAPSHOT_FORMAT_METADATA, "etcd")
        try:
            async for chunk in self.maintenance.snapshot_stream(str(fmt)):
                yield chunk
        except Exception as exc:  # a corrupt value met while exporting: DataLoss, fenced
            await fail(context, exc)
