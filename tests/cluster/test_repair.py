"""``raftkv member repair`` on a real 3-member cluster: a member fenced for a diverged apply is
rebuilt from a healthy member while writes continue, verified by state hash, unfenced, and ends
with exactly the others' state; no acknowledged write is lost."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable

from tests.cluster.harness import REPO, Cluster
from tests.cluster.test_state_hash import wait_applied_everywhere


def raftkv_cli(*args: str, timeout: float = 150) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "raftkv.ctl.main", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONPATH": str(REPO / "src")},
    )


def test_repair_rebuilds_a_fenced_member_under_load(make_cluster: Callable[..., Cluster]) -> None:
    c = make_cluster(3, start=False)
    for i in range(3):
        c.start(i, env={"RAFTKV_FAILPOINTS": "applyCorruptValue=1*on"} if i == 2 else None)
    c.wait_ready()
    healthy = c.members[0].endpoint
    bad_id = c.member_id(2)
    c.etcdctl("put", "k0", "v0", endpoints=healthy)  # the one put m3 applies wrongly
    named, _took = c.wait_corrupt_alarm(healthy)
    assert named == {bad_id}

    not_fenced = raftkv_cli("member", "repair", f"{c.member_id(1):x}", "--endpoints", healthy)
    assert not_fenced.returncode == 1
    assert "is not under a CORRUPT alarm: nothing to repair" in not_fenced.stderr

    acked: list[str] = []
    stop = threading.Event()

    def writer() -> None:
        n = 0
        while not stop.is_set() and n < 400:
            res = c.etcdctl("put", f"w{n}", f"x{n}", endpoints=healthy, check=False)
            if res.returncode == 0:
                acked.append(f"w{n}")
            n += 1

    t = threading.Thread(target=writer)
    t.start()
    try:
        res = raftkv_cli("member", "repair", f"{bad_id:x}", "-w", "json", "--endpoints", healthy)
    finally:
        stop.set()
        t.join(timeout=60)
    assert res.returncode == 0, res.stderr + c.dump_logs()
    report = json.loads(res.stdout)
    assert report["member_id"] == bad_id and report["alarm_cleared"] is True
    assert report["source_id"] in (c.member_id(0), c.member_id(1))
    print(
        f"repaired at index {report['installed_index']}, "
        f"{report['reapplied_entries']} entries re-applied, {len(acked)} writes during repair"
    )

    assert c.etcdctl("alarm", "list", endpoints=healthy).stdout.strip() == ""
    c.etcdctl("put", "after", "repair", endpoints=c.members[2].endpoint)  # serves again
    wait_applied_everywhere(c)
    states = [c.get_all(i) for i in range(3)]
    assert states[0] == states[1] == states[2]
    assert states[2]["k0"] == "v0"
    assert all(states[2][k] == "x" + k[1:] for k in acked)
    hashes = {c.hashkv(i)[0] for i in range(3)}
    assert len(hashes) == 1
    # the guard keeps finding the repaired member in agreement: no new alarm
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:
        assert c.etcdctl("alarm", "list", endpoints=healthy).stdout.strip() == ""
        time.sleep(0.2)


def test_repair_rejects_a_bad_member_id(make_cluster: Callable[..., Cluster]) -> None:
    c = make_cluster(1)
    c.wait_ready()
    res = raftkv_cli("member", "repair", "zz", "--endpoints", c.members[0].endpoint)
    assert res.returncode != 0 and "expecting ID in Hex" in res.stderr
    res = raftkv_cli("member", "repair", "abc", "--endpoints", c.members[0].endpoint)
    assert res.returncode == 1 and "member abc is not in the member list" in res.stderr
