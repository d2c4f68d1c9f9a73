"""The Auth service: enable/disable/status, Authenticate, users and roles (etcd's
``api/v3rpc/auth.go``).

Contract: every call names its caller (``caller``) and hands it to the member, which checks
it: changes at apply (through Raft), reads before answering; errors are etcd's.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from raftkv.api.common import Context, caller, guarded
from raftkv.api.ports import AuthPort, Who
from raftkv.proto import rpc_pb2 as pb
from raftkv.proto import rpc_pb2_grpc as pb_grpc


class AuthService(pb_grpc.AuthServicer):
    def __init__(self, auth: AuthPort) -> None:
        self.auth = auth

    async def _as_caller(self, context: Context, call: Callable[[Who], Awaitable[Any]]) -> Any:
        async def body() -> Any:
            return await call(await caller(self.auth, context))

        return await guarded(context, body)

    async def AuthEnable(self, request: pb.AuthEnableRequest, context: Context) -> Any:
        return await self._as_caller(context, self.auth.enable)

    async def AuthDisable(self, request: pb.AuthDisableRequest, context: Context) -> Any:
        return await self._as_caller(context, self.auth.disable)

    async def AuthStatus(self, request: pb.AuthStatusRequest, context: Context) -> Any:
        return await self._as_caller(context, self.auth.status)

    async def Authenticate(self, request: pb.AuthenticateRequest, context: Context) -> Any:
        return await guarded(context, lambda: self.auth.authenticate(request))

    async def UserAdd(self, request: pb.AuthUserAddRequest, context: Context) -> Any:
        return await self._as_caller(context, lambda who: self.auth.user_add(request, who))

    async def UserGet(self, request: pb.AuthUserGetRequest, context: Context) -> Any:
        return await self._as_caller(context, lambda who: self.auth.user_get(request.name, who))

    async def UserList(self, request: pb.AuthUserListRequest, context: Context) -> Any:
        return await self._as_caller(context, self.auth.user_list)

    async def UserDelete(self, request: pb.AuthUserDeleteRequest, context: Context) -> Any:
        return await self._as_caller(context, lambda who: self.auth.user_delete(request, who))

    async def UserChangePassword(
        self, request: pb.AuthUserChangePasswordRequest, context: Context
    ) -> Any:
        return await self._as_caller(
            context, lambda who: self.auth.user_change_password(request, who)
        )

    async def UserGrantRole(self, request: pb.AuthUserGrantRoleRequest, context: Context) -> Any:
        return await self._as_caller(context, lambda who: self.auth.user_grant_role(request, who))

    async def UserRevokeRole(self, request: pb.AuthUserRevokeRoleRequest, context: Context) -> Any:
        return await self._as_caller(context, lambda who: self.auth.user_revoke_role(request, who))

    async def RoleAdd(self, request: pb.AuthRoleAddRequest, context: Context) -> Any:
        return await self._as_caller(context, lambda who: self.auth.role_add(request, who))

    async def RoleGet(self, request: pb.AuthRoleGetRequest, context: Context) -> Any:
        return await self._as_caller(context, lambda who: self.auth.role_get(request.role, who))

    async def RoleList(self, request: pb.AuthRoleListRequest, context: Context) -> Any:
        return await self._as_caller(context, self.auth.role_list)

    async def RoleDelete(self, request: pb.AuthRoleDeleteRequest, context: Context) -> Any:
        return await self._as_caller(context, lambda who: self.auth.role_delete(request, who))

    async def RoleGrantPermission(
        self, request: pb.AuthRoleGrantPermissionRequest, context: Context
    ) -> Any:
        return await self._as_caller(
            context, lambda who: self.auth.role_grant_permission(request, who)
        )

    async def RoleRevokePermission(
        self, request: pb.AuthRoleRevokePermissionRequest, context: Context
    ) -> Any:
        return await self._as_caller(
            context, lambda who: self.auth.role_revoke_permission(request, who)
        )
