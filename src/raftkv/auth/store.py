"""The replicated auth state: the enabled flag, the auth revision, users and roles (etcd 3.5's
``authStore``, ``server/auth/store.go``), as applied from committed entries, and the checks
made against it.

Owns: the ``auth`` bucket of the backend, the apply-time rules of every auth request and the
permission checks.  Layout of the bucket (etcd keeps three buckets; the names are its)::

    b"authEnabled"        -> b"\\x01" enabled, b"\\x00" disabled (absent: disabled)
    b"authRevision"       -> u64 big-endian (absent: 1)
    b"authUsers/" + name  -> authpb.User  (name, bcrypt hash, roles sorted, options)
    b"authRoles/" + name  -> authpb.Role  (name, permissions sorted by key)

Values are etcd's own protobuf encodings (byte-identical to what etcd stores), so an export
copies them into etcd's ``authUsers`` / ``authRoles`` buckets as they are.

Contracts:
- apply methods (``auth_enable`` ... ``role_revoke_permission``) run inside an apply batch:
  ``tx`` is its write transaction and ``rec`` the entry's ``EffectRecorder``; each write goes
  to both, in the order etcd writes.  A refused request raises etcd's error (``raftkv.errors``)
  before writing anything.  Every change bumps the auth revision, as etcd's, except
  ``auth_enable`` (etcd does not) and requests that change nothing (enabling twice, granting a
  role the user has), which write nothing;
- deterministic: they read only replicated state, never a clock or randomness (passwords arrive
  hashed, see ``raftkv.auth.passwords``), and iterate in key order;
- etcd writes ``authRevision = 1`` when it first opens a backend; raftkv writes nothing outside
  apply, so an absent revision reads as 1 and the first change writes 2, as in etcd;
- the in-memory copy follows every apply method at once: after an aborted batch or a backend
  swap, ``load`` again.  Not thread-safe: one thread applies and checks;
- tokens are member-local: the store tells its ``TokenProvider`` about enable, disable, and
  users whose tokens die (deletion, password change), as etcd's store does.
"""

from __future__ import annotations

import hashlib
import struct
from bisect import bisect_left
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TypeVar

from google.protobuf.message import DecodeError

from raftkv import errors
from raftkv.auth.passwords import DEFAULT_COST, check_password, decode_hash, effective_cost
from raftkv.auth.permissions import (
    Grant,
    PermType,
    RangePermissions,
    is_valid_permission_range,
)
from raftkv.auth.tokens import AuthInfo, NopTokenProvider, TokenProvider
from raftkv.guard.digest import EffectRecorder
from raftkv.mvcc.backend import BUCKET_AUTH, Backend, WriteTxn
from raftkv.proto import auth_pb2

ROOT_USER = "root"
ROOT_ROLE = "root"
K_ENABLED = b"authEnabled"
K_REVISION = b"authRevision"
USERS_PREFIX = b"authUsers/"
ROLES_PREFIX = b"authRoles/"
INITIAL_REVISION = 1
_ON, _OFF = b"\x01", b"\x00"
_U64 = struct.Struct(">Q")
_U32 = struct.Struct(">I")
_DIGEST_MAGIC = b"raftkv/auth/v1"

ADMIN_REQUESTS = frozenset(
    (
        "auth_enable",
        "auth_disable",
        "auth_status",
        "auth_user_add",
        "auth_user_delete",
        "auth_user_change_password",
        "auth_user_grant_role",
        "auth_user_revoke_role",
        "auth_role_add",
        "auth_role_grant_permission",
        "auth_role_revoke_permission",
        "auth_role_delete",
        "auth_user_list",
        "auth_role_list",
    )
)
"""etcd's ``needAdminPermission``: the ``InternalRaftRequest`` fields only root may send."""


def needs_admin_permission(request: str) -> bool:
    """Whether the request named by its ``InternalRaftRequest`` field (``auth_user_add``...)
    needs the root role while auth is enabled (UserGet and RoleGet have their own rules:
    ``check_user_get``, ``check_role_get``)."""
    return request in ADMIN_REQUESTS


@dataclass(frozen=True)
class AuthStatus:
    """What AuthStatus answers."""

    enabled: bool
    revision: int


def _has_root_role(user: auth_pb2.User) -> bool:
    """etcd's ``hasRootRole``: a binary search of the (sorted) roles."""
    roles = list(user.roles)
    i = bisect_left(roles, ROOT_ROLE)
    return i < len(roles) and roles[i] == ROOT_ROLE


def _no_password(user: auth_pb2.User) -> bool:
    return user.HasField("options") and user.options.no_password


def _with_roles(user: auth_pb2.User, roles: list[str]) -> auth_pb2.User:
    """``user`` with ``roles`` instead of its own (name, password, options kept)."""
    out = auth_pb2.User(name=user.name, password=user.password, roles=roles)
    if user.HasField("options"):
        out.options.CopyFrom(user.options)
    return out


class AuthStore:
    """The auth state of one member's backend."""

    def __init__(
        self,
        backend: Backend,
        tokens: TokenProvider | None = None,
        *,
        bcrypt_cost: int = DEFAULT_COST,
    ) -> None:
        """Load the state of ``backend``; ``bcrypt_cost`` is ``--bcrypt-cost`` (a value etcd
        would not take becomes the default, as in etcd)."""
        self.tokens: TokenProvider = tokens if tokens is not None else NopTokenProvider()
        self.bcrypt_cost = effective_cost(bcrypt_cost)
        self._enabled = False
        self._revision = INITIAL_REVISION
        self._users: dict[bytes, auth_pb2.User] = {}
        self._roles: dict[bytes, auth_pb2.Role] = {}
        self._perms: dict[bytes, RangePermissions] = {}
        self.load(backend)

    def load(self, backend: Backend) -> None:
        """(Re)read everything from ``backend`` (unknown keys are ignored)."""
        enabled, revision = False, INITIAL_REVISION
        users: dict[bytes, auth_pb2.User] = {}
        roles: dict[bytes, auth_pb2.Role] = {}
        for key, value in backend.items(BUCKET_AUTH):
            try:
                if key == K_ENABLED:
                    enabled = value == _ON
                elif key == K_REVISION:
                    (revision,) = _U64.unpack(value)
                elif key.startswith(USERS_PREFIX):
                    users[key[len(USERS_PREFIX) :]] = auth_pb2.User.FromString(value)
                elif key.startswith(ROLES_PREFIX):
                    roles[key[len(ROLES_PREFIX) :]] = auth_pb2.Role.FromString(value)
            except (DecodeError, struct.error) as exc:
                raise ValueError(f"auth bucket key {key!r}: {exc}") from exc
        self._enabled, self._revision, self._users, self._roles = enabled, revision, users, roles
        self._perms = {}
        if enabled:
            self.tokens.enable()
        else:
            self.tokens.disable()

    # -- reading --------------------------------------------------------------------------

    @property
    def enabled(self) -> bool:
        return self._enabled

    @property
    def revision(self) -> int:
        return self._revision

    def status(self) -> AuthStatus:
        return AuthStatus(self._enabled, self._revision)

    def user(self, name: str) -> auth_pb2.User | None:
        """A copy of the stored record of user ``name``; None if there is none."""
        user = self._users.get(name.encode())
        return None if user is None else _copy(user)

    def role(self, name: str) -> auth_pb2.Role | None:
        """A copy of the stored record of role ``name``; None if there is none."""
        role = self._roles.get(name.encode())
        return None if role is None else _copy(role)

    def user_get(self, name: str) -> list[str]:
        """UserGet: the user's roles; raises ``ERR_USER_NOT_FOUND``."""
        user = self._users.get(name.encode())
        if user is None:
            raise errors.ERR_USER_NOT_FOUND()
        return list(user.roles)

    def user_list(self) -> list[str]:
        """UserList: every user name, in key order."""
        return [self._users[k].name.decode() for k in sorted(self._users)]

    def role_get(self, name: str) -> list[auth_pb2.Permission]:
        """RoleGet: copies of the role's permissions as stored; raises ``ERR_ROLE_NOT_FOUND``."""
        role = self._roles.get(name.encode())
        if role is None:
            raise errors.ERR_ROLE_NOT_FOUND()
        return [_copy(p) for p in role.keyPermission]

    def role_list(self) -> list[str]:
        """RoleList: every role name, in key order."""
        return [self._roles[k].name.decode() for k in sorted(self._roles)]

    def has_role(self, user: str, role: str) -> bool:
        """etcd's ``HasRole``: False for an unknown user."""
        record = self._users.get(user.encode())
        return record is not None and role in record.roles

    def is_admin(self, user: str) -> bool:
        """Whether ``user`` exists and holds the root role."""
        record = self._users.get(user.encode())
        return record is not None and _has_root_role(record)

    # -- checks (etcd's isOpPermitted and friends; all pass while auth is disabled) --------

    def check(
        self, info: AuthInfo | None, key: bytes, range_end: bytes, perm_type: PermType
    ) -> None:
        """etcd's ``isOpPermitted`` for a request of ``info`` (None: no token) on ``(key,
        range_end)``; raises ``ERR_USER_EMPTY`` (no user), ``ERR_AUTH_OLD_REVISION`` (the
        token predates the current auth revision) or ``ERR_PERMISSION_DENIED``."""
        if not self._enabled:
            return
        username, revision = info if info is not None else ("", 0)
        if revision == 0:
            raise errors.ERR_USER_EMPTY()
        if revision < self._revision:
            raise errors.ERR_AUTH_OLD_REVISION()
        name = username.encode()
        user = self._users.get(name)
        if user is None:
            raise errors.ERR_PERMISSION_DENIED()
        if _has_root_role(user) or self._range_permissions(name, user).is_permitted(
            key, range_end, perm_type
        ):
            return
        raise errors.ERR_PERMISSION_DENIED()

    def is_put_permitted(self, info: AuthInfo | None, key: bytes) -> None:
        self.check(info, key, b"", PermType.WRITE)

    def is_range_permitted(self, info: AuthInfo | None, key: bytes, range_end: bytes) -> None:
        self.check(info, key, range_end, PermType.READ)

    def is_delete_range_permitted(
        self, info: AuthInfo | None, key: bytes, range_end: bytes
    ) -> None:
        self.check(info, key, range_end, PermType.WRITE)

    def is_admin_permitted(self, info: AuthInfo | None) -> None:
        """etcd's ``IsAdminPermitted``; raises ``ERR_USER_EMPTY``, ``ERR_USER_NOT_FOUND`` or
        ``ERR_PERMISSION_DENIED`` (no auth revision check, as in etcd)."""
        if not self._enabled:
            return
        if info is None or not info.username:
            raise errors.ERR_USER_EMPTY()
        user = self._users.get(info.username.encode())
        if user is None:
            raise errors.ERR_USER_NOT_FOUND()
        if not _has_root_role(user):
            raise errors.ERR_PERMISSION_DENIED()

    def check_user_get(self, info: AuthInfo | None, name: str) -> None:
        """UserGet's rule: root, or the user asking about itself."""
        try:
            self.is_admin_permitted(info)
        except errors.EtcdError:
            if info is None or info.username != name:
                raise

    def check_role_get(self, info: AuthInfo | None, role: str) -> None:
        """RoleGet's rule: root, or a user holding the role."""
        try:
            self.is_admin_permitted(info)
        except errors.EtcdError:
            if not self.has_role(info.username if info is not None else "", role):
                raise

    def check_password(self, name: str, password: str) -> int:
        """etcd's ``CheckPassword`` (Authenticate, before proposing): the auth revision the
        check saw; raises ``ERR_AUTH_NOT_ENABLED``, ``ERR_AUTH_FAILED`` or
        ``ERR_NO_PASSWORD_USER``.  Slow (bcrypt): keep it off the apply path."""
        if not self._enabled:
            raise errors.ERR_AUTH_NOT_ENABLED()
        user = self._users.get(name.encode())
        if user is None:
            raise errors.ERR_AUTH_FAILED()
        if _no_password(user):
            raise errors.ERR_NO_PASSWORD_USER()
        revision = self._revision
        if not check_password(user.password, password):
            raise errors.ERR_AUTH_FAILED()
        return revision

    def authenticate(self, name: str, *, index: int, prefix: str) -> str:
        """etcd's ``Authenticate`` at apply (no state change): a token for ``name`` from the
        entry at ``index`` carrying the simple-token ``prefix``; raises
        ``ERR_AUTH_NOT_ENABLED``, ``ERR_AUTH_FAILED`` or the provider's error."""
        if not self._enabled:
            raise errors.ERR_AUTH_NOT_ENABLED()
        user = self._users.get(name.encode())
        if user is None or _no_password(user):
            raise errors.ERR_AUTH_FAILED()
        return self.tokens.assign(name, self._revision, index=index, prefix=prefix)

    def auth_info_from_token(self, token: str | None) -> AuthInfo | None:
        """etcd's ``AuthInfoFromCtx`` given the request's ``token`` (or ``authorization``)
        metadata: None when auth is disabled or no token came; raises
        ``ERR_INVALID_AUTH_TOKEN``.  A simple token's index must have been applied first."""
        if not self._enabled or token is None:
            return None
        info = self.tokens.info(token.removeprefix("Bearer "), self._revision)
        if info is None:
            raise errors.ERR_INVALID_AUTH_TOKEN()
        return info

    def _range_permissions(self, name: bytes, user: auth_pb2.User) -> RangePermissions:
        perms = self._perms.get(name)
        if perms is None:
            perms = RangePermissions(self._grants(user))
            self._perms[name] = perms
        return perms

    def _grants(self, user: auth_pb2.User) -> Iterator[Grant]:
        for role_name in user.roles:
            role = self._roles.get(role_name.encode())
            if role is not None:
                for p in role.keyPermission:
                    yield Grant(p.permType, p.key, p.range_end)

    # -- applying (inside an apply batch; ``tx`` is its write transaction) ---------------

    def auth_enable(self, tx: WriteTxn, rec: EffectRecorder) -> None:
        """AuthEnable: needs user root holding role root; a no-op when enabled already."""
        if self._enabled:
            return
        root = self._users.get(ROOT_USER.encode())
        if root is None:
            raise errors.ERR_ROOT_USER_NOT_EXIST()
        if not _has_root_role(root):
            raise errors.ERR_ROOT_ROLE_NOT_EXIST()
        self._put(tx, rec, K_ENABLED, _ON)
        self._enabled = True
        self.tokens.enable()

    def auth_disable(self, tx: WriteTxn, rec: EffectRecorder) -> None:
        """AuthDisable: a no-op when disabled already; every token dies."""
        if not self._enabled:
            return
        self._put(tx, rec, K_ENABLED, _OFF)
        self._commit_revision(tx, rec)
        self._enabled = False
        self.tokens.disable()

    def user_add(
        self,
        tx: WriteTxn,
        rec: EffectRecorder,
        name: str,
        hashed_password: str = "",
        *,
        no_password: bool = False,
    ) -> None:
        """UserAdd with the entry's base64 ``hashed_password`` (ignored for a ``no_password``
        user); raises ``ERR_USER_EMPTY``, ``ERR_USER_ALREADY_EXIST``, ``ERR_NO_PASSWORD_USER``
        (not base64)."""
        if not name:
            raise errors.ERR_USER_EMPTY()
        key = name.encode()
        if key in self._users:
            raise errors.ERR_USER_ALREADY_EXIST()
        password = b""
        if not no_password:
            decoded = decode_hash(hashed_password)
            if decoded is None:
                raise errors.ERR_NO_PASSWORD_USER()
            password = decoded
        user = auth_pb2.User(
            name=key, password=password, options=auth_pb2.UserAddOptions(no_password=no_password)
        )
        self._put_user(tx, rec, user)
        self._commit_revision(tx, rec)

    def user_delete(self, tx: WriteTxn, rec: EffectRecorder, name: str) -> None:
        """UserDelete; raises ``ERR_INVALID_AUTH_MGMT`` (root while enabled),
        ``ERR_USER_NOT_FOUND``.  The user's tokens die."""
        if self._enabled and name == ROOT_USER:
            raise errors.ERR_INVALID_AUTH_MGMT()
        key = name.encode()
        if key not in self._users:
            raise errors.ERR_USER_NOT_FOUND()
        self._delete(tx, rec, USERS_PREFIX + key)
        del self._users[key]
        self._commit_revision(tx, rec)
        self.tokens.invalidate_user(name)

    def user_change_password(
        self, tx: WriteTxn, rec: EffectRecorder, name: str, hashed_password: str
    ) -> None:
        """UserChangePassword with the entry's base64 ``hashed_password`` (``""``: an empty
        hash nothing matches; a no-password user keeps none); raises ``ERR_USER_NOT_FOUND``,
        ``ERR_NO_PASSWORD_USER`` (not base64).  The user's tokens die."""
        user = self._users.get(name.encode())
        if user is None:
            raise errors.ERR_USER_NOT_FOUND()
        password = b""
        if not _no_password(user):
            decoded = decode_hash(hashed_password)
            if decoded is None:
                raise errors.ERR_NO_PASSWORD_USER()
            password = decoded
        updated = auth_pb2.User(name=name.encode(), roles=user.roles, password=password)
        if user.HasField("options"):
            updated.options.CopyFrom(user.options)
        self._put_user(tx, rec, updated)
        self._commit_revision(tx, rec)
        self.tokens.invalidate_user(name)

    def user_grant_role(self, tx: WriteTxn, rec: EffectRecorder, user: str, role: str) -> None:
        """UserGrantRole; role ``root`` need not exist.  Raises ``ERR_USER_NOT_FOUND``,
        ``ERR_ROLE_NOT_FOUND``; granting a role the user holds changes nothing."""
        record = self._users.get(user.encode())
        if record is None:
            raise errors.ERR_USER_NOT_FOUND()
        if role != ROOT_ROLE and role.encode() not in self._roles:
            raise errors.ERR_ROLE_NOT_FOUND()
        roles = list(record.roles)
        i = bisect_left(roles, role)
        if i < len(roles) and roles[i] == role:
            return
        self._put_user(tx, rec, _with_roles(record, sorted([*roles, role])))
        self._commit_revision(tx, rec)

    def user_revoke_role(self, tx: WriteTxn, rec: EffectRecorder, name: str, role: str) -> None:
        """UserRevokeRole; raises ``ERR_INVALID_AUTH_MGMT`` (root from root while enabled),
        ``ERR_USER_NOT_FOUND``, ``ERR_ROLE_NOT_GRANTED``."""
        if self._enabled and name == ROOT_USER and role == ROOT_ROLE:
            raise errors.ERR_INVALID_AUTH_MGMT()
        user = self._users.get(name.encode())
        if user is None:
            raise errors.ERR_USER_NOT_FOUND()
        kept = [r for r in user.roles if r != role]
        if len(kept) == len(user.roles):
            raise errors.ERR_ROLE_NOT_GRANTED()
        self._put_user(tx, rec, _with_roles(user, kept))
        self._commit_revision(tx, rec)

    def role_add(self, tx: WriteTxn, rec: EffectRecorder, name: str) -> None:
        """RoleAdd (``root`` is a role like any other); raises ``ERR_ROLE_EMPTY``,
        ``ERR_ROLE_ALREADY_EXIST``."""
        if not name:
            raise errors.ERR_ROLE_EMPTY()
        if name.encode() in self._roles:
            raise errors.ERR_ROLE_ALREADY_EXIST()
        self._put_role(tx, rec, auth_pb2.Role(name=name.encode()))
        self._commit_revision(tx, rec)

    def role_delete(self, tx: WriteTxn, rec: EffectRecorder, name: str) -> None:
        """RoleDelete, revoking the role from every user holding it; raises
        ``ERR_INVALID_AUTH_MGMT`` (root while enabled), ``ERR_ROLE_NOT_FOUND``."""
        if self._enabled and name == ROOT_ROLE:
            raise errors.ERR_INVALID_AUTH_MGMT()
        key = name.encode()
        if key not in self._roles:
            raise errors.ERR_ROLE_NOT_FOUND()
        self._delete(tx, rec, ROLES_PREFIX + key)
        del self._roles[key]
        for user_key in sorted(self._users):
            user = self._users[user_key]
            kept = [r for r in user.roles if r != name]
            if len(kept) != len(user.roles):
                self._put_user(tx, rec, _with_roles(user, kept))
        self._commit_revision(tx, rec)

    def role_grant_permission(
        self, tx: WriteTxn, rec: EffectRecorder, name: str, perm: auth_pb2.Permission | None
    ) -> None:
        """RoleGrantPermission: a permission with the key and range end of one the role has
        replaces its type, else it is added (kept sorted by key); raises
        ``ERR_PERMISSION_NOT_GIVEN``, ``ERR_INVALID_AUTH_MGMT`` (not a valid range),
        ``ERR_ROLE_NOT_FOUND``."""
        if perm is None:
            raise errors.ERR_PERMISSION_NOT_GIVEN()
        if not is_valid_permission_range(perm.key, perm.range_end):
            raise errors.ERR_INVALID_AUTH_MGMT()
        role = self._roles.get(name.encode())
        if role is None:
            raise errors.ERR_ROLE_NOT_FOUND()
        perms = [_copy(p) for p in role.keyPermission]
        i = bisect_left([p.key for p in perms], perm.key)
        if i < len(perms) and perms[i].key == perm.key and perms[i].range_end == perm.range_end:
            perms[i].permType = perm.permType
        else:
            new = auth_pb2.Permission(
                permType=perm.permType, key=perm.key, range_end=perm.range_end
            )
            perms = sorted([*perms, new], key=lambda p: p.key)  # stable, as Go's for <= 12
        self._put_role(tx, rec, auth_pb2.Role(name=role.name, keyPermission=perms))
        self._commit_revision(tx, rec)

    def role_revoke_permission(
        self, tx: WriteTxn, rec: EffectRecorder, role: str, key: bytes, range_end: bytes
    ) -> None:
        """RoleRevokePermission of every permission on exactly ``(key, range_end)``; raises
        ``ERR_ROLE_NOT_FOUND``, ``ERR_PERMISSION_NOT_GRANTED``."""
        record = self._roles.get(role.encode())
        if record is None:
            raise errors.ERR_ROLE_NOT_FOUND()
        kept = [_copy(p) for p in record.keyPermission if p.key != key or p.range_end != range_end]
        if len(kept) == len(record.keyPermission):
            raise errors.ERR_PERMISSION_NOT_GRANTED()
        self._put_role(tx, rec, auth_pb2.Role(name=record.name, keyPermission=kept))
        self._commit_revision(tx, rec)

    def _put_user(self, tx: WriteTxn, rec: EffectRecorder, user: auth_pb2.User) -> None:
        self._put(tx, rec, USERS_PREFIX + user.name, user.SerializeToString(deterministic=True))
        self._users[user.name] = user

    def _put_role(self, tx: WriteTxn, rec: EffectRecorder, role: auth_pb2.Role) -> None:
        self._put(tx, rec, ROLES_PREFIX + role.name, role.SerializeToString(deterministic=True))
        self._roles[role.name] = role

    def _commit_revision(self, tx: WriteTxn, rec: EffectRecorder) -> None:
        self._revision += 1
        self._put(tx, rec, K_REVISION, _U64.pack(self._revision))

    def _put(self, tx: WriteTxn, rec: EffectRecorder, key: bytes, value: bytes) -> None:
        tx.put(BUCKET_AUTH, key, value)
        rec.auth(key, value)
        self._perms = {}

    def _delete(self, tx: WriteTxn, rec: EffectRecorder, key: bytes) -> None:
        tx.delete(BUCKET_AUTH, key)
        rec.auth(key, None)
        self._perms = {}

    # -- the whole state, canonical ------------------------------------------------------

    def records(self) -> list[tuple[bytes, bytes]]:
        """The state as ``auth``-bucket records, sorted by key, the flag and the revision
        always present (absent ones at their defaults): equal on members whose states are."""
        out = [
            (K_ENABLED, _ON if self._enabled else _OFF),
            (K_REVISION, _U64.pack(self._revision)),
        ]
        out += [
            (USERS_PREFIX + k, u.SerializeToString(deterministic=True))
            for k, u in self._users.items()
        ]
        out += [
            (ROLES_PREFIX + k, r.SerializeToString(deterministic=True))
            for k, r in self._roles.items()
        ]
        return sorted(out)

    @property
    def pristine(self) -> bool:
        """Auth was never used: the initial state (never enabled, no users or roles)."""
        return (
            not self._enabled
            and self._revision == INITIAL_REVISION
            and not (self._users or self._roles)
        )

    def hash_part(self) -> bytes:
        """The auth part of the state hash: BLAKE2b-128 of ``digest_bytes``, or b"" while the
        state is ``pristine``, so state hashes of members that never used auth keep the value
        older raftkv gave them."""
        if self.pristine:
            return b""
        return hashlib.blake2b(self.digest_bytes(), digest_size=16).digest()

    def digest_bytes(self) -> bytes:
        """A canonical serialization of the whole auth state (for the state hash): a magic,
        then every ``records()`` pair length-prefixed (u32), so equal states give equal
        bytes and different states different bytes."""
        parts = [_DIGEST_MAGIC]
        for key, value in self.records():
            parts += [_U32.pack(len(key)), key, _U32.pack(len(value)), value]
        return b"".join(parts)


_M = TypeVar("_M", auth_pb2.User, auth_pb2.Role, auth_pb2.Permission)


def _copy(message: _M) -> _M:
    out = type(message)()
    out.CopyFrom(message)
    return out
