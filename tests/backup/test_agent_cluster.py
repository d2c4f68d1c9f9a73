"""The backup agent against a real 3-member raftkv cluster under a write load (puts, deletes,
txns, leases), with short intervals: it takes full and delta backups, verifies each against a
live member's HashKV, records them in the manifest, prunes with --keep-last, serves its
metrics, and ``backup verify`` / ``backup list`` read the result; ``--once`` takes one
verified full and exits 0, the decompressed file being exactly an etcd snapshot."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import zstandard

from raftkv.backup.manifest import read_manifest_file
from tests.backup.support import ctl, raftkv
from tests.backup.test_agent_helpers import (
    Load,
    manifest,
    running_cluster,
    start_agent,
    stop_agent,
    verified,
    wait_for,
)
from tests.cluster.harness import Cluster, free_ports


@pytest.fixture
def cluster3(tmp_path: Path) -> Iterator[Cluster]:
    yield from running_cluster(tmp_path)


def test_agent_takes_verifies_and_prunes(tmp_path: Path, cluster3: Cluster) -> None:
    c = cluster3
    dest = tmp_path / "backups"
    log = tmp_path / "agent.log"
    (port,) = free_ports(1)
    load = Load(c, c.members[0].endpoint).start()
    agent = start_agent(
        log,
        "--endpoints", c.endpoints, "--dir", str(dest),
        "--full-interval", "4s", "--delta-interval", "0.5s", "--keep-last", "2",
        "--listen-metrics-urls", f"http://127.0.0.1:{port}",
    )  # fmt: skip
    try:
        # three fulls taken with deltas between them: keep-last 2 has pruned the first
        wait_for(
            lambda: any("retention pruned" in line for line in log.read_text().splitlines()),
            60,
            "a pruned full backup",
            log,
        )
        wait_for(lambda: len(verified(dest, "delta")) >= 3, 30, "three verified deltas", log)
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read()
    finally:
        try:
            load.stop()
        finally:
            assert stop_agent(agent) == 0, log.read_text()[-3000:]
    text = metrics.decode()
    for name in (
        'raftkv_backup_last_success_timestamp_seconds{kind="full"}',
        'raftkv_backup_last_success_timestamp_seconds{kind="delta"}',
        'raftkv_backup_duration_seconds_count{kind="full"}',
        'raftkv_backup_bytes{kind="delta"}',
        "raftkv_backup_last_verified_revision",
        "raftkv_backup_recovery_point_lag_seconds",
    ):
        assert name in text, name
    entries = manifest(dest)
    fulls = [e for e in entries if e["kind"] == "full"]
    assert len(fulls) == 2 and all(e["verified"] for e in fulls)
    for e in entries:
        assert e["verified"], e
        assert "matches" in e["verify_method"] or "recorded state hash" in e["verify_method"]
        assert (dest / e["file"]).is_file()
        if e["kind"] == "delta":
            assert e["base"] in {f["id"] for f in fulls}
    events = sum(e["events"] for e in entries)
    assert events > 0
    # nothing but the manifest's files (and no scratch or .part) stays in the directory
    on_disk = sorted(p.name for p in dest.iterdir())
    assert on_disk == sorted([*(e["file"] for e in entries), "manifest.json"])
    # the chain of the newest full is continuous
    m = read_manifest_file(str(dest / "manifest.json"))
    newest = m.newest_verified_full()
    assert newest is not None
    at = newest.to_revision
    for d in m.chain(newest.id):
        assert d.from_revision == at
        at = d.to_revision

    res = raftkv("backup", "verify", str(dest))
    assert res.stdout.count("OK ") == len(entries), res.stdout
    listed = json.loads(raftkv("backup", "list", str(dest), "-w", "json").stdout)
    assert [e["id"] for e in listed] == [e["id"] for e in entries]
    table = raftkv("backup", "list", str(dest), "-w", "table").stdout
    assert newest.id in table


def test_once_takes_one_verified_full(tmp_path: Path, cluster3: Cluster) -> None:
    c = cluster3
    for i in range(30):
        c.etcdctl("put", f"k{i}", f"v{i}")
    dest = tmp_path / "once"
    log = tmp_path / "once.log"
    agent = start_agent(log, "--endpoints", c.endpoints, "--dir", str(dest), "--once")
    try:
        assert agent.wait(120) == 0, log.read_text()
    finally:
        stop_agent(agent)
    (entry,) = manifest(dest)
    assert entry["kind"] == "full" and entry["verified"] and entry["file"].endswith(".snap.zst")
    # decompressed, the file is an etcd snapshot: etcdctl reads its status
    raw = (
        zstandard.ZstdDecompressor().decompressobj().decompress((dest / entry["file"]).read_bytes())
    )
    assert len(raw) == entry["size_raw"]
    snap = tmp_path / "plain.db"
    snap.write_bytes(raw)
    status = json.loads(
        ctl(c.members[0].endpoint, "snapshot", "status", str(snap), "-w", "json").stdout
    )
    assert status["revision"] == entry["to_revision"]


def test_cron_schedule_sets_the_next_full(tmp_path: Path) -> None:
    from raftkv.backup.agent import Agent, AgentOptions, Logger
    from raftkv.backup.manifest import parse_time

    opts = AgentOptions(endpoints=["127.0.0.1:9"], dest=str(tmp_path / "d"), schedule="*/5 * * * *")
    agent = Agent(opts, Logger())
    try:
        at = parse_time("2024-05-01T10:02:30Z")
        assert agent._next_full_time(at) == parse_time("2024-05-01T10:05:00Z")
    finally:
        agent.shutdown()
    res = raftkv("backup", "run", "--dir", str(tmp_path / "d"), "--schedule", "nope", check=False)
    assert res.returncode == 128 and "invalid cron --schedule" in res.stderr
