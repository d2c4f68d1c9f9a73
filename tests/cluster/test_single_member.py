"""One real member driven by Debian's etcdctl: the everyday commands, errors and restart."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable

import grpc

from raftkv.proto import rpc_pb2 as pb
from raftkv.proto import rpc_pb2_grpc as pb_grpc
from tests.cluster.harness import Cluster
from tests.prom_text import parse


def test_put_get_delete_txn(make_cluster: Callable[..., Cluster]) -> None:
    c = make_cluster(1)
    assert c.etcdctl("put", "foo", "bar").stdout.strip() == "OK"
    assert c.etcdctl("get", "foo").stdout.splitlines() == ["foo", "bar"]
    out = c.etcdctl("put", "foo", "baz", "--prev-kv").stdout.splitlines()
    assert out == ["OK", "foo", "bar"]
    got = json.loads(c.etcdctl("get", "foo", "-w", "json").stdout)
    kv = got["kvs"][0]
    assert (kv["create_revision"], kv["mod_revision"], kv["version"]) == (2, 3, 2)
    assert got["header"]["revision"] == 3
    # historical read at the first revision of the key
    assert c.etcdctl("get", "foo", "--rev=2", "--print-value-only").stdout.strip() == "bar"
    for i in range(5):
        c.etcdctl("put", f"dir/k{i}", f"v{i}")
    keys = c.etcdctl("get", "dir/", "--prefix", "--keys-only").stdout.split()
    assert keys == [f"dir/k{i}" for i in range(5)]
    limited = json.loads(c.etcdctl("get", "dir/", "--prefix", "--limit=2", "-w", "json").stdout)
    assert len(limited["kvs"]) == 2 and limited["more"] and limited["count"] == 5
    txn = 'value("foo") = "baz"\n\nput foo qux\n\nput foo nope\n\n'
    out = c.etcdctl("txn", stdin=txn).stdout.splitlines()
    assert out[0] == "SUCCESS"
    assert c.etcdctl("get", "foo", "--print-value-only").stdout.strip() == "qux"
    assert c.etcdctl("del", "dir/", "--prefix").stdout.strip() == "5"
    assert c.etcdctl("get", "dir/", "--prefix").stdout == ""


def test_errors_match_etcd(make_cluster: Callable[..., Cluster]) -> None:
    c = make_cluster(1)
    for i in range(3):
        c.etcdctl("put", "k", str(i))
    c.etcdctl("compaction", "3")
    res = c.etcdctl("get", "k", "--rev=2", check=False)
    assert res.returncode != 0
    assert "etcdserver: mvcc: required revision has been compacted" in res.stderr
    res = c.etcdctl("get", "k", "--rev=99", check=False)
    assert "etcdserver: mvcc: required revision is a future revision" in res.stderr
    res = c.etcdctl("lease", "revoke", "1234abcd", check=False)
    assert "etcdserver: requested lease not found" in res.stderr
    res = c.etcdctl("put", "k", "v", "--lease=1234abcd", check=False)
    assert "etcdserver: requested lease not found" in res.stderr
    res = c.etcdctl("put", "missing", "--ignore-value", check=False)
    assert "etcdserver: key not found" in res.stderr
    big = "x" * (2 * 1024 * 1024)
    res = c.etcdctl("put", "big", check=False, stdin=big)
    assert res.returncode != 0
    assert "request is too large" in res.stderr or "message larger than max" in res.stderr


def test_lease_expiry_deletes_keys(make_cluster: Callable[..., Cluster]) -> None:
    c = make_cluster(1)
    out = c.etcdctl("lease", "grant", "2").stdout.split()
    lease_id = out[1]
    c.etcdctl("put", "eph", "v", f"--lease={lease_id}")
    ttl = c.etcdctl("lease", "timetolive", lease_id, "--keys").stdout
    assert "attached keys([eph])" in ttl
    assert lease_id in c.etcdctl("lease", "list").stdout
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and c.etcdctl("get", "eph").stdout:
        time.sleep(0.3)
    assert c.etcdctl("get", "eph").stdout == ""
    assert lease_id not in c.etcdctl("lease", "list").stdout


def test_watch_sees_history_and_new_events(make_cluster: Callable[..., Cluster]) -> None:
    c = make_cluster(1)
    c.etcdctl("put", "w/a", "1")
    c.etcdctl("put", "w/b", "2")
    proc = subprocess.Popen(
        [
            "etcdctl",
            "--endpoints",
            c.endpoints,
            "watch",
            "w/",
            "--prefix",
            "--rev=2",
            "--prev-kv",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        time.sleep(1.0)
        c.etcdctl("put", "w/a", "3")
        c.etcdctl("del", "w/b")
        lines: list[str] = []
        deadline = time.monotonic() + 10
        assert proc.stdout is not None
        while len(lines) < 11 and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line.rstrip("\n"))
    finally:
        proc.kill()
        proc.wait(5)
        if proc.stdout is not None:
            proc.stdout.close()
    assert lines[:6] == ["PUT", "w/a", "1", "PUT", "w/b", "2"]
    assert lines[6:11] == ["PUT", "w/a", "1", "w/a", "3"] or lines[6:9] == ["PUT", "w/a", "1"]


def test_restart_keeps_everything(make_cluster: Callable[..., Cluster]) -> None:
    c = make_cluster(1)
    for i in range(20):
        c.etcdctl("put", f"k{i}", f"v{i}")
    before = c.hashkv(0)
    assert c.stop(0) == 0
    c.start(0)
    c.wait_ready()
    assert c.hashkv(0) == before
    assert c.get_all(0, "k") == {f"k{i}": f"v{i}" for i in range(20)}
    c.kill(0)
    c.start(0)
    c.wait_ready()
    assert c.get_all(0, "k") == {f"k{i}": f"v{i}" for i in range(20)}


def test_endpoint_status_and_member_list(make_cluster: Callable[..., Cluster]) -> None:
    c = make_cluster(1)
    st = c.status(0)
    assert st is not None
    assert st["leader"] == st["header"]["member_id"]  # type: ignore[index]
    # client URLs arrive with the member's published attributes, an entry of its own
    deadline = time.monotonic() + 10
    while True:
        members = json.loads(c.etcdctl("member", "list", "-w", "json").stdout)["members"]
        if members[0].get("clientURLs") or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert [m["name"] for m in members] == ["m1"]
    assert members[0]["clientURLs"] == [f"http://{c.members[0].endpoint}"]
    health = c.etcdctl("endpoint", "health")
    # etcdctl 3.4 prints the health line on stderr
    assert f"{c.members[0].endpoint} is healthy" in health.stdout + health.stderr


def test_periodic_auto_compaction(make_cluster: Callable[..., Cluster]) -> None:
    c = make_cluster(
        1, extra_args=["--auto-compaction-mode", "periodic", "--auto-compaction-retention", "2s"]
    )
    for i in range(5):
        c.etcdctl("put", "ac", str(i))
    deadline = time.monotonic() + 20
    compacted = False
    while time.monotonic() < deadline and not compacted:
        c.etcdctl("put", "tick", "x")
        res = c.etcdctl("get", "ac", "--rev=2", check=False)
        compacted = "required revision has been compacted" in res.stderr
        time.sleep(0.5)
    assert compacted, c.dump_logs()
    assert c.etcdctl("get", "ac", "--print-value-only").stdout.strip() == "4"


def test_defrag_shrinks_and_keeps_data_and_watchers(make_cluster: Callable[..., Cluster]) -> None:
    c = make_cluster(1)
    big = b"v" * 4000
    channel = grpc.insecure_channel(c.members[0].endpoint)
    try:
        kv = pb_grpc.KVStub(channel)
        for i in range(30):
            kv.Put(pb.PutRequest(key=b"d%d" % i, value=big), timeout=5)
        for i in range(300):
            kv.Put(pb.PutRequest(key=b"big%d" % i, value=big), timeout=5)
        rev = kv.DeleteRange(pb.DeleteRangeRequest(key=b"big", range_end=b"bih")).header.revision
        kv.Compact(pb.CompactionRequest(revision=rev, physical=True), timeout=10)
    finally:
        channel.close()
    before = c.status(0)
    assert before is not None
    watch = subprocess.Popen(
        ["etcdctl", "--endpoints", c.endpoints, "watch", "after-defrag"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        time.sleep(1.0)
        assert "Finished defragmenting" in c.etcdctl("defrag").stdout
        after = c.status(0)
        assert after is not None
        assert int(after["dbSize"]) < int(before["dbSize"])  # type: ignore[call-overload]
        assert c.get_all(0, "d") == {f"d{i}": big.decode() for i in range(30)}
        assert c.get_all(0, "big") == {}
        c.etcdctl("put", "after-defrag", "seen")
        assert watch.stdout is not None
        lines = [watch.stdout.readline().strip() for _ in range(3)]
        assert lines == ["PUT", "after-defrag", "seen"]
    finally:
        watch.kill()
        watch.wait(5)
        if watch.stdout is not None:
            watch.stdout.close()


def test_health_and_metrics_endpoints(make_cluster: Callable[..., Cluster]) -> None:
    import urllib.request

    from tests.cluster.harness import free_ports

    port = free_ports(1)[0]
    c = make_cluster(1, extra_args=["--listen-metrics-urls", f"http://127.0.0.1:{port}"])
    c.etcdctl("put", "m", "1")
    c.etcdctl("put", "m", "2")
    c.etcdctl("del", "m")
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as resp:
        assert json.loads(resp.read()) == {"health": "true", "reason": ""}
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    _types, metrics = parse(text)
    assert metrics["etcd_server_has_leader"] == 1
    assert metrics["etcd_mvcc_put_total"] >= 2
    assert metrics["etcd_mvcc_delete_total"] >= 1
    assert metrics["etcd_debugging_mvcc_current_revision"] == 4
    # etcd's disk histograms: every acknowledged write went through a WAL fsync; backend
    # commits are batched (--backend-batch-interval), so the three writes took at least one.
    assert metrics["etcd_disk_wal_fsync_duration_seconds_count"] >= 3
    assert metrics["etcd_disk_backend_commit_duration_seconds_count"] >= 1
    assert (
        metrics['etcd_disk_wal_fsync_duration_seconds_bucket{le="+Inf"}']
        == metrics["etcd_disk_wal_fsync_duration_seconds_count"]
    )
    assert metrics["etcd_server_proposals_pending"] == 0
    assert metrics["etcd_server_proposals_failed_total"] == 0
