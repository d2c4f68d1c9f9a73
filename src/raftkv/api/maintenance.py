"""The Maintenance service: Status, Hash, HashKV, Alarm, Defragment, Snapshot, MoveLeader,
Downgrade.

Contract: while auth is enabled, as etcd's ``authMaintenanceServer``: Status and listing alarms
need a known caller; every other call (Hash, HashKV, Defragment, Snapshot, MoveLeader,
Downgrade, raising or clearing an alarm) needs root.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from raftkv.api.common import (
    Context,
    fail,
    guarded_as_admin,
    guarded_as_caller,
    require_admin,
)
from raftkv.api.ports import AuthPort, MaintenancePort, VersionPort
from raftkv.backup.snapshot_file import SNAPSHOT_FORMAT_METADATA
from raftkv.proto import rpc_pb2 as pb
from raftkv.proto import rpc_pb2_grpc as pb_grpc


class MaintenanceService(pb_grpc.MaintenanceServicer):
    def __init__(self, maintenance: MaintenancePort, versions: VersionPort, auth: AuthPort) -> None:
        self.maintenance = maintenance
        self.versions = versions
        self.auth = auth

    async def Status(self, request: pb.StatusRequest, context: Context) -> pb.StatusResponse:
        # raftkv's own versions travel beside etcd's ``version`` field (which etcd clients
        # parse as the etcd API level) as response metadata.
        await context.send_initial_metadata(self.versions.metadata())
        return await guarded_as_caller(self.auth, context, self.maintenance.status)

    async def Hash(self, request: pb.HashRequest, context: Context) -> pb.HashResponse:
        return await guarded_as_admin(self.auth, context, self.maintenance.hash)

    async def HashKV(self, request: pb.HashKVRequest, context: Context) -> pb.HashKVResponse:
        return await guarded_as_admin(
            self.auth, context, lambda: self.maintenance.hash_kv(request.revision)
        )

    async def Alarm(self, request: pb.AlarmRequest, context: Context) -> pb.AlarmResponse:
        if request.action == pb.AlarmRequest.GET:
            return await guarded_as_caller(
                self.auth, context, lambda: self.maintenance.alarm(request)
            )
        return await guarded_as_admin(self.auth, context, lambda: self.maintenance.alarm(request))

    async def Defragment(
        self, request: pb.DefragmentRequest, context: Context
    ) -> pb.DefragmentResponse:
        return await guarded_as_admin(self.auth, context, self.maintenance.defragment)

    async def MoveLeader(
        self, request: pb.MoveLeaderRequest, context: Context
    ) -> pb.MoveLeaderResponse:
        return await guarded_as_admin(
            self.auth, context, lambda: self.maintenance.move_leader(request.targetID)
        )

    async def Downgrade(
        self, request: pb.DowngradeRequest, context: Context
    ) -> pb.DowngradeResponse:
        return await guarded_as_admin(self.auth, context, lambda: self.versions.downgrade(request))

    async def Snapshot(
        self, request: pb.SnapshotRequest, context: Context
    ) -> AsyncIterator[pb.SnapshotResponse]:
        metadata = dict(context.invocation_metadata() or ())
        fmt = metadata.get(SNAPSHOT_FORMAT_METADATA, "etcd")
        try:
            await require_admin(self.auth, context)
            async for chunk in self.maintenance.snapshot_stream(str(fmt)):
                yield chunk
        except Exception as exc:  # a corrupt value met while exporting: DataLoss, fenced
            await fail(context, exc)
