"""Crash and at-rest failpoints on real 3-member clusters, driven by etcdctl.

Crashes are not divergence: a member killed by ``crashBeforeConsistentIndex``,
``crashAfterBackendCommit``, ``walBeforeFsync=panic`` or ``walTornWrite`` while clients write
comes back (without the failpoint), catches up, and then every write etcdctl acknowledged is
readable from every member, all members' HashKV agree at a common revision, and no CORRUPT
alarm is raised.

Corruption at rest is: after ``backendBitFlip`` damaged one stored value on one member, a
read of it there answers DataLoss ``etcdserver: corrupt cluster``, the member names itself in a
CORRUPT alarm and is fenced, and the other members keep serving every acknowledged write.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import time
from collections.abc import Callable
from subprocess import DEVNULL

import pytest

from raftkv import failpoints
from tests.cluster.harness import Cluster, require_etcdctl
from tests.cluster.test_repair import raftkv_cli

CORRUPT_MSG = "etcdserver: corrupt cluster"
MAX_WRITES = 80  # the faulty member must die before this many writes
WRITES_AFTER_DEATH = 3
ETCDCTL_ENV = {**os.environ, "ETCDCTL_API": "3"}


def _wait(what: str, c: Cluster, cond: Callable[[], bool], timeout: float = 20) -> float:
    """Poll ``cond`` until it holds; returns the seconds it took."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if cond():
            return time.monotonic() - t0
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}\n" + c.dump_logs())


def _make_leader(c: Cluster, i: int) -> None:
    if c.leader_index() == i:
        return
    c.etcdctl("move-leader", f"{c.member_id(i):x}")
    _wait(f"{c.members[i].name} to lead", c, lambda: c.leader_index() == i)


def _put(c: Cluster, key: str, value: str, endpoint: str) -> bool:
    return c.etcdctl("put", key, value, endpoints=endpoint, check=False).returncode == 0


def _sees_marker(c: Cluster, i: int) -> bool:
    res = c.etcdctl(
        "get",
        "marker",
        "--print-value-only",
        "--consistency=s",
        endpoints=c.members[i].endpoint,
        check=False,
    )
    return res.stdout.strip() == "m"


def _write_until_dead(c: Cluster, faulty: int, writers: int) -> tuple[dict[str, str], int]:
    """Rounds of ``writers`` concurrent puts of new keys until member ``faulty`` has died:
    (acknowledged key -> value, keys tried).  With one writer every put goes through the faulty
    member (a crash may interrupt it); with more, every other one goes to another member."""
    m = c.members[faulty]
    other = c.members[(faulty + 1) % 3].endpoint
    acked: dict[str, str] = {}
    n = 0
    while m.alive():
        assert n < MAX_WRITES, f"{m.name} still alive after {n} writes\n" + c.dump_logs()
        procs = []
        for j in range(writers):
            key, value = f"k{n:03d}", f"v{n}"
            ep = m.endpoint if j % 2 == 0 else other
            cmd = [require_etcdctl(), "--endpoints", ep, "--command-timeout=5s", "put", key, value]
            proc = subprocess.Popen(cmd, stdout=DEVNULL, stderr=DEVNULL, env=ETCDCTL_ENV)
            procs.append((key, value, proc))
            n += 1
        for key, value, proc in procs:
            if proc.wait(30) == 0:
                acked[key] = value
    return acked, n


def _check_converged(c: Cluster, acked: dict[str, str]) -> None:
    """Every acknowledged write on every member, equal contents and HashKV, no alarm."""
    c.etcdctl("put", "marker", "m")
    for i in range(3):
        _wait(f"{c.members[i].name} to catch up", c, functools.partial(_sees_marker, c, i))
    contents = [c.get_all(i, prefix="k") for i in range(3)]
    for i, got in enumerate(contents):
        lost = {k: v for k, v in acked.items() if got.get(k) != v}
        assert not lost, f"{c.members[i].name} lost acknowledged writes {lost}\n" + c.dump_logs()
        assert got == contents[0], f"{c.members[i].name} differs from {c.members[0].name}"
    revs = {c.hashkv(i)[1] for i in range(3)}
    assert len(revs) == 1, f"members at different revisions {revs}"
    rev = revs.pop()
    hashes = {c.hashkv(i, rev) for i in range(3)}
    assert len(hashes) == 1, f"HashKV differs at revision {rev}: {hashes}"
    assert c.etcdctl("alarm", "list").stdout == ""


# ``N*off`` lets start-up (bootstrap, elections, publishing, move-leader) pass: the failpoint
# fires during the client writes, a few of them in (one apply batch a write, two WAL syncs).
# ``writers``: etcdctl processes at once (several entries per Ready and WAL batch).
@pytest.mark.parametrize(
    ("spec", "role", "writers", "size"),
    [
        ("crashBeforeConsistentIndex=16*off->panic", "follower", 1, 3),
        ("crashAfterBackendCommit=16*off->panic", "leader", 1, 3),
        ("walBeforeFsync=40*off->panic", "leader", 1, 3),
        ("walTornWrite=40*off->on", "leader", 8, 3),
        ("walTornWrite=40*off->on", "follower", 1, 3),
        ("crashBeforeConsistentIndex=16*off->panic", "leader", 1, 5),
        ("crashAfterBackendCommit=16*off->panic", "follower", 1, 5),
        ("walBeforeFsync=40*off->panic", "follower", 1, 5),
        ("walTornWrite=40*off->on", "leader", 4, 5),
    ],
)
def test_crash_loses_no_acknowledged_write(
    make_cluster: Callable[..., Cluster], spec: str, role: str, writers: int, size: int
) -> None:
    name = spec.split("=")[0]
    c = make_cluster(size, start=False)
    faulty = 0
    c.start(faulty, env={failpoints.ENV_VAR: spec})
    for i in range(1, size):
        c.start(i)
    c.wait_ready()
    if role == "leader":
        _make_leader(c, faulty)
    else:
        _make_leader(c, 1)
    healthy = c.members[1].endpoint
    m = c.members[faulty]
    acked, n = _write_until_dead(c, faulty, writers)
    before_death = len(acked)
    for _ in range(WRITES_AFTER_DEATH):
        # the survivors keep taking writes (after an election if the leader died)
        key, value = f"k{n:03d}", f"v{n}"
        _wait(f"write {key}", c, functools.partial(_put, c, key, value, healthy))
        acked[key] = value
        n += 1
    assert m.proc is not None
    code = m.proc.wait(10)
    assert code == failpoints.PANIC_STATUS, f"{m.name} exited with {code}\n" + c.dump_logs()
    log = m.log_path.read_text(errors="replace")
    assert f"raftkv: failpoint {name}" in log
    print(f"{spec} on the {role}, {writers} writers: died after {before_death} acknowledged")

    m.proc = None
    c.start(faulty)  # without the failpoint
    c.wait_ready([faulty])
    if name == "walTornWrite":
        wal_dir = m.data_dir / "member" / "wal"
        assert list(wal_dir.glob("*.broken")), "no torn tail was repaired"
        assert "repaired torn tail" in m.log_path.read_text(errors="replace")
    _check_converged(c, acked)


@pytest.mark.parametrize("size", [3, 5])
def test_bit_flip_is_reported_fenced_repaired_and_loses_nothing(
    make_cluster: Callable[..., Cluster], size: int
) -> None:
    c = make_cluster(size, start=False)
    faulty = 2
    # the first two values this member stores are intact, the third is flipped at rest
    for i in range(size):
        if i != faulty:
            c.start(i)
    c.start(faulty, env={failpoints.ENV_VAR: "backendBitFlip=2*off->1*on"})
    c.wait_ready()
    healthy = c.members[0].endpoint
    bad = c.members[faulty].endpoint
    acked = {"k0": "zero", "k1": "one", "k2": "victim", "k3": "three"}
    for k, v in acked.items():
        c.etcdctl("put", k, v, endpoints=healthy)
    _wait(
        "the faulty member to apply every write",
        c,
        lambda: c.etcdctl("get", "k3", "--consistency=s", endpoints=bad, check=False).stdout != "",
    )
    faulty_id = c.member_id(faulty)
    assert c.etcdctl("alarm", "list").stdout == ""  # undetected until read

    t0 = time.monotonic()
    res = c.etcdctl("get", "k2", "--consistency=s", endpoints=bad, check=False)
    assert res.returncode != 0 and CORRUPT_MSG in res.stderr, res
    expected = f"memberID:{faulty_id} alarm:CORRUPT"
    _wait(
        "the CORRUPT alarm",
        c,
        lambda: expected in c.etcdctl("alarm", "list", endpoints=healthy).stdout,
    )
    elapsed = time.monotonic() - t0  # from just before the read
    print(f"backendBitFlip: read -> CORRUPT alarm for {faulty_id:x} in {elapsed:.2f}s")
    alarms = json.loads(c.etcdctl("alarm", "list", "-w", "json").stdout)["alarms"]
    assert [(int(a["memberID"]), a["alarm"]) for a in alarms] == [(faulty_id, 2)]

    log = c.members[faulty].log_path.read_text(errors="replace")
    assert f"member {faulty_id:x}: corrupt data in its backend" in log
    assert "bucket 'key' at key" in log
    assert c.members[faulty].alive()  # reported, not crashed

    # fenced: every client read of the member answers DataLoss, intact keys too
    for args in (["get", "k0", "--consistency=s"], ["get", "k0"], ["endpoint", "hashkv"]):
        res = c.etcdctl(*args, endpoints=bad, check=False)
        assert res.returncode != 0 and CORRUPT_MSG in res.stderr, (args, res)
    # the others keep serving every acknowledged write and take new ones
    for i in (0, 1):
        assert c.get_all(i, prefix="k", serializable=False) == acked
    c.etcdctl("put", "k4", "four", endpoints=c.members[1].endpoint)
    assert c.get_all(0, prefix="k4") == {"k4": "four"}
    acked["k4"] = "four"

    # member repair replaces the damaged backend with a healthy member's and unfences it
    fixed = raftkv_cli("member", "repair", f"{faulty_id:x}", "--endpoints", healthy)
    assert fixed.returncode == 0, fixed.stderr + c.dump_logs()
    assert c.etcdctl("alarm", "list", endpoints=healthy).stdout == ""
    assert c.get_all(faulty, prefix="k", serializable=True) == acked


def test_corrupt_value_met_while_applying_parks_fences_and_is_repaired(
    make_cluster: Callable[..., Cluster],
) -> None:
    """A write whose apply reads a value that fails its CRC (a put with prev_kv over the
    flipped key) cannot be applied on that member: it stays up, parked and fenced, instead of
    crash-looping, and `member repair` brings it back with the write applied."""
    c = make_cluster(3, start=False)
    faulty = 2
    c.start(0)
    c.start(1)
    c.start(faulty, env={failpoints.ENV_VAR: "backendBitFlip=2*off->1*on"})
    c.wait_ready()
    healthy = c.members[0].endpoint
    bad = c.members[faulty].endpoint
    for k, v in (("k0", "zero"), ("k1", "one"), ("k2", "victim")):
        c.etcdctl("put", k, v, endpoints=healthy)
    _wait(
        "the faulty member to apply every write",
        c,
        lambda: c.etcdctl("get", "k1", "--consistency=s", endpoints=bad, check=False).stdout != "",
    )
    faulty_id = c.member_id(faulty)
    c.etcdctl("put", "k2", "rewritten", "--prev-kv", endpoints=healthy)
    expected = f"memberID:{faulty_id} alarm:CORRUPT"
    _wait(
        "the CORRUPT alarm",
        c,
        lambda: expected in c.etcdctl("alarm", "list", endpoints=healthy).stdout,
    )
    log = c.members[faulty].log_path.read_text(errors="replace")
    assert "apply stopped: the backend is corrupt" in log
    assert c.members[faulty].alive()
    res = c.etcdctl("get", "k0", "--consistency=s", endpoints=bad, check=False)
    assert res.returncode != 0 and CORRUPT_MSG in res.stderr
    c.etcdctl("put", "k3", "after", endpoints=c.members[1].endpoint)

    fixed = raftkv_cli("member", "repair", f"{faulty_id:x}", "--endpoints", healthy)
    assert fixed.returncode == 0, fixed.stderr + c.dump_logs()
    assert "apply resumed after the state was replaced" in c.members[faulty].log_path.read_text()
    assert c.etcdctl("alarm", "list", endpoints=healthy).stdout == ""
    want = {"k0": "zero", "k1": "one", "k2": "rewritten", "k3": "after"}
    _wait(
        "the repaired member to serve every write",
        c,
        lambda: c.get_all(faulty, prefix="k", serializable=True) == want,
    )
