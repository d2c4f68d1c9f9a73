"""Membership changes of running raftkv members made with ``raftkv member ...`` and compared
with what Debian's etcdctl prints for the same calls on the same cluster.

One cluster, one story: m1 alone; ``raftkv member add m2 --learner`` (its ETCD_INITIAL_CLUSTER
line is what m2 is started with, ``--initial-cluster-state existing``); ``raftkv member
promote``; m3 added, started and promoted through etcdctl; ``member update`` through both; m3
removed by etcdctl and m2 by raftkv, and both stop.  Every wait is bounded.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from raftkv import __version__
from raftkv.version import STORAGE_VERSION, Version
from tests.cluster.harness import Cluster, MemberProc, free_ports
from tests.ctl.harness import Ctl, Mask, Result, Server, assert_same, regex_mask
from tests.ctl.status_extras import split_status

ID_MASK: Mask = regex_mask(
    rb"Member [ 0-9a-f]{16} (added|removed|updated|promoted)", rb"Member ID \1"
)
NUMBER_MASKS: list[Mask] = [
    regex_mask(rb"\d+(\.\d+)? [kMG]?B\b|\b\d+\b", b"N"),
    regex_mask(rb"-{2,}", b"--"),
    regex_mask(rb" +", b" "),
]
FAST = ["--heartbeat-interval", "50", "--election-timeout", "500"]
VERSIONS = [__version__, Version.parse(__version__).short(), str(STORAGE_VERSION)]


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(tmp_path, 1, FAST)
    try:
        c.start_all()
        yield c
    finally:
        c.close()


def _ctl(cluster: Cluster) -> Ctl:
    m1 = cluster.members[0]
    return Ctl(Server("raftkv", m1.endpoint, [], m1.log_path))


def _new_member(cluster: Cluster, name: str) -> tuple[int, MemberProc]:
    client, peer = free_ports(2)
    m = MemberProc(
        name=name,
        client_port=client,
        peer_port=peer,
        data_dir=cluster.root / f"{name}.raftkv",
        log_path=cluster.root / f"{name}.log",
        extra_args=[*FAST, "--initial-cluster-state", "existing"],
    )
    cluster.members.append(m)
    return len(cluster.members) - 1, m


def _start_added(cluster: Cluster, i: int, add_output: bytes) -> None:
    """Start member ``i`` as ``member add`` told: its ETCD_INITIAL_CLUSTER line."""
    found = re.search(rb'^ETCD_INITIAL_CLUSTER="([^"]*)"$', add_output, re.M)
    assert found is not None, add_output
    cluster.initial_cluster = found.group(1).decode()
    cluster.start(i)
    cluster.wait_ready([i], timeout=60)


def _added(result: Result) -> tuple[int, int]:
    """(new member ID, cluster ID) from ``Member %16x added to cluster %16x``."""
    m = re.match(rb"Member ([ 0-9a-f]{16}) added to cluster ([ 0-9a-f]{16})\n", result.stdout)
    assert m is not None and result.rc == 0, result
    return int(m.group(1), 16), int(m.group(2), 16)


def _members(ctl: Ctl) -> dict[int, tuple[str, bool]]:
    """{ID: (name, is learner)} as raftkv lists them."""
    listed = json.loads(ctl.raftkv("member", "list", "-w", "json").stdout)
    return {int(m["ID"]): (m.get("name", ""), bool(m.get("isLearner"))) for m in listed["members"]}


def _promote(ctl: Ctl, tool: str, member_id: int, timeout: float = 30) -> Result:
    """Promote once the learner has caught up (the server refuses before: not in sync)."""
    deadline = time.monotonic() + timeout
    while True:
        r = ctl.run(tool, ["member", "promote", f"{member_id:x}"])
        if b"in sync with leader" not in r.stderr or time.monotonic() > deadline:
            return r
        time.sleep(0.3)


def test_member_lifecycle(cluster: Cluster) -> None:
    ctl = _ctl(cluster)
    m1_id = cluster.member_id(0)

    # -- add a learner with raftkv, start it from what add printed --------------------------
    i2, m2 = _new_member(cluster, "m2")
    add = ctl.raftkv("member", "add", "m2", f"--peer-urls={m2.peer_url}", "--learner")
    m2_id, cluster_id = _added(add)
    assert add.stderr == b""
    # etcdctl's composition: every member's peer URLs in the server's order (by ID)
    by_id = sorted([(m1_id, f"m1={cluster.members[0].peer_url}"), (m2_id, f"m2={m2.peer_url}")])
    assert add.stdout.decode().split("\n")[1:] == [
        "",
        'ETCD_NAME="m2"',
        f'ETCD_INITIAL_CLUSTER="{",".join(entry for _id, entry in by_id)}"',
        f'ETCD_INITIAL_ADVERTISE_PEER_URLS="{m2.peer_url}"',
        'ETCD_INITIAL_CLUSTER_STATE="existing"',
        "",
    ]
    assert _members(ctl) == {m1_id: ("m1", False), m2_id: ("", True)}
    listed = ctl.same("member", "list")  # etcdctl reads the same unstarted learner
    assert f"{m2_id:x}, unstarted, , {m2.peer_url}, , true".encode() in listed.stdout
    _start_added(cluster, i2, add.stdout)
    assert _members(ctl) == {m1_id: ("m1", False), m2_id: ("m2", True)}

    # endpoint status of both: etcd's columns as etcdctl's, raftkv's versions after them
    for fmt in ("table", "json", "simple", "fields"):
        args = ["endpoint", "status", "--cluster", "-w", fmt]
        e, r = ctl.etcdctl(*args), ctl.raftkv(*args)
        etcd_part, versions = split_status(fmt, r.stdout)
        assert_same(e, Result(r.rc, etcd_part, r.stderr), NUMBER_MASKS, what=fmt)
        assert versions == [VERSIONS, VERSIONS], r.stdout

    # -- promote with raftkv ------------------------------------------------------------------
    promoted = _promote(ctl, "raftkv", m2_id)
    assert (promoted.rc, promoted.stderr) == (0, b""), promoted
    assert promoted.stdout == f"Member {m2_id:16x} promoted in cluster {cluster_id:16x}\n".encode()
    assert _members(ctl) == {m1_id: ("m1", False), m2_id: ("m2", False)}

    # -- the same with etcdctl: texts equal but for the member ID -------------------------
    i3, m3 = _new_member(cluster, "m3")
    add_e = ctl.etcdctl("member", "add", "m3", f"--peer-urls={m3.peer_url}", "--learner")
    m3_id, _ = _added(add_e)
    _start_added(cluster, i3, add_e.stdout)
    promoted_e = _promote(ctl, "etcdctl", m3_id)
    assert promoted_e.rc == 0, promoted_e
    assert_same(promoted_e, promoted, [ID_MASK], what="member promote")
    again = ctl.same("member", "promote", f"{m3_id:x}")
    assert (again.rc, again.stderr) == (
        1,
        b"Error: etcdserver: can only promote a learner member\n",
    )
    assert _members(ctl) == {m1_id: ("m1", False), m2_id: ("m2", False), m3_id: ("m3", False)}

    # -- update (to the member's own peer URL: it keeps working) -----------------------------
    for fmt in ("simple", "json"):
        r = ctl.same("member", "update", f"{m3_id:x}", f"--peer-urls={m3.peer_url}", "-w", fmt)
        assert r.rc == 0
    r = ctl.raftkv("member", "update", f"{m3_id:x}", f"--peer-urls={m3.peer_url}")
    assert r.stdout == f"Member {m3_id:16x} updated in cluster {cluster_id:16x}\n".encode()

    # -- remove m3 with etcdctl, m2 with raftkv: both stop ------------------------------------
    removed_e = ctl.etcdctl("member", "remove", f"{m3_id:x}")
    removed = ctl.raftkv("member", "remove", f"{m2_id:x}")
    assert removed_e.rc == 0, removed_e
    assert_same(removed_e, removed, [ID_MASK], what="member remove")
    assert removed.stdout == f"Member {m2_id:16x} removed from cluster {cluster_id:16x}\n".encode()
    assert _members(ctl) == {m1_id: ("m1", False)}
    for removed_member in (m2, m3):  # a removed member stops (etcd's message), bounded wait
        assert removed_member.proc is not None
        removed_member.proc.wait(30)
        log = removed_member.log_path.read_text(errors="replace")
        assert "the member has been permanently removed from the cluster" in log
    gone = ctl.same("member", "remove", f"{m2_id:x}")
    assert (gone.rc, gone.stderr) == (1, b"Error: etcdserver: member not found\n")
    ctl.must("put", "after", "removal")  # m1 alone is a quorum again
