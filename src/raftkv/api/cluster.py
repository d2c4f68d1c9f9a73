"""The Cluster service: MemberList, MemberAdd, MemberRemove, MemberUpdate, MemberPromote."""

from __future__ import annotations

from raftkv.api.common import Context, guarded, guarded_as_admin
from raftkv.api.ports import AuthPort, ClusterPort
from raftkv.proto import rpc_pb2 as pb
from raftkv.proto import rpc_pb2_grpc as pb_grpc


class ClusterService(pb_grpc.ClusterServicer):
    """Membership changes need root while auth is enabled (etcd's
    ``checkMembershipOperationPermission``); listing members does not."""

    def __init__(self, cluster: ClusterPort, auth: AuthPort) -> None:
        self.cluster = cluster
        self.auth = auth

    async def MemberList(
        self, request: pb.MemberListRequest, context: Context
    ) -> pb.MemberListResponse:
        # Each member's raftkv version travels beside etcd's Member fields (which have none).
        await context.send_initial_metadata(self.cluster.versions_metadata())
        return await guarded(context, lambda: self.cluster.member_list(request))

    async def MemberAdd(
        self, request: pb.MemberAddRequest, context: Context
    ) -> pb.MemberAddResponse:
        return await guarded_as_admin(self.auth, context, lambda: self.cluster.member_add(request))

    async def MemberRemove(
        self, request: pb.MemberRemoveRequest, context: Context
    ) -> pb.MemberRemoveResponse:
        return await guarded_as_admin(
            self.auth, context, lambda: self.cluster.member_remove(request)
        )

    async def MemberUpdate(
        self, request: pb.MemberUpdateRequest, context: Context
    ) -> pb.MemberUpdateResponse:
        return await guarded_as_admin(
            self.auth, context, lambda: self.cluster.member_update(request)
        )

    async def MemberPromote(
        self, request: pb.MemberPromoteRequest, context: Context
    ) -> pb.MemberPromoteResponse:
        return await guarded_as_admin(
            self.auth, context, lambda: self.cluster.member_promote(request)
        )
