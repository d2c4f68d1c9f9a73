"""The Lease service: Grant, Revoke, KeepAlive (stream), TimeToLive, Leases.

Contract: KeepAlive answers every request on the stream in order; a keepalive for a lease that
does not exist answers TTL 0 (as etcd), it does not end the stream.  While auth is enabled,
revoking a lease needs write permission on every key attached to it (checked at apply), and
TimeToLive with ``keys`` needs read permission on each key it would list (etcd's
``checkLeaseTimeToLive``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from raftkv import errors
from raftkv.api.common import Context, caller, guarded
from raftkv.api.ports import AuthPort, LeasePort
from raftkv.proto import rpc_pb2 as pb
from raftkv.proto import rpc_pb2_grpc as pb_grpc


class LeaseService(pb_grpc.LeaseServicer):
    def __init__(self, leases: LeasePort, auth: AuthPort) -> None:
        self.leases = leases
        self.auth = auth

    async def LeaseGrant(
        self, request: pb.LeaseGrantRequest, context: Context
    ) -> pb.LeaseGrantResponse:
        return await guarded(context, lambda: self.leases.grant(request))

    async def LeaseRevoke(
        self, request: pb.LeaseRevokeRequest, context: Context
    ) -> pb.LeaseRevokeResponse:
        async def body() -> pb.LeaseRevokeResponse:
            return await self.leases.revoke(request, await caller(self.auth, context))

        return await guarded(context, body)

    async def LeaseTimeToLive(
        self, request: pb.LeaseTimeToLiveRequest, context: Context
    ) -> pb.LeaseTimeToLiveResponse:
        async def body() -> pb.LeaseTimeToLiveResponse:
            who = await caller(self.auth, context)
            resp = await self.leases.time_to_live(request)
            if self.auth.enabled and request.keys:
                for key in resp.keys:
                    self.auth.check_read(who, key, b"")
            return resp

        return await guarded(context, body)

    async def LeaseLeases(
        self, request: pb.LeaseLeasesRequest, context: Context
    ) -> pb.LeaseLeasesResponse:
        return await guarded(context, self.leases.leases)

    async def LeaseKeepAlive(
        self, request_iterator: AsyncIterator[pb.LeaseKeepAliveRequest], context: Context
    ) -> AsyncIterator[pb.LeaseKeepAliveResponse]:
        async for req in request_iterator:
            try:
                ttl = await self.leases.renew(req.ID)
            except errors.ERR_LEASE_NOT_FOUND:
                ttl = 0
            except errors.EtcdError as exc:
                await errors.abort(context, exc)
            yield pb.LeaseKeepAliveResponse(header=self.leases.header(), ID=req.ID, TTL=ttl)
