"""Auth on one member: who a request comes from, the Auth service's work, and the checks made
before a request reaches Raft (etcd's ``AuthInfoFromCtx``, ``v3_server.go``'s Auth calls and
``authMaintenanceServer``).

Contracts:
- ``who`` names the caller from its ``token`` metadata (a simple token is looked up once this
  member applied the entry that assigned it, as etcd's index waiter) or, without a token and
  with ``--client-cert-auth``, from its certificate's CN; None while auth is disabled or when
  the caller presents neither;
- changes to users, roles, permissions and the enabled flag go through Raft with the caller
  in the entry (format 2), and are checked at apply (``raftkv.server.auth_apply``);
  passwords are hashed here, with ``--bcrypt-cost``, in a worker thread, so apply stays
  deterministic and the event loop free;
- reads of the auth state (status, user and role get/list) wait for a linearizable read
  barrier, then answer from this member's store with etcd's rules (root, or the user itself,
  or a holder of the role);
- ``Authenticate`` checks the password here (bcrypt, in a worker thread) and then proposes the
  token assignment, so every member knows a simple token once it applied that entry.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from google.protobuf.message import Message

from raftkv import errors
from raftkv.auth.passwords import hashed_for_change_password, hashed_for_user_add
from raftkv.auth.tokens import AuthInfo, simple_token_index
from raftkv.proto import rpc_pb2 as pb
from raftkv.server.applier import Applier
from raftkv.server.auth_apply import encode_authenticate
from raftkv.server.fencing import Fence
from raftkv.server.proposals import Proposer
from raftkv.server.raft_node import RaftNode
from raftkv.server.reads import ReadBarrier
from raftkv.server.requests import RequestKind


class Auth:
    def __init__(
        self,
        *,
        applier: Applier,
        raft: RaftNode,
        proposer: Proposer,
        barrier: ReadBarrier,
        fence: Fence,
        header: Callable[..., pb.ResponseHeader],
        bcrypt_cost: int,
        client_cert_auth: bool,
        request_timeout: float,
    ) -> None:
        self.applier = applier
        self.raft = raft
        self.proposer = proposer
        self.barrier = barrier
        self.fence = fence
        self.header = header
        self.bcrypt_cost = bcrypt_cost
        self.client_cert_auth = client_cert_auth
        self.request_timeout = request_timeout

    # -- who is asking -------------------------------------------------------------------

    @property
    def enabled(self) -> bool:
        return self.applier.auth.enabled

    def revision(self) -> int:
        return self.applier.auth.revision

    async def who(self, token: str | None, cert_cn: str | None) -> AuthInfo | None:
        """The caller (see the module contract); raises ``invalid auth token``."""
        store = self.applier.auth
        if not store.enabled:
            return None
        if token is not None:
            index = simple_token_index(token)
            if index is not None and index > self.applier.applied_index():
                try:
                    async with asyncio.timeout(self.request_timeout):
                        await self.raft.wait_applied(index)
                except TimeoutError:
                    raise errors.ERR_TIMEOUT() from None
            return store.auth_info_from_token(token)
        if cert_cn and self.client_cert_auth:
            return AuthInfo(cert_cn, store.revision)
        return None

    def check_admin(self, who: AuthInfo | None) -> None:
        """etcd's ``IsAdminPermitted`` (passes while auth is disabled)."""
        self.applier.auth.is_admin_permitted(who)

    def check_read(self, who: AuthInfo | None, key: bytes, range_end: bytes) -> None:
        """etcd's ``IsRangePermitted`` (passes while auth is disabled)."""
        self.applier.auth.is_range_permitted(who, key, range_end)

    def check_authenticated(self, who: AuthInfo | None) -> None:
        """etcd's ``requireAuthInfo``: any known caller while auth is enabled."""
        if self.applier.auth.enabled and who is None:
            raise errors.ERR_USER_EMPTY()

    # -- the Auth service ------------------------------------------------------------------

    async def authenticate(self, req: pb.AuthenticateRequest) -> pb.AuthenticateResponse:
        # Not fenced: an operator must be able to authenticate to a fenced member to look at
        # it (Status) and repair it; the token itself is assigned through Raft.
        store = self.applier.auth
        await asyncio.to_thread(store.check_password, req.name, req.password)
        body = encode_authenticate(req.name, store.tokens.gen_token_prefix())
        resp: pb.AuthenticateResponse = await self.proposer.propose(RequestKind.AUTHENTICATE, body)
        return resp

    async def _change(self, kind: RequestKind, body: bytes, who: AuthInfo | None) -> object:
        self.fence.check_voter()
        return await self.proposer.propose(kind, body, who)

    async def enable(self, who: AuthInfo | None) -> object:
        return await self._change(RequestKind.AUTH_ENABLE, b"", who)

    async def disable(self, who: AuthInfo | None) -> object:
        return await self._change(RequestKind.AUTH_DISABLE, b"", who)

    async def user_add(self, req: pb.AuthUserAddRequest, who: AuthInfo | None) -> object:
        no_password = req.HasField("options") and req.options.no_password
        hashed = await asyncio.to_thread(
            hashed_for_user_add, req.password, no_password, self.bcrypt_cost
        )
        entry = pb.AuthUserAddRequest(name=req.name, hashedPassword=hashed)
        if req.HasField("options"):
            entry.options.CopyFrom(req.options)
        return await self._change(RequestKind.AUTH_USER_ADD, entry.SerializeToString(), who)

    async def user_change_password(
        self, req: pb.AuthUserChangePasswordRequest, who: AuthInfo | None
    ) -> object:
        hashed = await asyncio.to_thread(hashed_for_change_password, req.password, self.bcrypt_cost)
        entry = pb.AuthUserChangePasswordRequest(name=req.name, hashedPassword=hashed)
        return await self._change(
            RequestKind.AUTH_USER_CHANGE_PASSWORD, entry.SerializeToString(), who
        )

    async def user_delete(self, req: pb.AuthUserDeleteRequest, who: AuthInfo | None) -> object:
        return await self._forward(RequestKind.AUTH_USER_DELETE, req, who)

    async def user_grant_role(
        self, req: pb.AuthUserGrantRoleRequest, who: AuthInfo | None
    ) -> object:
        return await self._forward(RequestKind.AUTH_USER_GRANT_ROLE, req, who)

    async def user_revoke_role(
        self, req: pb.AuthUserRevokeRoleRequest, who: AuthInfo | None
    ) -> object:
        return await self._forward(RequestKind.AUTH_USER_REVOKE_ROLE, req, who)

    async def role_add(self, req: pb.AuthRoleAddRequest, who: AuthInfo | None) -> object:
        return await self._forward(RequestKind.AUTH_ROLE_ADD, req, who)

    async def role_delete(self, req: pb.AuthRoleDeleteRequest, who: AuthInfo | None) -> object:
        return await self._forward(RequestKind.AUTH_ROLE_DELETE, req, who)

    async def role_grant_permission(
        self, req: pb.AuthRoleGrantPermissionRequest, who: AuthInfo | None
    ) -> object:
        return await self._forward(RequestKind.AUTH_ROLE_GRANT_PERMISSION, req, who)

    async def role_revoke_permission(
        self, req: pb.AuthRoleRevokePermissionRequest, who: AuthInfo | None
    ) -> object:
        return await self._forward(RequestKind.AUTH_ROLE_REVOKE_PERMISSION, req, who)

    async def _forward(self, kind: RequestKind, req: Message, who: AuthInfo | None) -> object:
        """A change whose entry is the request as the client sent it."""
        return await self._change(kind, req.SerializeToString(), who)

    async def _read(self) -> None:
        self.fence.check()
        await self.barrier.wait()

    async def status(self, who: AuthInfo | None) -> pb.AuthStatusResponse:
        await self._read()
        self.check_admin(who)
        status = self.applier.auth.status()
        return pb.AuthStatusResponse(
            header=self.header(), enabled=status.enabled, authRevision=status.revision
        )

    async def user_get(self, name: str, who: AuthInfo | None) -> pb.AuthUserGetResponse:
        await self._read()
        store = self.applier.auth
        store.check_user_get(who, name)
        return pb.AuthUserGetResponse(header=self.header(), roles=store.user_get(name))

    async def user_list(self, who: AuthInfo | None) -> pb.AuthUserListResponse:
        await self._read()
        self.check_admin(who)
        return pb.AuthUserListResponse(header=self.header(), users=self.applier.auth.user_list())

    async def role_get(self, role: str, who: AuthInfo | None) -> pb.AuthRoleGetResponse:
        await self._read()
        store = self.applier.auth
        store.check_role_get(who, role)
        return pb.AuthRoleGetResponse(header=self.header(), perm=store.role_get(role))

    async def role_list(self, who: AuthInfo | None) -> pb.AuthRoleListResponse:
        await self._read()
        self.check_admin(who)
        return pb.AuthRoleListResponse(header=self.header(), roles=self.applier.auth.role_list())
