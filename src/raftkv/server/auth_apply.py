"""Auth at apply: the handlers of the auth requests and the permission checks of the others
(etcd's ``authApplierV3``).

Owns: one handler per auth request kind, and ``request_checks``: for each kind whose effect
depends on who asked, the check run against the entry's user and auth revision (format 2 of
``raftkv.server.requests``) before its handler, while auth is enabled.

Contracts:
- a check reads only replicated state (the auth store, the lessor), so every member gives the
  entry the same answer at the same index: a permission revoked at index N refuses every
  request applied after N on every member, whatever the member saw when it was proposed;
- a refused request takes no effect and answers etcd's error (``permission denied``,
  ``user name is empty``, ``revision of auth store is old``);
- passwords arrive hashed (the proposer hashed them): apply never runs bcrypt or reads a clock;
  the simple token an AUTHENTICATE entry assigns is the proposer's prefix plus the entry's
  index, the same on every member.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from raftkv import errors
from raftkv.auth.store import AuthStore
from raftkv.auth.tokens import AuthInfo
from raftkv.lease.lessor import Lessor
from raftkv.mvcc.write_batch import WriteBatch
from raftkv.proto import rpc_pb2 as pb
from raftkv.server.requests import RequestKind

if TYPE_CHECKING:
    from raftkv.server.applier import Applier, Handler

Check = Callable[[bytes, AuthInfo | None], None]


def encode_authenticate(name: str, simple_token_prefix: str) -> bytes:
    """The body of an AUTHENTICATE entry (etcd's ``InternalAuthenticateRequest``, without the
    password: the proposer checked it)."""
    return json.dumps({"name": name, "simple_token": simple_token_prefix}).encode()


def check_put(store: AuthStore, lessor: Lessor, req: pb.PutRequest, who: AuthInfo | None) -> None:
    """etcd's ``checkPutAuth``: write on the key, on every key of the lease it attaches (a
    user who could not revoke that lease must not extend it), read for ``prev_kv``."""
    store.is_put_permitted(who, req.key)
    check_lease_keys(store, lessor, req.lease, who)
    if req.prev_kv:
        store.is_range_permitted(who, req.key, b"")


def check_lease_keys(store: AuthStore, lessor: Lessor, lease_id: int, who: AuthInfo | None) -> None:
    """etcd's ``checkLeasePuts``: write on every key attached to the lease (root: always)."""
    lease = lessor.lookup(lease_id) if lease_id else None
    if lease is None or (who is not None and store.is_admin(who.username)):
        return
    attached = lease.keys()  # Lease.keys(): the attached keys, sorted
    for key in attached:
        store.is_put_permitted(who, key)


def check_delete(store: AuthStore, req: pb.DeleteRangeRequest, who: AuthInfo | None) -> None:
    store.is_delete_range_permitted(who, req.key, req.range_end)
    if req.prev_kv:
        store.is_range_permitted(who, req.key, req.range_end)


def check_txn(store: AuthStore, lessor: Lessor, req: pb.TxnRequest, who: AuthInfo | None) -> None:
    """etcd's ``checkTxnAuth``: read on every compared key, and each operation's own check,
    nested transactions included."""
    for c in req.compare:
        store.is_range_permitted(who, c.key, c.range_end)
    for op in (*req.success, *req.failure):
        which = op.WhichOneof("request")
        if which == "request_range":
            store.is_range_permitted(who, op.request_range.key, op.request_range.range_end)
        elif which == "request_put":
            check_put(store, lessor, op.request_put, who)
        elif which == "request_delete_range":
            check_delete(store, op.request_delete_range, who)
        elif which == "request_txn":
            check_txn(store, lessor, op.request_txn, who)


def request_checks(a: Applier) -> dict[RequestKind, Check]:
    """The check of every kind that depends on who asked (see the module contract).  The
    store is looked up at each call: a backend swap (snapshot, repair) replaces it."""

    def admin(_body: bytes, who: AuthInfo | None) -> None:
        a.auth.is_admin_permitted(who)

    checks: dict[RequestKind, Check] = {
        RequestKind.PUT: lambda body, who: check_put(
            a.auth, a.lessor, pb.PutRequest.FromString(body), who
        ),
        RequestKind.DELETE_RANGE: lambda body, who: check_delete(
            a.auth, pb.DeleteRangeRequest.FromString(body), who
        ),
        RequestKind.TXN: lambda body, who: check_txn(
            a.auth, a.lessor, pb.TxnRequest.FromString(body), who
        ),
        RequestKind.LEASE_REVOKE: lambda body, who: check_lease_keys(
            a.auth, a.lessor, pb.LeaseRevokeRequest.FromString(body).ID, who
        ),
    }
    for kind in auth_handlers(a):
        if kind is not RequestKind.AUTHENTICATE:
            checks[kind] = admin
    return checks


def auth_handlers(a: Applier) -> dict[RequestKind, Handler]:
    """The handler of every auth request kind (the store looked up at each call)."""

    def recorder() -> Any:
        return a.digest.recorder

    def enable(batch: WriteBatch, body: bytes, index: int) -> Any:
        a.auth.auth_enable(batch.tx, recorder())
        return pb.AuthEnableResponse(header=a.header(batch.revision))

    def disable(batch: WriteBatch, body: bytes, index: int) -> Any:
        a.auth.auth_disable(batch.tx, recorder())
        return pb.AuthDisableResponse(header=a.header(batch.revision))

    def authenticate(batch: WriteBatch, body: bytes, index: int) -> Any:
        req = json.loads(body)
        token = a.auth.authenticate(req["name"], index=index, prefix=req["simple_token"])
        return pb.AuthenticateResponse(header=a.header(batch.revision), token=token)

    def user_add(batch: WriteBatch, body: bytes, index: int) -> Any:
        req = pb.AuthUserAddRequest.FromString(body)
        a.auth.user_add(
            batch.tx,
            recorder(),
            req.name,
            req.hashedPassword,
            no_password=req.HasField("options") and req.options.no_password,
        )
        return pb.AuthUserAddResponse(header=a.header(batch.revision))

    def user_delete(batch: WriteBatch, body: bytes, index: int) -> Any:
        a.auth.user_delete(batch.tx, recorder(), pb.AuthUserDeleteRequest.FromString(body).name)
        return pb.AuthUserDeleteResponse(header=a.header(batch.revision))

    def user_change_password(batch: WriteBatch, body: bytes, index: int) -> Any:
        req = pb.AuthUserChangePasswordRequest.FromString(body)
        a.auth.user_change_password(batch.tx, recorder(), req.name, req.hashedPassword)
        return pb.AuthUserChangePasswordResponse(header=a.header(batch.revision))

    def user_grant_role(batch: WriteBatch, body: bytes, index: int) -> Any:
        req = pb.AuthUserGrantRoleRequest.FromString(body)
        a.auth.user_grant_role(batch.tx, recorder(), req.user, req.role)
        return pb.AuthUserGrantRoleResponse(header=a.header(batch.revision))

    def user_revoke_role(batch: WriteBatch, body: bytes, index: int) -> Any:
        req = pb.AuthUserRevokeRoleRequest.FromString(body)
        a.auth.user_revoke_role(batch.tx, recorder(), req.name, req.role)
        return pb.AuthUserRevokeRoleResponse(header=a.header(batch.revision))

    def role_add(batch: WriteBatch, body: bytes, index: int) -> Any:
        a.auth.role_add(batch.tx, recorder(), pb.AuthRoleAddRequest.FromString(body).name)
        return pb.AuthRoleAddResponse(header=a.header(batch.revision))

    def role_delete(batch: WriteBatch, body: bytes, index: int) -> Any:
        a.auth.role_delete(batch.tx, recorder(), pb.AuthRoleDeleteRequest.FromString(body).role)
        return pb.AuthRoleDeleteResponse(header=a.header(batch.revision))

    def role_grant_permission(batch: WriteBatch, body: bytes, index: int) -> Any:
        req = pb.AuthRoleGrantPermissionRequest.FromString(body)
        perm = req.perm if req.HasField("perm") else None
        a.auth.role_grant_permission(batch.tx, recorder(), req.name, perm)
        return pb.AuthRoleGrantPermissionResponse(header=a.header(batch.revision))

    def role_revoke_permission(batch: WriteBatch, body: bytes, index: int) -> Any:
        req = pb.AuthRoleRevokePermissionRequest.FromString(body)
        a.auth.role_revoke_permission(batch.tx, recorder(), req.role, req.key, req.range_end)
        return pb.AuthRoleRevokePermissionResponse(header=a.header(batch.revision))

    table: dict[RequestKind, Handler] = {
        RequestKind.AUTH_ENABLE: enable,
        RequestKind.AUTH_DISABLE: disable,
        RequestKind.AUTHENTICATE: authenticate,
        RequestKind.AUTH_USER_ADD: user_add,
        RequestKind.AUTH_USER_DELETE: user_delete,
        RequestKind.AUTH_USER_CHANGE_PASSWORD: user_change_password,
        RequestKind.AUTH_USER_GRANT_ROLE: user_grant_role,
        RequestKind.AUTH_USER_REVOKE_ROLE: user_revoke_role,
        RequestKind.AUTH_ROLE_ADD: role_add,
        RequestKind.AUTH_ROLE_DELETE: role_delete,
        RequestKind.AUTH_ROLE_GRANT_PERMISSION: role_grant_permission,
        RequestKind.AUTH_ROLE_REVOKE_PERMISSION: role_revoke_permission,
    }
    return {kind: _answering(handler) for kind, handler in table.items()}


def _answering(handler: Handler) -> Handler:
    """A refusal of the auth store (raised before it wrote anything) is the entry's answer."""

    def answering(batch: WriteBatch, body: bytes, index: int) -> Any:
        try:
            return handler(batch, body, index)
        except errors.EtcdError as exc:
            return exc

    return answering
