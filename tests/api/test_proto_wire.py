"""raftkv.proto speaks etcd's wire format, proven against the real etcd Debian ships.

Two independent witnesses:
- the descriptors etcd 3.4.23 compiled into /usr/bin/etcd (Go's generated code embeds each
  .proto as a gzipped FileDescriptorProto): every message, field, enum value and RPC there must
  appear in ours with the same name, number, type and label; ours may only add what etcd
  3.5/3.6 added;
- a live etcd process: our generated stubs talk to it, and what etcdctl wrote or read must
  agree with what our messages decode.

`RealEtcd` (a single-member etcd in a temp dir on free loopback ports) is reused by
tests/api/test_errors.py.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import descriptor_pb2
from google.protobuf.descriptor import FileDescriptor

from raftkv.proto import auth_pb2, kv_pb2, rpc_pb2, rpc_pb2_grpc
from tests.cluster.harness import free_ports

ETCD = "/usr/bin/etcd"
ETCDCTL = "/usr/bin/etcdctl"
_INSTALL_HINT = "apt-get install etcd-server etcd-client"


class RealEtcd:
    """One real etcd member; `start()` returns once it has a leader, `stop()` kills it."""

    _ATTEMPTS = 3  # a free port can be taken by someone else before etcd binds it

    def __init__(self, workdir: Path, *extra_flags: str) -> None:
        for binary in (ETCD, ETCDCTL):
            if not Path(binary).is_file():
                pytest.fail(f"{binary} is missing: {_INSTALL_HINT}")
        self.workdir = workdir
        self.extra_flags = extra_flags
        self.name = "wire"
        self.endpoint = ""
        self.peer_url = ""
        self._log = workdir / "etcd.log"
        self._env = {k: v for k, v in os.environ.items() if not k.startswith("ETCD")}
        self._proc: subprocess.Popen[bytes] | None = None
        self.channel: grpc.Channel | None = None

    def start(self, timeout: float = 30.0) -> None:
        for attempt in range(self._ATTEMPTS):
            if self._start_once(attempt, timeout):
                return
        pytest.fail(f"etcd exited early {self._ATTEMPTS} times:\n{self.log_tail()}")

    def _start_once(self, attempt: int, timeout: float) -> bool:
        client_port, peer_port = free_ports(2)  # held together, so never equal
        self.endpoint = f"127.0.0.1:{client_port}"
        self.peer_url = f"http://127.0.0.1:{peer_port}"
        client_url = f"http://{self.endpoint}"
        self._log = self.workdir / f"etcd-{attempt}.log"
        with self._log.open("wb") as log:
            self._proc = subprocess.Popen(
                [
                    ETCD,
                    f"--name={self.name}",
                    f"--data-dir={self.workdir / f'data-{attempt}'}",
                    f"--listen-client-urls={client_url}",
                    f"--advertise-client-urls={client_url}",
                    f"--listen-peer-urls={self.peer_url}",
                    f"--initial-advertise-peer-urls={self.peer_url}",
                    f"--initial-cluster={self.name}={self.peer_url}",
                    "--initial-cluster-state=new",
                    "--logger=zap",
                    *self.extra_flags,
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self._env,
            )
        self.channel = grpc.insecure_channel(self.endpoint)
        maintenance = rpc_pb2_grpc.MaintenanceStub(self.channel)
        deadline = time.monotonic() + timeout
        while True:
            if self._proc.poll() is not None:
                self.stop()
                return False
            try:
                status = maintenance.Status(rpc_pb2.StatusRequest(), timeout=1.0)
                if status.leader != 0:
                    return True
            except grpc.RpcError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                pytest.fail(f"etcd not ready within {timeout}s:\n{self.log_tail()}")
            time.sleep(0.1)

    def stop(self) -> None:
        if self.channel is not None:
            self.channel.close()
            self.channel = None
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(timeout=10)
        self._proc = None

    def log_tail(self) -> str:
        return self._log.read_text(errors="replace")[-4000:] if self._log.exists() else ""

    def etcdctl(self, *args: str) -> str:
        done = subprocess.run(
            [ETCDCTL, f"--endpoints={self.endpoint}", "--command-timeout=10s", *args],
            env={**self._env, "ETCDCTL_API": "3"},
            capture_output=True,
            timeout=30,
            check=False,
        )
        assert done.returncode == 0, done.stderr.decode(errors="replace")
        return done.stdout.decode()

    def etcdctl_json(self, *args: str) -> Any:
        return json.loads(self.etcdctl("-w", "json", *args))


@pytest.fixture(scope="module")
def etcd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealEtcd]:
    server = RealEtcd(tmp_path_factory.mktemp("etcd-wire"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def channel(etcd: RealEtcd) -> grpc.Channel:
    assert etcd.channel is not None
    return etcd.channel


# ------------------------------------------------------------------ descriptor identity


def _embedded_descriptors(binary: str) -> dict[str, descriptor_pb2.FileDescriptorProto]:
    """The etcd .proto descriptors a Go binary carries, keyed by file name."""
    data = Path(binary).read_bytes()
    found: dict[str, descriptor_pb2.FileDescriptorProto] = {}
    at = data.find(b"\x1f\x8b\x08")
    while at >= 0:
        try:
            raw = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(data[at : at + (1 << 20)])
            fd = descriptor_pb2.FileDescriptorProto.FromString(raw)
        except Exception:  # most gzip-magic hits are not descriptors
            fd = None
        if fd is not None and fd.name and fd.package in ("mvccpb", "authpb", "etcdserverpb"):
            found[fd.name] = fd
        at = data.find(b"\x1f\x8b\x08", at + 3)
    return found


Fact = tuple[object, ...]


def _facts(fd: descriptor_pb2.FileDescriptorProto) -> set[Fact]:
    """Everything about a file that reaches the wire or the gRPC method path."""
    facts: set[Fact] = set()

    def enum(e: descriptor_pb2.EnumDescriptorProto, prefix: str) -> None:
        for v in e.value:
            facts.add(("enum_value", f"{prefix}.{e.name}", v.name, v.number))

    def message(m: descriptor_pb2.DescriptorProto, prefix: str) -> None:
        full = f"{prefix}.{m.name}"
        facts.add(("message", full))
        for f in m.field:
            oneof = m.oneof_decl[f.oneof_index].name if f.HasField("oneof_index") else ""
            facts.add(("field", full, f.name, f.number, f.type, f.label, f.type_name, oneof))
        for n in m.nested_type:
            message(n, full)
        for e in m.enum_type:
            enum(e, full)

    for m in fd.message_type:
        message(m, "." + fd.package)
    for e in fd.enum_type:
        enum(e, "." + fd.package)
    for s in fd.service:
        for r in s.method:
            facts.add(
                (
                    "rpc",
                    f"/{fd.package}.{s.name}/{r.name}",
                    r.input_type,
                    r.output_type,
                    r.client_streaming,
                    r.server_streaming,
                )
            )
    return facts


def _ours(descriptor: FileDescriptor) -> descriptor_pb2.FileDescriptorProto:
    fd = descriptor_pb2.FileDescriptorProto()
    descriptor.CopyToProto(fd)
    return fd


_T = descriptor_pb2.FieldDescriptorProto
_OPT, _BOOL, _STR, _I64, _U64 = (
    _T.LABEL_OPTIONAL,
    _T.TYPE_BOOL,
    _T.TYPE_STRING,
    _T.TYPE_INT64,
    _T.TYPE_UINT64,
)
_MSG, _ENUM = _T.TYPE_MESSAGE, _T.TYPE_ENUM
_P = ".etcdserverpb."

# What etcd 3.5 and 3.6 added on top of 3.4.23; ours must add exactly this.
ADDED_AFTER_3_4: frozenset[Fact] = frozenset(
    {
        # 3.5
        ("message", _P + "AuthStatusRequest"),
        ("message", _P + "AuthStatusResponse"),
        ("field", _P + "AuthStatusResponse", "header", 1, _MSG, _OPT, _P + "ResponseHeader", ""),
        ("field", _P + "AuthStatusResponse", "enabled", 2, _BOOL, _OPT, "", ""),
        ("field", _P + "AuthStatusResponse", "authRevision", 3, _U64, _OPT, "", ""),
        (
            "rpc",
            "/etcdserverpb.Auth/AuthStatus",
            _P + "AuthStatusRequest",
            _P + "AuthStatusResponse",
            False,
            False,
        ),
        ("field", _P + "AuthUserAddRequest", "hashedPassword", 4, _STR, _OPT, "", ""),
        ("field", _P + "AuthUserChangePasswordRequest", "hashedPassword", 3, _STR, _OPT, "", ""),
        ("field", _P + "MemberListRequest", "linearizable", 1, _BOOL, _OPT, "", ""),
        ("message", _P + "DowngradeRequest"),
        ("message", _P + "DowngradeResponse"),
        ("enum_value", _P + "DowngradeRequest.DowngradeAction", "VALIDATE", 0),
        ("enum_value", _P + "DowngradeRequest.DowngradeAction", "ENABLE", 1),
        ("enum_value", _P + "DowngradeRequest.DowngradeAction", "CANCEL", 2),
        (
            "field",
            _P + "DowngradeRequest",
            "action",
            1,
            _ENUM,
            _OPT,
            _P + "DowngradeRequest.DowngradeAction",
            "",
        ),
        ("field", _P + "DowngradeRequest", "version", 2, _STR, _OPT, "", ""),
        ("field", _P + "DowngradeResponse", "header", 1, _MSG, _OPT, _P + "ResponseHeader", ""),
        ("field", _P + "DowngradeResponse", "version", 2, _STR, _OPT, "", ""),
        (
            "rpc",
            "/etcdserverpb.Maintenance/Downgrade",
            _P + "DowngradeRequest",
            _P + "DowngradeResponse",
            False,
            False,
        ),
        # 3.6
        ("field", _P + "HashKVResponse", "hash_revision", 4, _I64, _OPT, "", ""),
        ("field", _P + "SnapshotResponse", "version", 4, _STR, _OPT, "", ""),
        ("field", _P + "StatusResponse", "storageVersion", 11, _STR, _OPT, "", ""),
        ("field", _P + "StatusResponse", "dbSizeQuota", 12, _I64, _OPT, "", ""),
        ("field", _P + "StatusResponse", "downgradeInfo", 13, _MSG, _OPT, _P + "DowngradeInfo", ""),
        ("message", _P + "DowngradeInfo"),
        ("field", _P + "DowngradeInfo", "enabled", 1, _BOOL, _OPT, "", ""),
        ("field", _P + "DowngradeInfo", "targetVersion", 2, _STR, _OPT, "", ""),
        ("message", _P + "DowngradeVersionTestRequest"),
        ("field", _P + "DowngradeVersionTestRequest", "ver", 1, _STR, _OPT, "", ""),
    }
)


def test_descriptors_match_the_ones_compiled_into_etcd() -> None:
    if not Path(ETCD).is_file():
        pytest.fail(f"{ETCD} is missing: {_INSTALL_HINT}")
    theirs = _embedded_descriptors(ETCD)
    assert {"kv.proto", "auth.proto", "rpc.proto"} <= theirs.keys()
    pairs = [("kv.proto", kv_pb2), ("auth.proto", auth_pb2), ("rpc.proto", rpc_pb2)]
    extra: set[Fact] = set()
    for name, module in pairs:
        ours = _ours(module.DESCRIPTOR)
        assert ours.package == theirs[name].package
        assert _facts(theirs[name]) - _facts(ours) == set(), name
        extra |= _facts(ours) - _facts(theirs[name])
    assert extra == ADDED_AFTER_3_4


def test_descriptor_file_names_do_not_collide() -> None:
    assert kv_pb2.DESCRIPTOR.name == "raftkv/proto/kv.proto"
    assert auth_pb2.DESCRIPTOR.name == "raftkv/proto/auth.proto"
    assert rpc_pb2.DESCRIPTOR.name == "raftkv/proto/rpc.proto"
    assert list(rpc_pb2.DESCRIPTOR.dependencies) == [kv_pb2.DESCRIPTOR, auth_pb2.DESCRIPTOR]


# (message, field, number): stated independently of any binary, from etcd's .proto files.
FIELD_NUMBERS: list[tuple[str, str, int]] = [
    ("mvccpb.KeyValue", "key", 1),
    ("mvccpb.KeyValue", "create_revision", 2),
    ("mvccpb.KeyValue", "mod_revision", 3),
    ("mvccpb.KeyValue", "version", 4),
    ("mvccpb.KeyValue", "value", 5),
    ("mvccpb.KeyValue", "lease", 6),
    ("mvccpb.Event", "type", 1),
    ("mvccpb.Event", "kv", 2),
    ("mvccpb.Event", "prev_kv", 3),
    ("authpb.Permission", "permType", 1),
    ("authpb.User", "options", 4),
    ("etcdserverpb.ResponseHeader", "cluster_id", 1),
    ("etcdserverpb.ResponseHeader", "member_id", 2),
    ("etcdserverpb.ResponseHeader", "revision", 3),
    ("etcdserverpb.ResponseHeader", "raft_term", 4),
    ("etcdserverpb.RangeRequest", "revision", 4),
    ("etcdserverpb.RangeRequest", "sort_order", 5),
    ("etcdserverpb.RangeRequest", "serializable", 7),
    ("etcdserverpb.RangeRequest", "count_only", 9),
    ("etcdserverpb.RangeRequest", "max_create_revision", 13),
    ("etcdserverpb.RangeResponse", "count", 4),
    ("etcdserverpb.PutRequest", "ignore_lease", 6),
    ("etcdserverpb.DeleteRangeResponse", "prev_kvs", 3),
    ("etcdserverpb.RequestOp", "request_txn", 4),
    ("etcdserverpb.Compare", "lease", 8),
    ("etcdserverpb.Compare", "range_end", 64),
    ("etcdserverpb.TxnResponse", "responses", 3),
    ("etcdserverpb.WatchRequest", "progress_request", 3),
    ("etcdserverpb.WatchCreateRequest", "progress_notify", 4),
    ("etcdserverpb.WatchCreateRequest", "filters", 5),
    ("etcdserverpb.WatchCreateRequest", "prev_kv", 6),
    ("etcdserverpb.WatchCreateRequest", "watch_id", 7),
    ("etcdserverpb.WatchCreateRequest", "fragment", 8),
    ("etcdserverpb.WatchResponse", "compact_revision", 5),
    ("etcdserverpb.WatchResponse", "cancel_reason", 6),
    ("etcdserverpb.WatchResponse", "fragment", 7),
    ("etcdserverpb.WatchResponse", "events", 11),
    ("etcdserverpb.LeaseGrantRequest", "TTL", 1),
    ("etcdserverpb.LeaseGrantRequest", "ID", 2),
    ("etcdserverpb.LeaseTimeToLiveResponse", "grantedTTL", 4),
    ("etcdserverpb.LeaseCheckpoint", "remaining_TTL", 2),
    ("etcdserverpb.Member", "isLearner", 5),
    ("etcdserverpb.AlarmRequest", "alarm", 3),
    ("etcdserverpb.StatusResponse", "raftAppliedIndex", 7),
    ("etcdserverpb.StatusResponse", "isLearner", 10),
    ("etcdserverpb.HashKVResponse", "compact_revision", 3),
    ("etcdserverpb.SnapshotResponse", "blob", 3),
    ("etcdserverpb.AuthUserAddRequest", "options", 3),
]


@pytest.mark.parametrize(("message", "field", "number"), FIELD_NUMBERS)
def test_field_numbers(message: str, field: str, number: int) -> None:
    package, name = message.split(".")
    module = {"mvccpb": kv_pb2, "authpb": auth_pb2, "etcdserverpb": rpc_pb2}[package]
    descriptor = module.DESCRIPTOR.message_types_by_name[name]
    assert descriptor.full_name == message
    assert descriptor.fields_by_name[field].number == number


def test_enum_values() -> None:
    assert dict(rpc_pb2.AlarmType.items()) == {"NONE": 0, "NOSPACE": 1, "CORRUPT": 2}
    assert dict(kv_pb2.Event.EventType.items()) == {"PUT": 0, "DELETE": 1}
    assert dict(rpc_pb2.RangeRequest.SortOrder.items()) == {"NONE": 0, "ASCEND": 1, "DESCEND": 2}
    assert rpc_pb2.RangeRequest.SortTarget.Value("VALUE") == 4
    assert rpc_pb2.Compare.CompareResult.Value("NOT_EQUAL") == 3
    assert rpc_pb2.Compare.CompareTarget.Value("LEASE") == 4
    assert dict(rpc_pb2.WatchCreateRequest.FilterType.items()) == {"NOPUT": 0, "NODELETE": 1}
    assert auth_pb2.Permission.Type.Value("READWRITE") == 2


def test_services_and_methods() -> None:
    services = {
        s.full_name: sorted(m.name for m in s.methods)
        for s in rpc_pb2.DESCRIPTOR.services_by_name.values()
    }
    assert services["etcdserverpb.KV"] == ["Compact", "DeleteRange", "Put", "Range", "Txn"]
    assert services["etcdserverpb.Watch"] == ["Watch"]
    assert set(services) == {
        f"etcdserverpb.{s}" for s in ("KV", "Watch", "Lease", "Cluster", "Maintenance", "Auth")
    }
    assert len(services["etcdserverpb.Auth"]) == 17
    assert len(services["etcdserverpb.Maintenance"]) == 8


# ------------------------------------------------------------------ a live etcd


def test_key_written_by_etcdctl_reads_back_through_our_range(
    etcd: RealEtcd, channel: grpc.Channel
) -> None:
    etcd.etcdctl("put", "wire/a", "v1")
    etcd.etcdctl("put", "wire/a", "v2")
    expected = etcd.etcdctl_json("get", "wire/a")
    resp = rpc_pb2_grpc.KVStub(channel).Range(rpc_pb2.RangeRequest(key=b"wire/a"), timeout=10)
    assert resp.count == 1 and len(resp.kvs) == 1
    kv = resp.kvs[0]
    assert (kv.key, kv.value, kv.version) == (b"wire/a", b"v2", 2)
    (theirs,) = expected["kvs"]
    assert kv.create_revision == theirs["create_revision"]
    assert kv.mod_revision == theirs["mod_revision"] == kv.create_revision + 1
    header = expected["header"]
    assert resp.header.cluster_id == header["cluster_id"]
    assert resp.header.member_id == header["member_id"]
    assert resp.header.revision >= header["revision"]


def test_our_put_and_txn_are_seen_by_etcdctl(etcd: RealEtcd, channel: grpc.Channel) -> None:
    kv = rpc_pb2_grpc.KVStub(channel)
    put = kv.Put(rpc_pb2.PutRequest(key=b"wire/b", value=b"x" * 3), timeout=10)
    assert put.header.revision > 0
    txn = kv.Txn(
        rpc_pb2.TxnRequest(
            compare=[
                rpc_pb2.Compare(
                    key=b"wire/b",
                    target=rpc_pb2.Compare.MOD,
                    result=rpc_pb2.Compare.EQUAL,
                    mod_revision=put.header.revision,
                )
            ],
            success=[
                rpc_pb2.RequestOp(
                    request_put=rpc_pb2.PutRequest(key=b"wire/b", value=b"won", prev_kv=True)
                ),
                rpc_pb2.RequestOp(request_range=rpc_pb2.RangeRequest(key=b"wire/b")),
            ],
            failure=[rpc_pb2.RequestOp(request_range=rpc_pb2.RangeRequest(key=b"wire/b"))],
        ),
        timeout=10,
    )
    assert txn.succeeded
    assert txn.header.revision == put.header.revision + 1
    first, second = txn.responses
    assert first.WhichOneof("response") == "response_put"
    assert first.response_put.prev_kv.value == b"xxx"
    assert second.response_range.kvs[0].value == b"won"
    assert etcd.etcdctl("get", "--print-value-only", "wire/b") == "won\n"


def test_watch_sees_etcdctl_writes(etcd: RealEtcd, channel: grpc.Channel) -> None:
    requests: queue.Queue[rpc_pb2.WatchRequest | None] = queue.Queue()

    def send() -> Iterator[rpc_pb2.WatchRequest]:
        while (item := requests.get()) is not None:
            yield item

    create = rpc_pb2.WatchCreateRequest(key=b"wire/w/", range_end=b"wire/w0", prev_kv=True)
    requests.put(rpc_pb2.WatchRequest(create_request=create))
    stream = rpc_pb2_grpc.WatchStub(channel).Watch(send(), timeout=20)
    try:
        created = next(stream)
        assert created.created and not created.canceled
        etcd.etcdctl("put", "wire/w/k", "one")
        etcd.etcdctl("put", "wire/w/k", "two")
        etcd.etcdctl("del", "wire/w/k")
        events: list[kv_pb2.Event] = []
        while len(events) < 3:
            resp = next(stream)
            assert resp.watch_id == created.watch_id
            events.extend(resp.events)
        put1, put2, delete = events
        assert (put1.type, put1.kv.value, put1.kv.version) == (kv_pb2.Event.PUT, b"one", 1)
        assert (put2.kv.value, put2.prev_kv.value, put2.kv.version) == (b"two", b"one", 2)
        assert delete.type == kv_pb2.Event.DELETE
        assert delete.kv.key == b"wire/w/k" and delete.prev_kv.value == b"two"
        assert delete.kv.mod_revision == put2.kv.mod_revision + 1
        cancel = rpc_pb2.WatchCancelRequest(watch_id=created.watch_id)
        requests.put(rpc_pb2.WatchRequest(cancel_request=cancel))
        canceled = next(stream)
        assert canceled.canceled and canceled.watch_id == created.watch_id
    finally:
        requests.put(None)
        stream.cancel()


def test_lease_grant_is_listed_by_etcdctl(etcd: RealEtcd, channel: grpc.Channel) -> None:
    lease = rpc_pb2_grpc.LeaseStub(channel)
    granted = lease.LeaseGrant(rpc_pb2.LeaseGrantRequest(TTL=600), timeout=10)
    assert granted.ID > 0 and granted.TTL == 600 and granted.error == ""
    rpc_pb2_grpc.KVStub(channel).Put(
        rpc_pb2.PutRequest(key=b"wire/leased", value=b"v", lease=granted.ID), timeout=10
    )
    ttl = lease.LeaseTimeToLive(
        rpc_pb2.LeaseTimeToLiveRequest(ID=granted.ID, keys=True), timeout=10
    )
    assert ttl.ID == granted.ID and ttl.grantedTTL == 600 and 0 < ttl.TTL <= 600
    assert list(ttl.keys) == [b"wire/leased"]
    listed = lease.LeaseLeases(rpc_pb2.LeaseLeasesRequest(), timeout=10)
    assert granted.ID in [s.ID for s in listed.leases]
    assert f"{granted.ID:x}" in etcd.etcdctl("lease", "list")
    got = rpc_pb2_grpc.KVStub(channel).Range(rpc_pb2.RangeRequest(key=b"wire/leased"), timeout=10)
    assert got.kvs[0].lease == granted.ID


def test_member_list_status_and_hashkv(etcd: RealEtcd, channel: grpc.Channel) -> None:
    cluster = rpc_pb2_grpc.ClusterStub(channel)
    # linearizable (field 1) is unknown to etcd 3.4, which must ignore it.
    members = cluster.MemberList(rpc_pb2.MemberListRequest(linearizable=True), timeout=10)
    (member,) = members.members
    assert member.name == etcd.name
    assert list(member.peerURLs) == [etcd.peer_url]
    assert list(member.clientURLs) == [f"http://{etcd.endpoint}"]
    assert not member.isLearner
    assert members.header.member_id == member.ID

    maintenance = rpc_pb2_grpc.MaintenanceStub(channel)
    status = maintenance.Status(rpc_pb2.StatusRequest(), timeout=10)
    assert status.version.startswith("3.4")
    assert status.leader == member.ID == status.header.member_id
    assert status.dbSize > 0 and 0 < status.dbSizeInUse <= status.dbSize
    assert status.raftIndex >= status.raftAppliedIndex > 0 and status.raftTerm >= 1

    (status_json,) = etcd.etcdctl_json("endpoint", "status")
    assert status_json["Status"]["version"] == status.version

    hashed = maintenance.HashKV(rpc_pb2.HashKVRequest(), timeout=10)
    assert hashed.header.revision > 0
    (theirs,) = etcd.etcdctl_json("endpoint", "hashkv")
    assert theirs["HashKV"]["hash"] == hashed.hash

    alarms = maintenance.Alarm(rpc_pb2.AlarmRequest(action=rpc_pb2.AlarmRequest.GET), timeout=10)
    assert list(alarms.alarms) == []
