"""The guard on a real 5-member cluster: each apply failpoint on one member is detected and that
member alone is named and fenced; two members diverging at once are both named while the three
healthy ones keep serving; ``member repair`` brings both back; no acknowledged write is lost."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable

import pytest

from tests.cluster.harness import Cluster
from tests.cluster.test_repair import raftkv_cli
from tests.cluster.test_state_hash import wait_applied_everywhere

CORRUPT_MSG = "etcdserver: corrupt cluster"


def repair(c: Cluster, mid: int, endpoint: str) -> subprocess.CompletedProcess[str]:
    return raftkv_cli("member", "repair", f"{mid:x}", "--endpoints", endpoint)


def start(c: Cluster, faulty: dict[int, str]) -> None:
    for i in range(len(c.members)):
        c.start(i, env={"RAFTKV_FAILPOINTS": faulty[i]} if i in faulty else None)
    c.wait_ready()


@pytest.mark.parametrize(
    "failpoint",
    ["applyCorruptValue=1*on", "applySkipEntry=3*off->1*on", "applyDropLease=1*on"],
)
def test_one_of_five_diverges(make_cluster: Callable[..., Cluster], failpoint: str) -> None:
    c = make_cluster(5, start=False)
    start(c, {4: failpoint})
    healthy = c.members[0].endpoint
    bad = c.member_id(4)
    for k in range(4):
        c.etcdctl("put", f"k{k}", f"v{k}", endpoints=healthy)
    c.etcdctl("lease", "grant", "60", endpoints=healthy)
    named, took = c.wait_corrupt_alarm(healthy)
    print(f"5 members, {failpoint}: named {sorted(named)} after {took:.2f}s")
    assert named == {bad}
    res = c.etcdctl("get", "k0", endpoints=c.members[4].endpoint, check=False)
    assert res.returncode != 0 and CORRUPT_MSG in res.stderr
    c.etcdctl("put", "during", "fenced", endpoints=c.members[1].endpoint)
    fixed = repair(c, bad, healthy)
    assert fixed.returncode == 0, fixed.stderr + c.dump_logs()
    wait_applied_everywhere(c)
    states = [c.get_all(i) for i in range(5)]
    assert all(s == states[0] for s in states)
    assert states[0]["during"] == "fenced" and states[0]["k3"] == "v3"


def test_two_of_five_diverge_at_once(make_cluster: Callable[..., Cluster]) -> None:
    c = make_cluster(5, start=False)
    start(c, {3: "applyCorruptValue=1*on", 4: "applyDropLease=1*on"})
    healthy = c.members[0].endpoint
    bad = {c.member_id(3), c.member_id(4)}
    c.etcdctl("put", "x", "1", endpoints=healthy)
    c.etcdctl("put", "y", "2", endpoints=healthy)
    c.etcdctl("lease", "grant", "60", endpoints=healthy)
    named: set[int] = set()
    deadline = time.monotonic() + 20
    while named != bad and time.monotonic() < deadline:  # named in one round or in two
        named = c.corrupt_alarms(healthy)
        time.sleep(0.1)
    assert named == bad, c.dump_logs()
    for i in (0, 1, 2):  # the healthy three keep taking writes and serving reads
        c.etcdctl("put", f"ok{i}", "yes", endpoints=c.members[i].endpoint)
    for mid in sorted(bad):
        fixed = repair(c, mid, healthy)
        assert fixed.returncode == 0, fixed.stderr + c.dump_logs()
    assert c.etcdctl("alarm", "list", endpoints=healthy).stdout.strip() == ""
    wait_applied_everywhere(c)
    states = [c.get_all(i) for i in range(5)]
    assert all(s == states[0] for s in states)
    assert {k: states[0][k] for k in ("x", "y", "ok0", "ok1", "ok2")} == {
        "x": "1",
        "y": "2",
        "ok0": "yes",
        "ok1": "yes",
        "ok2": "yes",
    }
