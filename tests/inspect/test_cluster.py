"""``raftkv check consistency`` against real raftkv member processes.

The divergent member is made by editing its LMDB backend while it is down (a valid write that
re-seals the CRC), which the cluster itself does not notice: the inspector must.
"""

from __future__ import annotations

import json
import urllib.request
from dataclasses import replace
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from raftkv.inspect.exporter import Exporter, MetricsServer, watch
from raftkv.inspect.gather import InspectOptions, UsageError
from raftkv.inspect.verdict import CheckResult
from raftkv.mvcc.backend import BUCKET_KEY, Backend
from raftkv.mvcc.revision import decode_kv, encode_kv, is_tombstone
from tests.cluster.harness import Cluster, free_ports
from tests.inspect.cli import run_check
from tests.inspect.conftest import metrics_cluster
from tests.prom_text import parse

FAST = ["--dial-timeout", "1s", "--command-timeout", "3s"]


def _table_rows(stdout: str) -> list[list[str]]:
    """The body rows of the first table in ``stdout``, cells stripped."""
    lines = [ln for ln in stdout.splitlines() if ln.startswith("|")]
    return [[c.strip() for c in ln.strip("|").split("|")] for ln in lines[1:]]


def test_consistent_cluster_exits_0_with_a_row_per_member(
    cluster3: tuple[Cluster, list[str]],
) -> None:
    cluster, urls = cluster3
    res = run_check("--endpoints", cluster.endpoints, "--metrics-urls", ",".join(urls), *FAST)
    assert res.returncode == 0, res.stdout + res.stderr
    rows = _table_rows(res.stdout)
    assert sorted(r[0] for r in rows) == ["m1", "m2", "m3"]
    # 7 live keys, one hash for all, and the members' mvcc counters (8 puts, 1 delete).
    assert {r[4] for r in rows} == {"7"}
    assert len({r[5] for r in rows}) == 1
    for row in rows:
        assert int(row[13]) >= 8 and int(row[14]) >= 1 and row[15].isdigit(), row
    assert "consistent: 3 of 3 members agree" in res.stdout


def test_one_endpoint_discovers_the_others_json_schema(
    cluster3: tuple[Cluster, list[str]],
) -> None:
    cluster, _urls = cluster3
    res = run_check("--endpoints", cluster.members[1].endpoint, "-w", "json", *FAST)
    assert res.returncode == 0, res.stdout + res.stderr
    doc = json.loads(res.stdout)
    assert doc["status"] == "consistent" and doc["consistent"] is True
    assert doc["exit_code"] == 0 and doc["divergences"] == [] and doc["problems"] == []
    assert isinstance(doc["common_revision"], int) and doc["common_revision"] >= 10
    members = doc["members"]
    assert sorted(m["name"] for m in members) == ["m1", "m2", "m3"]
    for m in members:
        assert m["reachable"] is True and m["error"] is None
        assert m["hash_revision"] == doc["common_revision"]
        assert m["key_count"] == 7
        assert m["revision"] >= doc["common_revision"]
        assert int(m["member_id"], 16) > 0
        assert m["raft_applied_index"] > 0 and m["raft_term"] >= 1
        assert m["alarms"] == [] and m["divergent"] is False
        assert set(m["counters"]) == {
            "etcd_mvcc_put_total",
            "etcd_mvcc_delete_total",
            "etcd_mvcc_txn_total",
        }
    assert len({m["hash"] for m in members}) == 1
    assert sum(1 for m in members if m["is_leader"]) == 1


def test_watch_serves_prometheus_metrics(cluster3: tuple[Cluster, list[str]]) -> None:
    cluster, _urls = cluster3
    opts = InspectOptions(
        endpoints=[m.endpoint for m in cluster.members], dial_timeout=1.0, command_timeout=3.0
    )
    exporter = Exporter()
    server = MetricsServer(f"127.0.0.1:{free_ports(1)[0]}", exporter)
    server.start()
    scraped: list[str] = []
    emitted: list[CheckResult] = []

    def scrape(_n: int, _result: CheckResult) -> None:
        with urllib.request.urlopen(server.url, timeout=10) as resp:
            scraped.append(resp.read().decode())

    try:
        status = watch(opts, 0.2, 2, emitted.append, exporter, after_check=scrape)
    finally:
        server.close()
    assert status == 0 and len(emitted) == 2 and len(scraped) == 2
    (_types, first), (types, second) = parse(scraped[0]), parse(scraped[1])
    assert first["raftkv_inspector_checks_total"] == 1
    assert second["raftkv_inspector_checks_total"] == 2
    assert second["raftkv_inspector_consistent"] == 1
    assert second["raftkv_inspector_divergences_total"] == 0
    assert second["raftkv_inspector_check_errors_total"] == 0
    assert types["raftkv_inspector_checks_total"] == "counter"
    hashes = set()
    for r in emitted[1].members:
        labels = f'{{endpoint="{r.endpoint}",id="{r.member_id:x}",member="{r.name}"}}'
        assert second["raftkv_inspector_member_up" + labels] == 1
        hashes.add(second["raftkv_inspector_member_hash" + labels])
    assert {r.name for r in emitted[1].members} == {m.name for m in cluster.members}
    assert len(hashes) == 1


def test_metrics_server_refuses_a_busy_or_portless_address() -> None:
    exporter = Exporter()
    server = MetricsServer("127.0.0.1:0", exporter)
    try:
        port = urlsplit(server.url).port
        with pytest.raises(UsageError, match=f"--metrics-listen 127.0.0.1:{port}: "):
            MetricsServer(f"127.0.0.1:{port}", exporter)
    finally:
        server.close()
    with pytest.raises(UsageError, match="a port is required"):
        MetricsServer("127.0.0.1", exporter)


def test_watch_count_from_the_command_line(cluster3: tuple[Cluster, list[str]]) -> None:
    cluster, _urls = cluster3
    port = free_ports(1)[0]
    res = run_check(
        "--endpoints", cluster.endpoints, "--watch", "0.1s", "--count", "2",
        "--metrics-listen", f"127.0.0.1:{port}", "-w", "json", *FAST,
    )  # fmt: skip
    assert res.returncode == 0, res.stdout + res.stderr
    docs = [json.loads(line) for line in res.stdout.splitlines()]
    assert [d["status"] for d in docs] == ["consistent", "consistent"]
    assert f"127.0.0.1:{port}/metrics" in res.stderr


def test_compacted_cluster_is_compared_above_the_compaction(
    cluster3: tuple[Cluster, list[str]],
) -> None:
    cluster, _urls = cluster3
    st = cluster.status(0)
    assert st is not None
    rev = int(st["header"]["revision"])  # type: ignore[index]
    cluster.etcdctl("compaction", str(rev - 2))
    res = run_check("--endpoints", cluster.endpoints, "-w", "json", *FAST)
    assert res.returncode == 0, res.stdout + res.stderr
    doc = json.loads(res.stdout)
    assert doc["compact_revision"] == rev - 2 and doc["common_revision"] >= rev
    assert {m["compact_revision"] for m in doc["members"]} == {rev - 2}


def test_stopped_member_exits_2_naming_it(cluster3: tuple[Cluster, list[str]]) -> None:
    cluster, _urls = cluster3
    cluster.stop(2)
    try:
        res = run_check("--endpoints", cluster.endpoints, *FAST)
        assert res.returncode == 2, res.stdout + res.stderr
        lines = [ln for ln in res.stdout.splitlines() if "unreachable" in ln]
        assert len(lines) == 1 and lines[0].startswith("member m3 (id "), res.stdout
        assert "UNKNOWN" in res.stdout
        # Discovered through one endpoint, the stopped member is still named.
        res = run_check("--endpoints", cluster.members[0].endpoint, "-w", "json", *FAST)
        assert res.returncode == 2, res.stdout + res.stderr
        doc = json.loads(res.stdout)
        down = [m for m in doc["members"] if not m["reachable"]]
        assert [m["name"] for m in down] == ["m3"] and down[0]["error"]
        assert doc["status"] == "unknown"
    finally:
        cluster.start(2)
        cluster.wait_ready([2])


def _corrupt_value(data_dir: Path, key: bytes) -> None:
    """Rewrite the latest stored value of ``key`` in a stopped member's backend (valid CRC)."""
    backend = Backend(data_dir / "member" / "db")
    try:
        with backend.write() as tx:
            latest = None
            for raw, payload in tx.iterate(BUCKET_KEY):
                kv = decode_kv(payload)
                if kv.key == key and not is_tombstone(raw):
                    latest = (raw, kv)
            assert latest is not None, f"{key!r} not stored"
            raw, kv = latest
            tx.put(BUCKET_KEY, raw, encode_kv(replace(kv, value=b"tampered-" + kv.value)))
    finally:
        backend.close()


def test_divergent_member_exits_1_naming_it(tmp_path: Path) -> None:
    cluster, _urls = metrics_cluster(tmp_path / "div")
    try:
        for i in range(5):
            cluster.etcdctl("put", f"d{i}", f"v{i}")
        res = run_check("--endpoints", cluster.endpoints, *FAST)
        assert res.returncode == 0, res.stdout + res.stderr
        cluster.stop(1)
        _corrupt_value(cluster.members[1].data_dir, b"d3")
        cluster.start(1)
        cluster.wait_ready([1])
        res = run_check("--endpoints", cluster.endpoints, *FAST)
        assert res.returncode == 1, res.stdout + res.stderr + cluster.dump_logs(20)
        lines = [ln for ln in res.stdout.splitlines() if " hash " in ln]
        assert len(lines) == 1, res.stdout
        assert lines[0].startswith("member m2 (id ")
        assert "differs from the 2 others" in lines[0]
        assert "DIVERGENT" in res.stdout
        # Key counts still agree: only the value changed.
        assert "key counts differ" not in res.stdout
        res = run_check("--endpoints", cluster.members[0].endpoint, "-w", "json", *FAST)
        assert res.returncode == 1
        doc = json.loads(res.stdout)
        assert [m["name"] for m in doc["members"] if m["divergent"]] == ["m2"]
    finally:
        cluster.close()
