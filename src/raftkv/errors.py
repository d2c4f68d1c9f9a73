"""Every error raftkv reports to clients, as etcd reports it: gRPC status code + exact message.

This module owns the mapping. Clients (etcdctl, clientv3, the Python etcd clients) recognise
errors by these message strings and act on these codes (clientv3 retries on UNAVAILABLE, for
one), so both must equal what etcd's api/v3rpc/rpctypes/error.go sends. Codes follow etcd 3.6;
etcd 3.5 sent UNAVAILABLE instead of FAILED_PRECONDITION for ERR_NOT_CAPABLE,
ERR_NOT_SUPPORTED_FOR_LEARNER and ERR_CLUSTER_VERSION_UNAVAILABLE; messages are unchanged.

Each error is a subclass of `EtcdError` bound to a constant (`ERR_EMPTY_KEY`, ...) whose class
attributes `code` and `message` carry the status. Being classes, they are safe to raise again
and again (`raise ERR_COMPACTED` builds a fresh instance; a shared instance would accumulate
tracebacks) and to catch precisely (`except ERR_COMPACTED:`).

A grpc.aio servicer turns any exception into etcd's status with `await abort(context, exc)`;
a client turns a status back into the error with `from_status(code, message)`.
"""

from __future__ import annotations

from typing import Any, ClassVar, Final, NoReturn

import grpc
import grpc.aio


class EtcdError(Exception):
    """Base of every etcd server error; use the ERR_* subclasses, never this class itself."""

    code: ClassVar[grpc.StatusCode] = grpc.StatusCode.UNKNOWN
    message: ClassVar[str] = ""

    def __init__(self) -> None:
        if type(self) is EtcdError:
            raise TypeError("EtcdError is abstract: raise one of the ERR_* errors")
        super().__init__(self.message)

    def __repr__(self) -> str:
        return f"{type(self).__qualname__}({self.code.name}, {self.message!r})"

    def __reduce__(self) -> tuple[type[EtcdError], tuple[()]]:
        return (type(self), ())


_BY_MESSAGE: dict[str, type[EtcdError]] = {}


def _define(name: str, code: grpc.StatusCode, message: str) -> type[EtcdError]:
    """Create the error class `name`, reachable as `raftkv.errors.<name>` (so it pickles)."""
    if code is grpc.StatusCode.OK or not message.startswith("etcdserver: "):
        raise ValueError(f"not an etcd server error: {code} {message!r}")
    if message in _BY_MESSAGE:
        raise ValueError(f"duplicate etcd error message {message!r}")

    class _Error(EtcdError):
        __slots__ = ()

    _Error.code = code
    _Error.message = message
    _Error.__name__ = _Error.__qualname__ = name
    _Error.__module__ = __name__
    _BY_MESSAGE[message] = _Error
    return _Error


_C = grpc.StatusCode

# --- request validation and the key-value store
ERR_EMPTY_KEY: Final = _define(
    "ERR_EMPTY_KEY", _C.INVALID_ARGUMENT, "etcdserver: key is not provided"
)
ERR_KEY_NOT_FOUND: Final = _define(
    "ERR_KEY_NOT_FOUND", _C.INVALID_ARGUMENT, "etcdserver: key not found"
)
ERR_VALUE_PROVIDED: Final = _define(
    "ERR_VALUE_PROVIDED", _C.INVALID_ARGUMENT, "etcdserver: value is provided"
)
ERR_LEASE_PROVIDED: Final = _define(
    "ERR_LEASE_PROVIDED", _C.INVALID_ARGUMENT, "etcdserver: lease is provided"
)
ERR_TOO_MANY_OPS: Final = _define(
    "ERR_TOO_MANY_OPS", _C.INVALID_ARGUMENT, "etcdserver: too many operations in txn request"
)
ERR_DUPLICATE_KEY: Final = _define(
    "ERR_DUPLICATE_KEY", _C.INVALID_ARGUMENT, "etcdserver: duplicate key given in txn request"
)
ERR_INVALID_CLIENT_API_VERSION: Final = _define(
    "ERR_INVALID_CLIENT_API_VERSION", _C.INVALID_ARGUMENT, "etcdserver: invalid client api version"
)
ERR_INVALID_SORT_OPTION: Final = _define(
    "ERR_INVALID_SORT_OPTION", _C.INVALID_ARGUMENT, "etcdserver: invalid sort option"
)
ERR_COMPACTED: Final = _define(
    "ERR_COMPACTED", _C.OUT_OF_RANGE, "etcdserver: mvcc: required revision has been compacted"
)
ERR_FUTURE_REV: Final = _define(
    "ERR_FUTURE_REV", _C.OUT_OF_RANGE, "etcdserver: mvcc: required revision is a future revision"
)
ERR_NO_SPACE: Final = _define(
    "ERR_NO_SPACE", _C.RESOURCE_EXHAUSTED, "etcdserver: mvcc: database space exceeded"
)

# --- leases and watches
ERR_LEASE_NOT_FOUND: Final = _define(
    "ERR_LEASE_NOT_FOUND", _C.NOT_FOUND, "etcdserver: requested lease not found"
)
ERR_LEASE_EXIST: Final = _define(
    "ERR_LEASE_EXIST", _C.FAILED_PRECONDITION, "etcdserver: lease already exists"
)
ERR_LEASE_TTL_TOO_LARGE: Final = _define(
    "ERR_LEASE_TTL_TOO_LARGE", _C.OUT_OF_RANGE, "etcdserver: too large lease TTL"
)
ERR_WATCH_CANCELED: Final = _define(
    "ERR_WATCH_CANCELED", _C.CANCELLED, "etcdserver: watch canceled"
)

# --- membership
ERR_MEMBER_EXIST: Final = _define(
    "ERR_MEMBER_EXIST", _C.FAILED_PRECONDITION, "etcdserver: member ID already exist"
)
ERR_PEER_URL_EXIST: Final = _define(
    "ERR_PEER_URL_EXIST", _C.FAILED_PRECONDITION, "etcdserver: Peer URLs already exists"
)
ERR_MEMBER_NOT_ENOUGH_STARTED: Final = _define(
    "ERR_MEMBER_NOT_ENOUGH_STARTED",
    _C.FAILED_PRECONDITION,
    "etcdserver: re-configuration failed due to not enough started members",
)
ERR_MEMBER_BAD_URLS: Final = _define(
    "ERR_MEMBER_BAD_URLS", _C.INVALID_ARGUMENT, "etcdserver: given member URLs are invalid"
)
ERR_MEMBER_NOT_FOUND: Final = _define(
    "ERR_MEMBER_NOT_FOUND", _C.NOT_FOUND, "etcdserver: member not found"
)
ERR_MEMBER_NOT_LEARNER: Final = _define(
    "ERR_MEMBER_NOT_LEARNER",
    _C.FAILED_PRECONDITION,
    "etcdserver: can only promote a learner member",
)
ERR_LEARNER_NOT_READY: Final = _define(
    "ERR_LEARNER_NOT_READY",
    _C.FAILED_PRECONDITION,
    "etcdserver: can only promote a learner member which is in sync with leader",
)
ERR_TOO_MANY_LEARNERS: Final = _define(
    "ERR_TOO_MANY_LEARNERS",
    _C.FAILED_PRECONDITION,
    "etcdserver: too many learner members in cluster",
)
ERR_CLUSTER_ID_MISMATCH: Final = _define(
    "ERR_CLUSTER_ID_MISMATCH", _C.FAILED_PRECONDITION, "etcdserver: cluster ID mismatch"
)

# --- request limits
ERR_REQUEST_TOO_LARGE: Final = _define(
    "ERR_REQUEST_TOO_LARGE", _C.INVALID_ARGUMENT, "etcdserver: request is too large"
)
ERR_TOO_MANY_REQUESTS: Final = _define(
    "ERR_TOO_MANY_REQUESTS", _C.RESOURCE_EXHAUSTED, "etcdserver: too many requests"
)

# --- authentication and authorization
ERR_ROOT_USER_NOT_EXIST: Final = _define(
    "ERR_ROOT_USER_NOT_EXIST", _C.FAILED_PRECONDITION, "etcdserver: root user does not exist"
)
ERR_ROOT_ROLE_NOT_EXIST: Final = _define(
    "ERR_ROOT_ROLE_NOT_EXIST",
    _C.FAILED_PRECONDITION,
    "etcdserver: root user does not have root role",
)
ERR_USER_ALREADY_EXIST: Final = _define(
    "ERR_USER_ALREADY_EXIST", _C.FAILED_PRECONDITION, "etcdserver: user name already exists"
)
ERR_USER_EMPTY: Final = _define(
    "ERR_USER_EMPTY", _C.INVALID_ARGUMENT, "etcdserver: user name is empty"
)
ERR_USER_NOT_FOUND: Final = _define(
    "ERR_USER_NOT_FOUND", _C.FAILED_PRECONDITION, "etcdserver: user name not found"
)
ERR_ROLE_ALREADY_EXIST: Final = _define(
    "ERR_ROLE_ALREADY_EXIST", _C.FAILED_PRECONDITION, "etcdserver: role name already exists"
)
ERR_ROLE_NOT_FOUND: Final = _define(
    "ERR_ROLE_NOT_FOUND", _C.FAILED_PRECONDITION, "etcdserver: role name not found"
)
ERR_ROLE_EMPTY: Final = _define(
    "ERR_ROLE_EMPTY", _C.INVALID_ARGUMENT, "etcdserver: role name is empty"
)
ERR_AUTH_FAILED: Final = _define(
    "ERR_AUTH_FAILED",
    _C.INVALID_ARGUMENT,
    "etcdserver: authentication failed, invalid user ID or password",
)
ERR_PERMISSION_NOT_GIVEN: Final = _define(
    "ERR_PERMISSION_NOT_GIVEN", _C.INVALID_ARGUMENT, "etcdserver: permission not given"
)
ERR_PERMISSION_DENIED: Final = _define(
    "ERR_PERMISSION_DENIED", _C.PERMISSION_DENIED, "etcdserver: permission denied"
)
ERR_ROLE_NOT_GRANTED: Final = _define(
    "ERR_ROLE_NOT_GRANTED", _C.FAILED_PRECONDITION, "etcdserver: role is not granted to the user"
)
ERR_PERMISSION_NOT_GRANTED: Final = _define(
    "ERR_PERMISSION_NOT_GRANTED",
    _C.FAILED_PRECONDITION,
    "etcdserver: permission is not granted to the role",
)
ERR_AUTH_NOT_ENABLED: Final = _define(
    "ERR_AUTH_NOT_ENABLED", _C.FAILED_PRECONDITION, "etcdserver: authentication is not enabled"
)
ERR_INVALID_AUTH_TOKEN: Final = _define(
    "ERR_INVALID_AUTH_TOKEN", _C.UNAUTHENTICATED, "etcdserver: invalid auth token"
)
ERR_INVALID_AUTH_MGMT: Final = _define(
    "ERR_INVALID_AUTH_MGMT", _C.INVALID_ARGUMENT, "etcdserver: invalid auth management"
)
ERR_AUTH_OLD_REVISION: Final = _define(
    "ERR_AUTH_OLD_REVISION", _C.INVALID_ARGUMENT, "etcdserver: revision of auth store is old"
)

# --- leadership, availability, integrity
ERR_NO_LEADER: Final = _define("ERR_NO_LEADER", _C.UNAVAILABLE, "etcdserver: no leader")
ERR_NOT_LEADER: Final = _define("ERR_NOT_LEADER", _C.FAILED_PRECONDITION, "etcdserver: not leader")
ERR_LEADER_CHANGED: Final = _define(
    "ERR_LEADER_CHANGED", _C.UNAVAILABLE, "etcdserver: leader changed"
)
ERR_CONF_CHANGE_PENDING: Final = _define(
    # raftkv's: etcd lets such a change time out; raftkv says at once why it cannot be made.
    "ERR_CONF_CHANGE_PENDING",
    _C.FAILED_PRECONDITION,
    "etcdserver: a membership change is already in progress",
)
ERR_NOT_CAPABLE: Final = _define(
    "ERR_NOT_CAPABLE", _C.FAILED_PRECONDITION, "etcdserver: not capable"
)
ERR_STOPPED: Final = _define("ERR_STOPPED", _C.UNAVAILABLE, "etcdserver: server stopped")
ERR_TIMEOUT: Final = _define("ERR_TIMEOUT", _C.UNAVAILABLE, "etcdserver: request timed out")
ERR_TIMEOUT_DUE_TO_LEADER_FAIL: Final = _define(
    "ERR_TIMEOUT_DUE_TO_LEADER_FAIL",
    _C.UNAVAILABLE,
    "etcdserver: request timed out, possibly due to previous leader failure",
)
ERR_TIMEOUT_DUE_TO_CONNECTION_LOST: Final = _define(
    "ERR_TIMEOUT_DUE_TO_CONNECTION_LOST",
    _C.UNAVAILABLE,
    "etcdserver: request timed out, possibly due to connection lost",
)
ERR_TIMEOUT_WAIT_APPLIED_INDEX: Final = _define(
    "ERR_TIMEOUT_WAIT_APPLIED_INDEX",
    _C.UNAVAILABLE,
    "etcdserver: request timed out, waiting for the applied index took too long",
)
ERR_UNHEALTHY: Final = _define("ERR_UNHEALTHY", _C.UNAVAILABLE, "etcdserver: unhealthy cluster")
ERR_CORRUPT: Final = _define("ERR_CORRUPT", _C.DATA_LOSS, "etcdserver: corrupt cluster")
ERR_NOT_SUPPORTED_FOR_LEARNER: Final = _define(
    "ERR_NOT_SUPPORTED_FOR_LEARNER",
    _C.FAILED_PRECONDITION,
    "etcdserver: rpc not supported for learner",
)
ERR_BAD_LEADER_TRANSFEREE: Final = _define(
    "ERR_BAD_LEADER_TRANSFEREE", _C.FAILED_PRECONDITION, "etcdserver: bad leader transferee"
)

# --- cluster version downgrade
ERR_WRONG_DOWNGRADE_VERSION_FORMAT: Final = _define(
    "ERR_WRONG_DOWNGRADE_VERSION_FORMAT",
    _C.INVALID_ARGUMENT,
    "etcdserver: wrong downgrade target version format",
)
ERR_INVALID_DOWNGRADE_TARGET_VERSION: Final = _define(
    "ERR_INVALID_DOWNGRADE_TARGET_VERSION",
    _C.INVALID_ARGUMENT,
    "etcdserver: invalid downgrade target version",
)
ERR_CLUSTER_VERSION_UNAVAILABLE: Final = _define(
    "ERR_CLUSTER_VERSION_UNAVAILABLE",
    _C.FAILED_PRECONDITION,
    "etcdserver: cluster version not found during downgrade",
)
ERR_DOWNGRADE_IN_PROCESS: Final = _define(
    "ERR_DOWNGRADE_IN_PROCESS",
    _C.FAILED_PRECONDITION,
    "etcdserver: cluster has a downgrade job in progress",
)
ERR_NO_INFLIGHT_DOWNGRADE: Final = _define(
    "ERR_NO_INFLIGHT_DOWNGRADE", _C.FAILED_PRECONDITION, "etcdserver: no inflight downgrade job"
)

# --- the request's own context
ERR_CANCELED: Final = _define("ERR_CANCELED", _C.CANCELLED, "etcdserver: request canceled")
ERR_DEADLINE_EXCEEDED: Final = _define(
    "ERR_DEADLINE_EXCEEDED", _C.DEADLINE_EXCEEDED, "etcdserver: context deadline exceeded"
)

del _C

ALL_ERRORS: Final[tuple[type[EtcdError], ...]] = tuple(_BY_MESSAGE.values())
"""Every error above, in definition order."""


def lookup(message: str) -> type[EtcdError] | None:
    """The error whose etcd message is exactly `message`, or None."""
    return _BY_MESSAGE.get(message)


def from_status(code: grpc.StatusCode, message: str) -> EtcdError | None:
    """The error a server meant by this status, or None if it is not an etcd error.

    Matches by message alone, as etcd's clients do; `code` must still be a failure code.
    """
    cls = _BY_MESSAGE.get(message)
    if cls is None or code is grpc.StatusCode.OK:
        return None
    return cls()


def to_status(exc: BaseException | type[EtcdError]) -> tuple[grpc.StatusCode, str]:
    """The (code, message) etcd would send for `exc`.

    An EtcdError (class or instance) maps to its own status; anything else is UNKNOWN with the
    exception's text, which is what etcd does with errors it has no mapping for.
    """
    if isinstance(exc, EtcdError) or (isinstance(exc, type) and issubclass(exc, EtcdError)):
        return exc.code, exc.message
    return grpc.StatusCode.UNKNOWN, str(exc)


async def abort(
    context: grpc.aio.ServicerContext[Any, Any], exc: BaseException | type[EtcdError]
) -> NoReturn:
    """End the current RPC of a grpc.aio servicer with etcd's status for `exc`; never returns."""
    code, message = to_status(exc)
    await context.abort(code, message)
    raise AssertionError("grpc.aio ServicerContext.abort returned")  # abort always raises


# --- errors etcd sends without a table entry of their own
# etcd's togRPCError sends an error that has no rpctypes entry as codes.Unknown with the error's
# own text.  Clients see these strings unchanged, so raftkv keeps them, outside the table of
# ``etcdserver:`` errors above (they are not in ALL_ERRORS and ``lookup`` does not find them).


def _define_unmapped(name: str, message: str) -> type[EtcdError]:
    """Create the error class `name` sent as Unknown with etcd's text `message`."""

    class _Error(EtcdError):
        __slots__ = ()

    _Error.code = grpc.StatusCode.UNKNOWN
    _Error.message = message
    _Error.__name__ = _Error.__qualname__ = name
    _Error.__module__ = __name__
    return _Error


ERR_NO_PASSWORD_USER: Final = _define_unmapped(
    # etcd's auth.ErrNoPasswordUser: Authenticate as a user added with --no-password (and a
    # UserAdd / UserChangePassword entry whose hashedPassword is not base64).
    "ERR_NO_PASSWORD_USER",
    "auth: authentication failed, password was given for no password user",
)
