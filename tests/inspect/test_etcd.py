"""``raftkv check consistency`` against a real etcd 3.4: hash, counts and its mvcc counters."""

from __future__ import annotations

import json

from tests.compat.servers import Target
from tests.inspect.cli import run_check


def test_real_etcd_is_consistent(etcd: Target) -> None:
    for i in range(3):
        put = etcd.ctl("put", f"e{i}", f"v{i}")
        assert put.returncode == 0, put.stderr
    ep = etcd.endpoints[0]
    res = run_check("--endpoints", ep, "--metrics-urls", f"http://{ep}", "-w", "json")
    assert res.returncode == 0, res.stdout + res.stderr
    doc = json.loads(res.stdout)
    assert doc["status"] == "consistent"
    (member,) = doc["members"]
    assert member["name"] == "m1" and member["key_count"] == 3
    assert member["hash_revision"] == doc["common_revision"] == 4
    assert member["version"].startswith("3.4")
    assert member["counters"]["etcd_mvcc_put_total"] == 3
    res = run_check("--endpoints", ep)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "consistent: 1 of 1 members agree" in res.stdout
