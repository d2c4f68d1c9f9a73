"""raftkv.errors: each sampled error equals, in code and message, what the real etcd sends.

Every case provokes the error from a live etcd 3.4 (Debian's /usr/bin/etcd) through our
generated stubs and compares the status it returned with our constant. The table itself is
checked for internal consistency against etcd's rpctypes facts.
"""

from __future__ import annotations

import asyncio
import pickle
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import grpc.aio
import pytest

from raftkv import errors
from raftkv.errors import EtcdError
from raftkv.proto import rpc_pb2, rpc_pb2_grpc
from tests.api.test_proto_wire import RealEtcd

_MAX_REQUEST_BYTES = 64 * 1024


@pytest.fixture(scope="module")
def etcd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealEtcd]:
    server = RealEtcd(
        tmp_path_factory.mktemp("etcd-errors"), f"--max-request-bytes={_MAX_REQUEST_BYTES}"
    )
    server.start()
    yield server
    server.stop()


class Stubs:
    def __init__(self, channel: grpc.Channel) -> None:
        self.kv = rpc_pb2_grpc.KVStub(channel)
        self.lease = rpc_pb2_grpc.LeaseStub(channel)
        self.cluster = rpc_pb2_grpc.ClusterStub(channel)
        self.maintenance = rpc_pb2_grpc.MaintenanceStub(channel)
        self.auth = rpc_pb2_grpc.AuthStub(channel)


@pytest.fixture(scope="module")
def stubs(etcd: RealEtcd) -> Stubs:
    assert etcd.channel is not None
    return Stubs(etcd.channel)


def _status_of(call: Callable[[], object]) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as info:
        call()
    err: Any = info.value
    return err.code(), err.details()


def _assert_sends(expected: type[EtcdError], call: Callable[[], object]) -> None:
    code, message = _status_of(call)
    assert (code, message) == (expected.code, expected.message)
    decoded = errors.from_status(code, message)
    assert type(decoded) is expected


def _put(key: bytes, value: bytes = b"v", **kw: Any) -> rpc_pb2.PutRequest:
    return rpc_pb2.PutRequest(key=key, value=value, **kw)


def _txn(*ops: rpc_pb2.RequestOp) -> rpc_pb2.TxnRequest:
    return rpc_pb2.TxnRequest(success=list(ops))


T = 10  # seconds per call

# (name, error, call): each call must make the real etcd answer with exactly `error`.
Case = tuple[str, type[EtcdError], Callable[[Stubs, RealEtcd], object]]
CASES: list[Case] = [
    ("put-empty-key", errors.ERR_EMPTY_KEY, lambda s, e: s.kv.Put(_put(b""), timeout=T)),
    (
        "range-empty-key",
        errors.ERR_EMPTY_KEY,
        lambda s, e: s.kv.Range(rpc_pb2.RangeRequest(), timeout=T),
    ),
    (
        "ignore-value-with-value",
        errors.ERR_VALUE_PROVIDED,
        lambda s, e: s.kv.Put(_put(b"k", ignore_value=True), timeout=T),
    ),
    (
        "ignore-lease-with-lease",
        errors.ERR_LEASE_PROVIDED,
        lambda s, e: s.kv.Put(_put(b"k", b"", lease=7, ignore_lease=True), timeout=T),
    ),
    (
        "ignore-value-missing-key",
        errors.ERR_KEY_NOT_FOUND,
        lambda s, e: s.kv.Put(_put(b"errors/absent", b"", ignore_value=True), timeout=T),
    ),
    (
        "txn-duplicate-key",
        errors.ERR_DUPLICATE_KEY,
        lambda s, e: s.kv.Txn(
            _txn(
                rpc_pb2.RequestOp(request_put=_put(b"d")), rpc_pb2.RequestOp(request_put=_put(b"d"))
            ),
            timeout=T,
        ),
    ),
    (
        "txn-too-many-ops",
        errors.ERR_TOO_MANY_OPS,
        lambda s, e: s.kv.Txn(
            _txn(*[rpc_pb2.RequestOp(request_put=_put(b"m%d" % i)) for i in range(129)]),
            timeout=T,
        ),
    ),
    (
        "range-future-revision",
        errors.ERR_FUTURE_REV,
        lambda s, e: s.kv.Range(rpc_pb2.RangeRequest(key=b"k", revision=1 << 40), timeout=T),
    ),
    (
        "compact-future-revision",
        errors.ERR_FUTURE_REV,
        lambda s, e: s.kv.Compact(rpc_pb2.CompactionRequest(revision=1 << 40), timeout=T),
    ),
    (
        "request-too-large",
        errors.ERR_REQUEST_TOO_LARGE,
        lambda s, e: s.kv.Put(_put(b"big", b"x" * (2 * _MAX_REQUEST_BYTES)), timeout=T),
    ),
    (
        "lease-revoke-unknown",
        errors.ERR_LEASE_NOT_FOUND,
        lambda s, e: s.lease.LeaseRevoke(rpc_pb2.LeaseRevokeRequest(ID=424242), timeout=T),
    ),
    (
        "lease-ttl-too-large",
        errors.ERR_LEASE_TTL_TOO_LARGE,
        lambda s, e: s.lease.LeaseGrant(rpc_pb2.LeaseGrantRequest(TTL=9_000_000_001), timeout=T),
    ),
    (
        "member-remove-unknown",
        errors.ERR_MEMBER_NOT_FOUND,
        lambda s, e: s.cluster.MemberRemove(rpc_pb2.MemberRemoveRequest(ID=12345), timeout=T),
    ),
    (
        "member-add-bad-url",
        errors.ERR_MEMBER_BAD_URLS,
        lambda s, e: s.cluster.MemberAdd(
            rpc_pb2.MemberAddRequest(peerURLs=["not a url"]), timeout=T
        ),
    ),
    (
        "member-add-existing-peer-url",
        errors.ERR_PEER_URL_EXIST,
        lambda s, e: s.cluster.MemberAdd(
            rpc_pb2.MemberAddRequest(peerURLs=[e.peer_url]), timeout=T
        ),
    ),
    (
        "move-leader-to-stranger",
        errors.ERR_BAD_LEADER_TRANSFEREE,
        lambda s, e: s.maintenance.MoveLeader(rpc_pb2.MoveLeaderRequest(targetID=777), timeout=T),
    ),
    (
        "user-add-empty",
        errors.ERR_USER_EMPTY,
        lambda s, e: s.auth.UserAdd(rpc_pb2.AuthUserAddRequest(name="", password="p"), timeout=T),
    ),
    (
        "role-add-empty",
        errors.ERR_ROLE_EMPTY,
        lambda s, e: s.auth.RoleAdd(rpc_pb2.AuthRoleAddRequest(name=""), timeout=T),
    ),
    (
        "user-get-unknown",
        errors.ERR_USER_NOT_FOUND,
        lambda s, e: s.auth.UserGet(rpc_pb2.AuthUserGetRequest(name="nobody"), timeout=T),
    ),
    (
        "role-get-unknown",
        errors.ERR_ROLE_NOT_FOUND,
        lambda s, e: s.auth.RoleGet(rpc_pb2.AuthRoleGetRequest(role="nothing"), timeout=T),
    ),
    (
        "authenticate-while-disabled",
        errors.ERR_AUTH_NOT_ENABLED,
        lambda s, e: s.auth.Authenticate(
            rpc_pb2.AuthenticateRequest(name="root", password="x"), timeout=T
        ),
    ),
    (
        "auth-enable-without-root",
        errors.ERR_ROOT_USER_NOT_EXIST,
        lambda s, e: s.auth.AuthEnable(rpc_pb2.AuthEnableRequest(), timeout=T),
    ),
]


@pytest.mark.parametrize(("name", "expected", "call"), CASES, ids=[c[0] for c in CASES])
def test_real_etcd_sends_our_error(
    name: str,
    expected: type[EtcdError],
    call: Callable[[Stubs, RealEtcd], object],
    stubs: Stubs,
    etcd: RealEtcd,
) -> None:
    _assert_sends(expected, lambda: call(stubs, etcd))


def test_compacted_revision(stubs: Stubs) -> None:
    first = stubs.kv.Put(_put(b"errors/c", b"1"), timeout=T).header.revision
    last = stubs.kv.Put(_put(b"errors/c", b"2"), timeout=T).header.revision
    stubs.kv.Compact(rpc_pb2.CompactionRequest(revision=last, physical=True), timeout=T)
    old = rpc_pb2.RangeRequest(key=b"errors/c", revision=first)
    _assert_sends(errors.ERR_COMPACTED, lambda: stubs.kv.Range(old, timeout=T))
    again = rpc_pb2.CompactionRequest(revision=first)
    _assert_sends(errors.ERR_COMPACTED, lambda: stubs.kv.Compact(again, timeout=T))


def test_lease_exists(stubs: Stubs) -> None:
    stubs.lease.LeaseGrant(rpc_pb2.LeaseGrantRequest(TTL=60, ID=5150), timeout=T)
    twice = rpc_pb2.LeaseGrantRequest(TTL=60, ID=5150)
    _assert_sends(errors.ERR_LEASE_EXIST, lambda: stubs.lease.LeaseGrant(twice, timeout=T))


def test_user_and_role_management(stubs: Stubs) -> None:
    stubs.auth.UserAdd(rpc_pb2.AuthUserAddRequest(name="alice", password="pw"), timeout=T)
    stubs.auth.RoleAdd(rpc_pb2.AuthRoleAddRequest(name="reader"), timeout=T)
    cases: list[tuple[type[EtcdError], Callable[[], object]]] = [
        (
            errors.ERR_USER_ALREADY_EXIST,
            lambda: stubs.auth.UserAdd(
                rpc_pb2.AuthUserAddRequest(name="alice", password="pw"), timeout=T
            ),
        ),
        (
            errors.ERR_ROLE_ALREADY_EXIST,
            lambda: stubs.auth.RoleAdd(rpc_pb2.AuthRoleAddRequest(name="reader"), timeout=T),
        ),
        (
            errors.ERR_ROLE_NOT_GRANTED,
            lambda: stubs.auth.UserRevokeRole(
                rpc_pb2.AuthUserRevokeRoleRequest(name="alice", role="reader"), timeout=T
            ),
        ),
        (
            errors.ERR_PERMISSION_NOT_GRANTED,
            lambda: stubs.auth.RoleRevokePermission(
                rpc_pb2.AuthRoleRevokePermissionRequest(role="reader", key=b"k"), timeout=T
            ),
        ),
        (
            errors.ERR_ROLE_NOT_FOUND,
            lambda: stubs.auth.UserGrantRole(
                rpc_pb2.AuthUserGrantRoleRequest(user="alice", role="ghost"), timeout=T
            ),
        ),
    ]
    for expected, call in cases:
        _assert_sends(expected, call)


def test_alarms_block_writes(stubs: Stubs) -> None:
    member_id = stubs.maintenance.Status(rpc_pb2.StatusRequest(), timeout=T).header.member_id
    for alarm, expected in [
        (rpc_pb2.NOSPACE, errors.ERR_NO_SPACE),
        (rpc_pb2.CORRUPT, errors.ERR_CORRUPT),
    ]:
        raised = rpc_pb2.AlarmRequest(
            action=rpc_pb2.AlarmRequest.ACTIVATE, memberID=member_id, alarm=alarm
        )
        stubs.maintenance.Alarm(raised, timeout=T)
        try:
            _assert_sends(expected, lambda: stubs.kv.Put(_put(b"errors/alarm"), timeout=T))
        finally:
            cleared = rpc_pb2.AlarmRequest(
                action=rpc_pb2.AlarmRequest.DEACTIVATE, memberID=member_id, alarm=alarm
            )
            stubs.maintenance.Alarm(cleared, timeout=T)
    stubs.kv.Put(_put(b"errors/alarm"), timeout=T)


def test_auth_enabled_errors(tmp_path_factory: pytest.TempPathFactory) -> None:
    server = RealEtcd(tmp_path_factory.mktemp("etcd-auth"))
    server.start()
    try:
        assert server.channel is not None
        s = Stubs(server.channel)
        s.auth.UserAdd(rpc_pb2.AuthUserAddRequest(name="root", password="rootpw"), timeout=T)
        _assert_sends(
            errors.ERR_ROOT_ROLE_NOT_EXIST,
            lambda: s.auth.AuthEnable(rpc_pb2.AuthEnableRequest(), timeout=T),
        )
        s.auth.UserGrantRole(rpc_pb2.AuthUserGrantRoleRequest(user="root", role="root"), timeout=T)
        s.auth.UserAdd(rpc_pb2.AuthUserAddRequest(name="bob", password="bobpw"), timeout=T)
        s.auth.RoleAdd(rpc_pb2.AuthRoleAddRequest(name="empty"), timeout=T)
        s.auth.AuthEnable(rpc_pb2.AuthEnableRequest(), timeout=T)

        wrong = rpc_pb2.AuthenticateRequest(name="bob", password="nope")
        _assert_sends(errors.ERR_AUTH_FAILED, lambda: s.auth.Authenticate(wrong, timeout=T))
        token = s.auth.Authenticate(
            rpc_pb2.AuthenticateRequest(name="bob", password="bobpw"), timeout=T
        ).token
        assert token
        get = rpc_pb2.RangeRequest(key=b"secret")
        _assert_sends(
            errors.ERR_PERMISSION_DENIED,
            lambda: s.kv.Range(get, metadata=(("token", token),), timeout=T),
        )
        _assert_sends(
            errors.ERR_INVALID_AUTH_TOKEN,
            lambda: s.kv.Range(get, metadata=(("token", "bogus.token"),), timeout=T),
        )
        _assert_sends(errors.ERR_USER_EMPTY, lambda: s.kv.Range(get, timeout=T))
    finally:
        server.stop()


# ------------------------------------------------------------------ the module itself


def test_table_is_complete_and_consistent() -> None:
    assert len(errors.ALL_ERRORS) == 64  # etcd's 63 and raftkv's ERR_CONF_CHANGE_PENDING
    messages = [e.message for e in errors.ALL_ERRORS]
    assert len(set(messages)) == len(messages)
    for err in errors.ALL_ERRORS:
        assert getattr(errors, err.__name__) is err
        assert err.message.startswith("etcdserver: ")
        assert errors.lookup(err.message) is err
    assert errors.lookup("etcdserver: no such thing") is None


@pytest.mark.parametrize(
    ("err", "code", "message"),
    [
        (errors.ERR_EMPTY_KEY, grpc.StatusCode.INVALID_ARGUMENT, "etcdserver: key is not provided"),
        (
            errors.ERR_COMPACTED,
            grpc.StatusCode.OUT_OF_RANGE,
            "etcdserver: mvcc: required revision has been compacted",
        ),
        (
            errors.ERR_LEASE_NOT_FOUND,
            grpc.StatusCode.NOT_FOUND,
            "etcdserver: requested lease not found",
        ),
        (errors.ERR_NO_LEADER, grpc.StatusCode.UNAVAILABLE, "etcdserver: no leader"),
        (errors.ERR_TIMEOUT, grpc.StatusCode.UNAVAILABLE, "etcdserver: request timed out"),
        (errors.ERR_CORRUPT, grpc.StatusCode.DATA_LOSS, "etcdserver: corrupt cluster"),
        (errors.ERR_NOT_CAPABLE, grpc.StatusCode.FAILED_PRECONDITION, "etcdserver: not capable"),
        (
            errors.ERR_INVALID_SORT_OPTION,
            grpc.StatusCode.INVALID_ARGUMENT,
            "etcdserver: invalid sort option",
        ),
        (
            errors.ERR_INVALID_AUTH_TOKEN,
            grpc.StatusCode.UNAUTHENTICATED,
            "etcdserver: invalid auth token",
        ),
        (errors.ERR_WATCH_CANCELED, grpc.StatusCode.CANCELLED, "etcdserver: watch canceled"),
        (
            errors.ERR_DEADLINE_EXCEEDED,
            grpc.StatusCode.DEADLINE_EXCEEDED,
            "etcdserver: context deadline exceeded",
        ),
    ],
)
def test_named_facts(err: type[EtcdError], code: grpc.StatusCode, message: str) -> None:
    assert (err.code, err.message) == (code, message)


def test_raising_builds_fresh_instances() -> None:
    seen: list[EtcdError] = []
    for _ in range(3):
        try:
            raise errors.ERR_COMPACTED
        except errors.ERR_COMPACTED as exc:
            seen.append(exc)
    assert len({id(e) for e in seen}) == 3
    assert str(seen[0]) == errors.ERR_COMPACTED.message
    assert isinstance(seen[0], EtcdError) and not isinstance(seen[0], errors.ERR_NO_LEADER)
    with pytest.raises(TypeError):
        EtcdError()


def test_pickle_round_trip() -> None:
    back = pickle.loads(pickle.dumps(errors.ERR_NO_SPACE()))
    assert type(back) is errors.ERR_NO_SPACE


def test_status_conversions() -> None:
    assert errors.to_status(errors.ERR_STOPPED) == (
        grpc.StatusCode.UNAVAILABLE,
        "etcdserver: server stopped",
    )
    assert errors.to_status(errors.ERR_STOPPED()) == errors.to_status(errors.ERR_STOPPED)
    assert errors.to_status(RuntimeError("disk on fire")) == (
        grpc.StatusCode.UNKNOWN,
        "disk on fire",
    )
    msg = errors.ERR_NO_LEADER.message
    assert isinstance(errors.from_status(grpc.StatusCode.UNAVAILABLE, msg), errors.ERR_NO_LEADER)
    assert errors.from_status(grpc.StatusCode.OK, msg) is None
    assert errors.from_status(grpc.StatusCode.UNAVAILABLE, "something else") is None


class _Ranger(rpc_pb2_grpc.KVServicer):
    async def Range(
        self, request: rpc_pb2.RangeRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> rpc_pb2.RangeResponse:
        if not request.key:
            await errors.abort(context, errors.ERR_EMPTY_KEY())
        if request.revision < 0:
            await errors.abort(context, ValueError("negative"))
        return rpc_pb2.RangeResponse(count=0)


def test_abort_in_an_aio_servicer_reaches_the_client_as_etcd_sends_it() -> None:
    async def scenario() -> list[tuple[grpc.StatusCode, str]]:
        server = grpc.aio.server()
        # Only Range is served; the stubs declare every KV method abstract.
        rpc_pb2_grpc.add_KVServicer_to_server(_Ranger(), server)  # type: ignore[abstract]
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                stub = rpc_pb2_grpc.KVStub(channel)
                out: list[tuple[grpc.StatusCode, str]] = []
                for req in (rpc_pb2.RangeRequest(), rpc_pb2.RangeRequest(key=b"k", revision=-1)):
                    try:
                        await stub.Range(req, timeout=T)
                    except grpc.aio.AioRpcError as exc:
                        out.append((exc.code(), exc.details() or ""))
                ok = await stub.Range(rpc_pb2.RangeRequest(key=b"k"), timeout=T)
                assert ok.count == 0
                return out
        finally:
            await server.stop(None)

    assert asyncio.run(scenario()) == [
        (errors.ERR_EMPTY_KEY.code, errors.ERR_EMPTY_KEY.message),
        (grpc.StatusCode.UNKNOWN, "negative"),
    ]
