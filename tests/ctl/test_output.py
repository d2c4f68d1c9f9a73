"""Pure helpers of the client: Go-compatible quoting, JSON, tables, units, txn grammar."""

from __future__ import annotations

import argparse

import pytest

from raftkv.client import output as fmt
from raftkv.client.conn import CtlError, grpc_target, parse_go_int, parse_lease_id
from raftkv.ctl.client_flags import parse_duration
from raftkv.ctl.client_kv import prefix_range_end
from raftkv.ctl.client_txn import argify, parse_compare
from raftkv.proto import kv_pb2, rpc_pb2
from tests.ctl import harness


def test_go_quote() -> None:
    assert fmt.go_quote(b"plain") == '"plain"'
    assert fmt.go_quote(b'a"b\\c\n\t\x00\x7f') == '"a\\"b\\\\c\\n\\t\\x00\\x7f"'
    assert fmt.go_quote("é".encode()) == '"é"'
    assert fmt.go_quote(b"\xff\xfe") == '"\\xff\\xfe"'


def test_go_json_of_messages() -> None:
    resp = rpc_pb2.RangeResponse(
        header=rpc_pb2.ResponseHeader(cluster_id=2**64 - 1, revision=5),
        kvs=[kv_pb2.KeyValue(key=b"k", value=b"<&>", version=1)],
        count=1,
    )
    assert fmt.go_json_dumps(fmt.go_json_obj(resp)) == (
        b'{"header":{"cluster_id":18446744073709551615,"revision":5},'
        b'"kvs":[{"key":"aw==","version":1,"value":"PCY+"}],"count":1}'
    )
    op = rpc_pb2.ResponseOp(response_put=rpc_pb2.PutResponse())
    assert fmt.go_json_obj(op) == {"Response": {"ResponsePut": {}}}
    assert fmt.go_json_dumps({"s": "<a&b>\u2028"}) == b'{"s":"\\u003ca\\u0026b\\u003e\\u2028"}'
    status = rpc_pb2.StatusResponse(version="3.6.0", storageVersion="3.6", dbSizeQuota=5)
    assert fmt.go_json_obj(status) == {"version": "3.6.0"}


def test_proto_text_compact() -> None:
    alarm = rpc_pb2.AlarmMember(memberID=12, alarm=rpc_pb2.NOSPACE)
    assert fmt.proto_text_compact(alarm) == "memberID:12 alarm:NOSPACE "


@pytest.mark.parametrize(
    ("size", "text"),
    [
        (0, "0 B"),
        (9, "9 B"),
        (20480, "20 kB"),
        (25000, "25 kB"),
        (1500, "1.5 kB"),
        (999_999, "1000 kB"),
        (3_400_000_000, "3.4 GB"),
    ],
)
def test_humanize_bytes(size: int, text: str) -> None:
    assert fmt.humanize_bytes(size) == text


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (0.0000005, "500ns"),
        (0.0000025, "2.5µs"),
        (0.002258888, "2.258888ms"),
        (1.5, "1.5s"),
        (61, "1m1s"),
        (3600.25, "1h0m0.25s"),
    ],
)
def test_go_duration(seconds: float, text: str) -> None:
    assert fmt.go_duration(seconds) == text


def test_table_layout() -> None:
    lines = fmt.render_table(["id", "status"], [["2e1", "started"]])
    assert lines == [
        "+-----+---------+",
        "| ID  | STATUS  |",
        "+-----+---------+",
        "| 2e1 | started |",
        "+-----+---------+",
    ]


def test_prefix_range_end() -> None:
    assert prefix_range_end(b"abc") == b"abd"
    assert prefix_range_end(b"a\xff") == b"b"
    assert prefix_range_end(b"\xff\xff") == b"\x00"


def test_argify() -> None:
    assert argify("put k \"a b\\tc\" 'x y'") == ["put", "k", "a b\tc", "x y"]
    assert argify("get  k   --prefix") == ["get", "k", "--prefix"]


def test_parse_compare() -> None:
    cmp = parse_compare('mod("k") > "3"')
    assert (cmp.target, cmp.result, cmp.key, cmp.mod_revision) == (
        rpc_pb2.Compare.MOD,
        rpc_pb2.Compare.GREATER,
        b"k",
        3,
    )
    cmp = parse_compare('lease("k") != "1f"')
    assert (cmp.target, cmp.result, cmp.lease) == (
        rpc_pb2.Compare.LEASE,
        rpc_pb2.Compare.NOT_EQUAL,
        31,
    )
    cmp = parse_compare('val("k") == "\\x00z"')
    assert (cmp.target, cmp.result, cmp.value) == (
        rpc_pb2.Compare.VALUE,
        rpc_pb2.Compare.EQUAL,
        b"\x00z",
    )
    with pytest.raises(CtlError) as err:
        parse_compare('value("k") ~ "1"')
    assert err.value.message == 'malformed comparison: value("k") ~ "1" (unknown op ~)'


def test_number_parsing() -> None:
    assert parse_lease_id("7fffffffffffffff") == 2**63 - 1
    with pytest.raises(CtlError) as err:
        parse_lease_id("8000000000000000")
    assert "value out of range" in err.value.message
    assert parse_go_int("-5") == -5
    with pytest.raises(ValueError, match='parsing "1x": invalid syntax'):
        parse_go_int("1x")
    assert parse_duration("2s") == 2.0
    assert parse_duration("1m30s") == 90.0
    assert parse_duration("500ms") == 0.5
    with pytest.raises(argparse.ArgumentTypeError):
        parse_duration("soon")
    assert grpc_target("http://127.0.0.1:2379/") == "127.0.0.1:2379"


def test_missing_etcd_names_the_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(harness, "ETCD", None)
    with pytest.raises(RuntimeError, match="apt-get install etcd-server"):
        harness.require_etcd_tools()
