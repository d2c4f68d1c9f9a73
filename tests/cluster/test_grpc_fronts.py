"""``--grpc-front-processes``: real members behind real front processes, driven by etcdctl.

Every service answers through the fronts as it does from the member itself (KV over the
front link, the rest passed through, streams included), with the member's errors and auth; a
front that dies is replaced; a stopped member leaves no front behind.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from tests.cluster.harness import Cluster, require_etcdctl


def fronts_of(c: Cluster, i: int) -> list[int]:
    """The front processes of member ``i`` (its children)."""
    proc = c.members[i].proc
    assert proc is not None
    pids: list[int] = []
    for task in os.listdir(f"/proc/{proc.pid}/task"):
        with open(f"/proc/{proc.pid}/task/{task}/children") as f:
            pids += [int(p) for p in f.read().split()]
    return pids


def cmdline(pid: int) -> list[str]:
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        return [part.decode() for part in f.read().split(b"\0") if part]


def listening_pids(port: int, candidates: list[int]) -> set[int]:
    """Those of ``candidates`` that hold a listening TCP socket on ``port``."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            for row in f.readlines()[1:]:
                fields = row.split()
                if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "0A":
                    inodes.add(f"socket:[{fields[9]}]")
    holders = set()
    for pid in candidates:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}") in inodes:
                    holders.add(pid)
            except FileNotFoundError:
                continue
    return holders


def test_every_service_answers_through_the_fronts(make_cluster: Callable[..., Cluster]) -> None:
    c = make_cluster(3, ["--grpc-front-processes", "2"])
    c.wait_ready()
    for i, m in enumerate(c.members):
        fronts = fronts_of(c, i)
        assert len(fronts) == 2, fronts
        assert all("raftkv.app.front" in " ".join(cmdline(p)) for p in fronts)
        # the fronts hold the client port, the member does not
        assert m.proc is not None
        assert listening_pids(m.client_port, [m.proc.pid, *fronts]) == set(fronts)

    # KV, over the link, on every member
    for i, m in enumerate(c.members):
        c.etcdctl("put", f"k{i}", f"v{i}", endpoints=m.endpoint)
    got = c.etcdctl("get", "k", "--prefix", "-w", "json", endpoints=c.members[2].endpoint)
    kvs = json.loads(got.stdout)["kvs"]
    assert len(kvs) == 3
    txn = c.etcdctl("txn", stdin='value("k0") = "v0"\n\nput t yes\n\n\n')
    assert txn.stdout.startswith("SUCCESS"), txn.stdout
    assert c.etcdctl("get", "t", "--print-value-only").stdout.strip() == "yes"
    # the member's errors, word for word
    res = c.etcdctl("put", "", "x", check=False)
    assert res.returncode != 0 and "etcdserver: key is not provided" in res.stderr
    rev = int(json.loads(c.etcdctl("get", "t", "-w", "json").stdout)["header"]["revision"])
    c.etcdctl("compact", str(rev))
    res = c.etcdctl("get", "t", "--rev", "1", check=False)
    assert "etcdserver: mvcc: required revision has been compacted" in res.stderr

    # Lease (unary passed through, the keep-alive stream too)
    lease = c.etcdctl("lease", "grant", "60").stdout.split()[1]
    c.etcdctl("put", "leased", "1", "--lease", lease)
    assert "keepalived with TTL" in c.etcdctl("lease", "keep-alive", "--once", lease).stdout
    ttl = c.etcdctl("lease", "timetolive", lease, "--keys").stdout
    assert "attached keys([leased])" in ttl, ttl

    # Watch: a bidirectional stream through a front
    watch = subprocess.Popen(
        [require_etcdctl(), "--endpoints", c.members[1].endpoint, "watch", "w"],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "ETCDCTL_API": "3"},
    )
    try:
        time.sleep(1.0)
        c.etcdctl("put", "w", "seen", endpoints=c.members[0].endpoint)
        assert watch.stdout is not None
        assert [watch.stdout.readline().strip() for _ in range(3)] == ["PUT", "w", "seen"]
    finally:
        watch.kill()
        watch.communicate()

    # Cluster and Maintenance (passed through), a server stream among them
    assert len(c.etcdctl("member", "list").stdout.splitlines()) == 3
    status = json.loads(c.etcdctl("endpoint", "status", "-w", "json").stdout)
    assert {s["Status"]["header"]["member_id"] for s in status} == {
        c.member_id(i) for i in range(3)
    }
    snap = c.root / "snap.db"
    c.etcdctl("snapshot", "save", str(snap), endpoints=c.members[0].endpoint, timeout=60)
    assert snap.stat().st_size > 0

    # Auth: the token crosses the link (KV) and the pass-through (the rest)
    c.etcdctl("user", "add", "root:rootpw")
    c.etcdctl("user", "add", "alice:alicepw")
    c.etcdctl("role", "add", "r")
    c.etcdctl("role", "grant-permission", "r", "read", "k0")
    c.etcdctl("user", "grant-role", "alice", "r")
    c.etcdctl("auth", "enable")
    res = c.etcdctl("get", "k0", check=False)
    assert res.returncode != 0 and "user name is empty" in res.stderr, res.stderr
    alice = ["--user", "alice:alicepw"]
    assert c.etcdctl(*alice, "get", "k0", "--print-value-only").stdout.strip() == "v0"
    res = c.etcdctl(*alice, "put", "k0", "x", check=False)
    assert "etcdserver: permission denied" in res.stderr, res.stderr
    res = c.etcdctl(*alice, "member", "list", check=False)
    assert res.returncode == 0, res.stderr  # any authenticated user may list members
    res = c.etcdctl(*alice, "user", "list", check=False)
    assert "etcdserver: permission denied" in res.stderr, res.stderr
    root = ["--user", "root:rootpw"]
    assert "alice" in c.etcdctl(*root, "user", "list").stdout


def test_a_front_that_dies_is_replaced_and_none_outlives_the_member(
    make_cluster: Callable[..., Cluster],
) -> None:
    c = make_cluster(1, ["--grpc-front-processes", "2"])
    c.wait_ready()
    first = fronts_of(c, 0)
    assert len(first) == 2
    link = Path(cmdline(first[0])[cmdline(first[0]).index("--link") + 1])
    assert link.exists() and (link.parent.stat().st_mode & 0o777) == 0o700

    os.kill(first[0], signal.SIGKILL)
    c.wait_until(lambda: len(set(fronts_of(c, 0)) - {first[0]}) == 2, "a new front")
    for i in range(10):  # each etcdctl a new connection, spread over the fronts
        c.etcdctl("put", f"after{i}", "x")
    got = json.loads(c.etcdctl("get", "after", "--prefix", "--keys-only", "-w", "json").stdout)
    assert got["count"] == 10
    assert "exited (status -9); starting another" in c.members[0].log_path.read_text()

    now = fronts_of(c, 0)
    assert c.stop(0) == 0
    for pid in now:
        assert not Path(f"/proc/{pid}").exists() or _zombie(pid), f"front {pid} outlived"
    assert not link.parent.exists()


def _zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def test_fronts_go_when_the_member_is_killed(make_cluster: Callable[..., Cluster]) -> None:
    c = make_cluster(1, ["--grpc-front-processes", "1"])
    c.wait_ready()
    (front,) = fronts_of(c, 0)
    c.kill(0)
    deadline = time.monotonic() + 10
    while Path(f"/proc/{front}").exists() and not _zombie(front):
        assert time.monotonic() < deadline, "the front outlived its member"
        time.sleep(0.1)
