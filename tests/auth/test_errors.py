"""The auth errors of raftkv.errors against etcd 3.5's api/v3rpc/rpctypes/error.go and
server/auth/store.go (codes and messages as etcd sends them)."""

from __future__ import annotations

import pickle

import grpc
import pytest

from raftkv import errors

C = grpc.StatusCode

ETCD_AUTH_ERRORS = [
    (errors.ERR_ROOT_USER_NOT_EXIST, C.FAILED_PRECONDITION, "etcdserver: root user does not exist"),
    (
        errors.ERR_ROOT_ROLE_NOT_EXIST,
        C.FAILED_PRECONDITION,
        "etcdserver: root user does not have root role",
    ),
    (errors.ERR_USER_ALREADY_EXIST, C.FAILED_PRECONDITION, "etcdserver: user name already exists"),
    (errors.ERR_USER_EMPTY, C.INVALID_ARGUMENT, "etcdserver: user name is empty"),
    (errors.ERR_USER_NOT_FOUND, C.FAILED_PRECONDITION, "etcdserver: user name not found"),
    (errors.ERR_ROLE_ALREADY_EXIST, C.FAILED_PRECONDITION, "etcdserver: role name already exists"),
    (errors.ERR_ROLE_NOT_FOUND, C.FAILED_PRECONDITION, "etcdserver: role name not found"),
    (errors.ERR_ROLE_EMPTY, C.INVALID_ARGUMENT, "etcdserver: role name is empty"),
    (
        errors.ERR_AUTH_FAILED,
        C.INVALID_ARGUMENT,
        "etcdserver: authentication failed, invalid user ID or password",
    ),
    (errors.ERR_PERMISSION_NOT_GIVEN, C.INVALID_ARGUMENT, "etcdserver: permission not given"),
    (errors.ERR_PERMISSION_DENIED, C.PERMISSION_DENIED, "etcdserver: permission denied"),
    (
        errors.ERR_ROLE_NOT_GRANTED,
        C.FAILED_PRECONDITION,
        "etcdserver: role is not granted to the user",
    ),
    (
        errors.ERR_PERMISSION_NOT_GRANTED,
        C.FAILED_PRECONDITION,
        "etcdserver: permission is not granted to the role",
    ),
    (
        errors.ERR_AUTH_NOT_ENABLED,
        C.FAILED_PRECONDITION,
        "etcdserver: authentication is not enabled",
    ),
    (errors.ERR_INVALID_AUTH_TOKEN, C.UNAUTHENTICATED, "etcdserver: invalid auth token"),
    (errors.ERR_INVALID_AUTH_MGMT, C.INVALID_ARGUMENT, "etcdserver: invalid auth management"),
    (
        errors.ERR_AUTH_OLD_REVISION,
        C.INVALID_ARGUMENT,
        "etcdserver: revision of auth store is old",
    ),
]


@pytest.mark.parametrize(("err", "code", "message"), ETCD_AUTH_ERRORS)
def test_auth_errors_are_etcds(err: type[errors.EtcdError], code: C, message: str) -> None:
    assert errors.to_status(err()) == (code, message)
    assert errors.lookup(message) is err


def test_no_password_user_is_sent_unmapped_as_etcd_does() -> None:
    err = errors.ERR_NO_PASSWORD_USER
    message = "auth: authentication failed, password was given for no password user"
    assert errors.to_status(err) == (C.UNKNOWN, message)
    assert str(err()) == message
    assert err not in errors.ALL_ERRORS
    assert errors.lookup(message) is None
    again = pickle.loads(pickle.dumps(err()))
    assert type(again) is err
    with pytest.raises(errors.ERR_NO_PASSWORD_USER):
        raise err
