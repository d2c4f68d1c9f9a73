"""The backup agent with an S3-compatible destination: moto's standalone server on loopback
(a free port, killed after the test), a 3-member raftkv under a write load; the agent keeps
its files and manifest in the bucket, verifies each upload by downloading it, and ``backup
list | verify | restore`` read the bucket; the point-in-time restore serves what ``get --rev``
shows."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.backup.support import raftkv
from tests.backup.test_agent_helpers import (
    Load,
    restore_and_start,
    running_cluster,
    start_agent,
    stop_agent,
    store_at,
    wait_for,
)
from tests.cluster.harness import Cluster, free_ports

CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@pytest.fixture
def cluster3(tmp_path: Path) -> Iterator[Cluster]:
    yield from running_cluster(tmp_path)


@pytest.fixture
def s3_endpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    pytest.importorskip("moto")
    boto3 = pytest.importorskip("boto3")
    (port,) = free_ports(1)
    log = open(tmp_path / "moto.log", "wb")  # noqa: SIM115 - handed to the child
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    log.close()
    url = f"http://127.0.0.1:{port}"
    try:

        def up() -> bool:
            try:
                urllib.request.urlopen(f"{url}/moto-api/", timeout=2).close()
            except OSError:
                return False
            return True

        wait_for(up, 30, "moto's server", tmp_path / "moto.log")
        for name, value in CREDENTIALS.items():
            monkeypatch.setenv(name, value)
        boto3.client("s3", endpoint_url=url, region_name="us-east-1").create_bucket(
            Bucket="backups"
        )
        yield url
    finally:
        proc.kill()
        proc.wait(10)


def _s3_manifest(url: str) -> list[dict[str, object]]:
    import boto3

    client = boto3.client("s3", endpoint_url=url, region_name="us-east-1")
    try:
        body = client.get_object(Bucket="backups", Key="raftkv/manifest.json")["Body"].read()
    except client.exceptions.NoSuchKey:
        return []
    return list(json.loads(body)["backups"])


def test_agent_backs_up_to_s3_and_restores_from_it(
    tmp_path: Path, cluster3: Cluster, s3_endpoint: str
) -> None:
    c = cluster3
    for i in range(20):
        c.etcdctl("put", f"base/{i}", f"b{i}")
    log = tmp_path / "agent.log"
    dest = "s3://backups/raftkv"
    env = {**CREDENTIALS}
    agent = start_agent(
        log,
        "--endpoints", c.endpoints, "--dest", dest, "--s3-endpoint-url", s3_endpoint,
        "--full-interval", "10m", "--delta-interval", "0.7s", "--work-dir", str(tmp_path / "w"),
        env=env,
    )  # fmt: skip
    load = Load(c, c.members[0].endpoint)
    try:
        wait_for(
            lambda: any(e["kind"] == "full" and e["verified"] for e in _s3_manifest(s3_endpoint)),
            60,
            "a verified full backup in the bucket",
            log,
        )
        load.start()
        wait_for(
            lambda: (
                sum(e["kind"] == "delta" and e["verified"] for e in _s3_manifest(s3_endpoint)) >= 3
            ),
            60,
            "three verified deltas in the bucket",
            log,
        )
    finally:
        try:
            load.stop()
        finally:
            assert stop_agent(agent) == 0, log.read_text()[-3000:]
    entries = _s3_manifest(s3_endpoint)
    assert entries and all(e["verified"] for e in entries)
    os.environ.update(CREDENTIALS)  # the raftkv CLI children inherit them
    s3 = ("--s3-endpoint-url", s3_endpoint)
    listed = json.loads(raftkv("backup", "list", dest, "-w", "json", *s3).stdout)
    assert [e["id"] for e in listed] == [e["id"] for e in entries]
    res = raftkv("backup", "verify", dest, *s3)
    assert res.stdout.count("OK ") == len(entries), res.stdout

    delta = [e for e in entries if e["kind"] == "delta" and int(str(e["events"])) > 1][1]
    rev = (int(str(delta["from_revision"])) + 1 + int(str(delta["to_revision"]))) // 2
    want = store_at(c, c.members[2].endpoint, rev)
    restored, line = restore_and_start(tmp_path / "restored", dest, "--to-revision", str(rev), *s3)
    try:
        assert f"revision {rev}" in line
        assert store_at(restored, restored.members[0].endpoint) == want
    finally:
        restored.close()
