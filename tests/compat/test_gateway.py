"""The JSON gateway beside a real etcd's: the same HTTP requests (curl's, as raw JSON) and the
same ``etcd3gw`` calls against both, answers compared field by field.

What legitimately differs is normalised away: cluster, member and lease IDs, raft terms and
indexes, sizes and version strings.  Everything else (field names, int64 as strings, base64,
left-out zero values, revisions, error bodies and HTTP statuses) must match.  raftkv serves the
gateway on ``--listen-client-http-urls``; etcd on its client URL.
"""

from __future__ import annotations

import base64
import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import etcd3gw
import pytest

from tests.cluster.harness import Cluster, free_ports
from tests.compat.servers import Target, require_etcd, start_etcd

_VOLATILE = {"cluster_id", "member_id", "raft_term", "ID", "raftIndex", "raftTerm",
             "raftAppliedIndex", "dbSize", "dbSizeInUse", "leader", "peerURLs", "clientURLs",
             "name"}  # fmt: skip
# Status fields etcd 3.4 has (3.5 adds storageVersion, dbSizeQuota, ...; raftkv sends those)
_STATUS_34 = {"header", "version", "dbSize", "leader", "raftIndex", "raftTerm",
              "raftAppliedIndex", "dbSizeInUse"}  # fmt: skip


@pytest.fixture(scope="module")
def etcd_base(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    require_etcd()
    target: Target = start_etcd(tmp_path_factory.mktemp("etcd-gw"))
    try:
        yield f"http://{target.endpoints[0]}"
    finally:
        target.close()


@pytest.fixture(scope="module")
def raftkv_base(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    (port,) = free_ports(1)
    root: Path = tmp_path_factory.mktemp("raftkv-gw")
    c = Cluster(root, 1, extra_args=["--listen-client-http-urls", f"http://127.0.0.1:{port}"])
    try:
        c.start_all()
        yield f"http://127.0.0.1:{port}"
    finally:
        c.close()


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def post(base: str, path: str, body: bytes | str | dict[str, Any]) -> tuple[int, Any]:
    data = body if isinstance(body, bytes) else (
        body.encode() if isinstance(body, str) else json.dumps(body).encode()
    )  # fmt: skip
    req = urllib.request.Request(base + path, data=data, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def normalise(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: ("<v>" if k in _VOLATILE else normalise(v)) for k, v in value.items()}
    if isinstance(value, list):
        return [normalise(v) for v in value]
    return value


def http_story(base: str, prefix: str) -> list[tuple[str, int, Any]]:
    """Requests as curl sends them; (label, HTTP status, normalised body) each."""
    k = f"{prefix}/k"
    out: list[tuple[str, int, Any]] = []

    def step(label: str, path: str, body: bytes | str | dict[str, Any]) -> Any:
        status, answer = post(base, path, body)
        shown = normalise(answer)
        if label == "status":  # which fields, not their values (versions and sizes differ)
            shown = sorted(k for k in answer if k in _STATUS_34)
        elif label == "lease timetolive":  # a second may pass on either
            shown["TTL"] = "<ttl>"
        out.append((label, status, shown))
        return answer

    step("put", "/v3/kv/put", {"key": b64(k), "value": b64("v1")})
    step("put prev_kv", "/v3/kv/put", {"key": b64(k), "value": b64("v2"), "prev_kv": True})
    step("put other", "/v3/kv/put", {"key": b64(f"{prefix}/l"), "value": b64("w")})
    step("range", "/v3/kv/range", {"key": b64(k)})
    step("range camelCase", "/v3/kv/range", json.dumps({"key": b64(k), "keysOnly": True}))
    step("range prefix", "/v3/kv/range", {"key": b64(prefix + "/"), "range_end": b64(prefix + "0"),
                                          "sort_order": "DESCEND", "sort_target": "KEY"})  # fmt: skip
    step("range count", "/v3/kv/range", {"key": b64(prefix), "range_end": b64(prefix + "0"),
                                         "count_only": True})  # fmt: skip
    step("range unknown field", "/v3/kv/range", {"key": b64(k), "bogus": 1})
    step("range future", "/v3/kv/range", {"key": b64(k), "revision": "1000"})
    step(
        "txn",
        "/v3/kv/txn",
        {
            "compare": [{"key": b64(k), "result": "EQUAL", "target": "VALUE", "value": b64("v2")}],
            "success": [{"request_put": {"key": b64(k), "value": b64("v3")}},
                        {"request_range": {"key": b64(k)}}],
            "failure": [{"request_range": {"key": b64(k)}}],
        },
    )  # fmt: skip
    step(
        "txn failure",
        "/v3/kv/txn",
        {
            "compare": [{"key": b64(k), "target": "VERSION", "version": "0"}],
            "failure": [{"request_delete_range": {"key": b64(f"{prefix}/l"), "prev_kv": True}}],
        },
    )
    step("delete prev_kv", "/v3/kv/deleterange", {"key": b64(k), "prev_kv": True})
    step("compaction", "/v3/kv/compaction", {"revision": "2"})
    step("range compacted", "/v3/kv/range", {"key": b64(k), "revision": "1"})
    step("put empty key", "/v3/kv/put", {"key": ""})
    step("truncated body", "/v3/kv/put", '{"key":"' + b64(k))
    grant = step("lease grant", "/v3/lease/grant", {"TTL": "60"})
    lease = grant["ID"]
    step("put with lease", "/v3/kv/put", {"key": b64(k), "value": b64("l"), "lease": lease})
    ttl = step("lease timetolive", "/v3/lease/timetolive", {"ID": lease, "keys": True})
    assert 55 <= int(ttl["TTL"]) <= 60, ttl
    step("lease leases", "/v3/lease/leases", {})
    step("lease revoke", "/v3/lease/revoke", {"ID": lease})
    step("lease revoke again", "/v3/lease/revoke", {"ID": lease})
    step("range after revoke", "/v3/kv/range", {"key": b64(k)})
    step("alarm list", "/v3/maintenance/alarm", {"action": "GET"})
    step("member list", "/v3/cluster/member/list", {})
    step("status", "/v3/maintenance/status", {})
    step("empty body", "/v3/kv/range", "")
    step("not an object", "/v3/kv/range", "[1]")
    return out


def test_http_gateway_answers_as_etcds(etcd_base: str, raftkv_base: str) -> None:
    etcd = http_story(etcd_base, "gw")
    ours = http_story(raftkv_base, "gw")
    # etcd 3.4 words JSON errors its own way (Go's decoder); the status and code must agree
    for (label, e_status, e_body), (_l, o_status, o_body) in zip(etcd, ours, strict=True):
        if label in ("not an object",):
            assert (o_status, o_body["code"]) == (e_status, e_body["code"]), label
            continue
        assert (label, o_status, o_body) == (label, e_status, e_body)


def watch_lines(base: str, body: dict[str, Any], want: int) -> list[Any]:
    """The first ``want`` stream objects of ``/v3/watch`` (read as they arrive)."""
    req = urllib.request.Request(base + "/v3/watch", data=json.dumps(body).encode())
    lines: list[Any] = []
    with urllib.request.urlopen(req, timeout=10) as resp:
        while len(lines) < want:
            line = resp.readline()
            assert line, f"the watch stream ended after {lines}"
            lines.append(normalise(json.loads(line)))
    return lines


def test_watch_stream_as_etcds(etcd_base: str, raftkv_base: str) -> None:
    results = []
    for base in (etcd_base, raftkv_base):
        key = b64("ws/a")
        start = post(base, "/v3/kv/put", {"key": key, "value": b64("0")})[1]["header"]["revision"]
        got: list[Any] = []
        create = {"create_request": {"key": key, "start_revision": start, "prev_kv": True}}
        reader = threading.Thread(
            target=lambda b=base, c=create, g=got: g.extend(watch_lines(b, c, 4))
        )
        reader.start()
        time.sleep(0.5)  # the watch is open; these changes arrive live
        post(base, "/v3/kv/put", {"key": key, "value": b64("1")})
        post(base, "/v3/kv/deleterange", {"key": key})
        reader.join(20)
        assert not reader.is_alive()
        results.append(got)
    assert results[1] == results[0]
    created, first, second, third = results[1]
    assert created["result"]["created"] is True
    assert [
        e.get("type", "PUT") for r in (first, second, third) for e in r["result"]["events"]
    ] == [
        "PUT",
        "PUT",
        "DELETE",
    ]


def gw_client_story(base: str) -> list[Any]:
    host, port = base.removeprefix("http://").split(":")
    client = etcd3gw.Etcd3Client(host=host, port=int(port), timeout=10)
    out: list[Any] = []
    assert client.put("c/a", "1") is True
    assert client.put("c/b", "2") is True
    out.append([v for v in client.get("c/a")])
    out.append(sorted((v, m["key"]) for v, m in client.get_prefix("c/", sort_order="ascend")))
    out.append(client.replace("c/a", "1", "one"))
    out.append(client.replace("c/a", "1", "uno"))
    out.append(client.create("c/a", "x"))
    out.append(client.create("c/new", "x"))
    lease = client.lease(ttl=60)
    assert client.put("c/leased", "v", lease=lease)
    out.append(sorted(lease.keys()))
    out.append(55 <= lease.ttl() <= 60)
    out.append(55 <= lease.refresh() <= 60)
    out.append(lease.revoke())
    out.append(client.get("c/leased"))
    events, cancel = client.watch("c/w")
    time.sleep(0.5)
    client.put("c/w", "watched")
    event = next(events)
    cancel()
    out.append((event["kv"]["key"], event["kv"]["value"], event["kv"]["version"]))
    out.append(client.delete("c/a"))
    out.append(client.delete("c/a"))
    out.append(client.delete_prefix("c/"))
    out.append(client.get_prefix("c/"))
    out.append(normalise(client.status())["header"]["revision"])
    out.append(len(client.members()))
    return out


def test_etcd3gw_client_works_as_against_etcd(etcd_base: str, raftkv_base: str) -> None:
    etcd = gw_client_story(etcd_base)
    ours = gw_client_story(raftkv_base)
    assert ours == etcd
