"""Malformed gRPC payloads against a real member (serving gRPC itself, and behind front
processes): INVALID_ARGUMENT with a short etcd-like
message, for unary, server-streaming and bidirectional methods, and nothing in the member's log
at ERROR (no traceback); well-formed requests keep working."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
from google.protobuf.message import DecodeError

from raftkv.api.registration import STREAM_PREFIX, UNARY_PREFIX, reason
from raftkv.proto import rpc_pb2 as pb
from tests.cluster.harness import Cluster, require_etcdctl

GARBAGE = b"\xff\xff\xff\xff\xff"


def _identity(data: bytes) -> bytes:
    return data


def _truncated(message: pb.PutRequest) -> bytes:
    """A valid encoding cut inside its last (length-delimited) field."""
    data = message.SerializeToString()
    assert len(data) > 20
    return data[:-10]


@pytest.fixture(scope="module", params=[0, 2], ids=["member", "fronts"])
def cluster(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[Cluster]:
    """One member serving gRPC itself, and one behind two front processes (the fronts pass
    payloads through undecoded: the member's answer must reach the client unchanged)."""
    require_etcdctl()
    root: Path = tmp_path_factory.mktemp("registration")
    c = Cluster(root, 1, ["--grpc-front-processes", str(request.param)])
    try:
        c.start_all()
        yield c
    finally:
        c.close()


@pytest.fixture(scope="module")
def channel(cluster: Cluster) -> Iterator[grpc.Channel]:
    ch = grpc.insecure_channel(cluster.members[0].endpoint)
    yield ch
    ch.close()


def _log_since(cluster: Cluster, offset: int) -> str:
    return cluster.members[0].log_path.read_bytes()[offset:].decode(errors="replace")


def _log_size(cluster: Cluster) -> int:
    return cluster.members[0].log_path.stat().st_size


def _status(call: Callable[[], object]) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as info:
        call()
    err = info.value
    assert isinstance(err, grpc.Call)
    return err.code(), err.details() or ""


def _assert_short(details: str, prefix: str) -> None:
    assert details.startswith(prefix), details
    assert "\n" not in details and len(details) < 120, details
    for internal in ("Exception", "Traceback", "Unexpected", "<class", "DecodeError"):
        assert internal not in details, details


@pytest.mark.parametrize(
    ("method", "payload"),
    [
        ("/etcdserverpb.KV/Put", GARBAGE),
        ("/etcdserverpb.KV/Put", _truncated(pb.PutRequest(key=b"k" * 10, value=b"v" * 100))),
        ("/etcdserverpb.KV/Range", GARBAGE),
        ("/etcdserverpb.Lease/LeaseGrant", GARBAGE),
        ("/raftkvpb.Guard/RepairMember", b"{not json"),
    ],
)
def test_malformed_unary_request(
    cluster: Cluster, channel: grpc.Channel, method: str, payload: bytes
) -> None:
    before = _log_size(cluster)
    call = channel.unary_unary(
        method, request_serializer=_identity, response_deserializer=_identity
    )
    code, details = _status(lambda: call(payload, timeout=10))
    assert code == grpc.StatusCode.INVALID_ARGUMENT, details
    _assert_short(details, UNARY_PREFIX)
    log = _log_since(cluster, before)
    assert "Traceback" not in log and " ERROR " not in log, log


def test_malformed_server_streaming_request(cluster: Cluster, channel: grpc.Channel) -> None:
    before = _log_size(cluster)
    call = channel.unary_stream(
        "/etcdserverpb.Maintenance/Snapshot",
        request_serializer=_identity,
        response_deserializer=_identity,
    )
    code, details = _status(lambda: list(call(GARBAGE, timeout=10)))
    assert code == grpc.StatusCode.INVALID_ARGUMENT, details
    _assert_short(details, STREAM_PREFIX)
    assert "Traceback" not in _log_since(cluster, before)


def test_malformed_message_in_an_open_watch_stream(cluster: Cluster, channel: grpc.Channel) -> None:
    """A valid create is answered; the garbage message that follows ends the stream with
    INVALID_ARGUMENT."""
    before = _log_size(cluster)
    created = threading.Event()
    create = pb.WatchRequest(create_request=pb.WatchCreateRequest(key=b"reg/k"))

    def requests() -> Iterator[bytes]:
        yield create.SerializeToString()
        assert created.wait(10), "no created response"
        yield GARBAGE

    call = channel.stream_stream(
        "/etcdserverpb.Watch/Watch",
        request_serializer=_identity,
        response_deserializer=pb.WatchResponse.FromString,
    )
    responses = call(requests(), timeout=20)
    first = next(responses)
    assert first.created and not first.canceled
    created.set()
    code, details = _status(lambda: list(responses))
    assert code == grpc.StatusCode.INVALID_ARGUMENT, details
    _assert_short(details, STREAM_PREFIX)
    log = _log_since(cluster, before)
    assert "Traceback" not in log and " ERROR " not in log, log


def test_malformed_lease_keepalive(cluster: Cluster, channel: grpc.Channel) -> None:
    call = channel.stream_stream(
        "/etcdserverpb.Lease/LeaseKeepAlive",
        request_serializer=_identity,
        response_deserializer=_identity,
    )
    code, details = _status(lambda: list(call(iter([GARBAGE]), timeout=10)))
    assert code == grpc.StatusCode.INVALID_ARGUMENT, details
    _assert_short(details, STREAM_PREFIX)


def test_well_formed_requests_still_served(cluster: Cluster, channel: grpc.Channel) -> None:
    put = channel.unary_unary(
        "/etcdserverpb.KV/Put",
        request_serializer=pb.PutRequest.SerializeToString,
        response_deserializer=pb.PutResponse.FromString,
    )
    rng = channel.unary_unary(
        "/etcdserverpb.KV/Range",
        request_serializer=pb.RangeRequest.SerializeToString,
        response_deserializer=pb.RangeResponse.FromString,
    )
    put(pb.PutRequest(key=b"reg/ok", value=b"1"), timeout=10)
    got = rng(pb.RangeRequest(key=b"reg/ok"), timeout=10)
    assert [kv.value for kv in got.kvs] == [b"1"]
    assert cluster.etcdctl("get", "reg/ok", "--print-value-only").stdout.strip() == "1"


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (
            DecodeError("Error parsing message with type 'etcdserverpb.PutRequest': Wire format"),
            "wire format",
        ),
        (DecodeError("Error parsing message"), "error parsing message"),
        (ValueError("Expecting value: line 1\ncolumn 1"), "expecting value: line 1 column 1"),
        (ValueError(""), "ValueError"),
    ],
)
def test_reason_is_one_short_line(exc: Exception, expected: str) -> None:
    assert reason(exc) == expected
