"""Membership changed at run time on real members, driven by Debian's etcdctl.

A cluster grows with learners that are promoted, loses a member that is replaced, shrinks back,
all under write load; ``raftkv check consistency`` agrees after every step and no acknowledged
write is lost.  etcd's rules are checked with etcd's messages.  A member that was down while
another was added, and leads by then, learns of it from the others (etcd's remotes).
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable

import grpc
import pytest

from raftkv import __version__
from raftkv.proto import rpc_pb2 as pb
from raftkv.proto import rpc_pb2_grpc as pb_grpc
from tests.cluster.harness import REPO, Cluster, Writer

FAST = ["--heartbeat-interval", "50", "--election-timeout", "500"]


def members(c: Cluster) -> dict[str, bool]:
    """name -> is learner, from ``etcdctl member list``."""
    res = c.etcdctl("member", "list", "-w", "simple", endpoints=c.live_endpoints())
    out = {}
    for line in res.stdout.strip().splitlines():
        fields = [f.strip() for f in line.split(",")]
        out[fields[2] or fields[0]] = fields[5] == "true"
    return out


def member_hex(c: Cluster, i: int) -> str:
    return f"{c.member_id(i):x}"


def promote_when_ready(c: Cluster, i: int, endpoints: str | None = None) -> None:
    """``endpoints``: those asked (default: the live members)."""

    def promoted() -> bool:
        res = c.etcdctl(
            "member",
            "promote",
            member_hex(c, i),
            endpoints=endpoints or c.live_endpoints(),
            check=False,
        )
        if res.returncode == 0:
            return True
        assert "can only promote a learner member which is in sync with leader" in res.stderr, (
            res.stderr
        )
        return False

    c.wait_until(promoted, f"{c.members[i].name} in sync for promotion")


@pytest.mark.timeout(300)
def test_grow_replace_shrink_under_load(make_cluster: Callable[..., Cluster]) -> None:
    c = make_cluster(3, FAST)
    writer = Writer(lambda: [m.endpoint for m in c.members if m.alive()], "load/")
    writer.start()
    try:
        # Grow 3 -> 5: each new member joins as a learner, catches up, is promoted.
        for _ in range(2):
            i = c.add_member(learner=True)
            c.wait_ready([i])
            put = c.etcdctl("put", "x", "1", endpoints=c.members[i].endpoint, check=False)
            if members(c).get(c.members[i].name):  # still a learner: writes are refused
                assert "rpc not supported for learner" in put.stderr, put.stderr
            promote_when_ready(c, i)
            c.check_consistency()
        assert len(members(c)) == 5 and not any(members(c).values())

        # Lose a member for good and replace it: remove, add a new one on an empty data dir.
        lost = 1
        lost_id = member_hex(c, lost)
        c.kill(lost)
        c.wait_until(lambda: c.leader_index() is not None, "a leader among the others")
        c.etcdctl("member", "remove", lost_id, endpoints=c.live_endpoints())
        i = c.add_member()
        c.wait_ready([i])
        c.check_consistency()

        # Shrink back to 3 voters.
        for victim in (2, 3):
            vid = member_hex(c, victim)
            others = [m.endpoint for j, m in enumerate(c.members) if m.alive() and j != victim]
            c.wait_until(lambda: c.leader_index() is not None, "a leader")
            c.etcdctl("member", "remove", vid, endpoints=",".join(others))
            proc = c.members[victim].proc
            assert proc is not None
            # A removed member stops by itself, saying why.
            proc.wait(30)
            assert (
                "the member has been permanently removed from the cluster"
                in c.members[victim].log_path.read_text()
            )
            c.members[victim].proc = None
        assert len(members(c)) == 3
        c.check_consistency()
    finally:
        acked = writer.finish()
    assert len(acked) > 50, f"only {len(acked)} writes acknowledged"
    alive = [i for i, m in enumerate(c.members) if m.alive()]
    c.wait_until(lambda: len({c.hashkv(i) for i in alive}) == 1, "members to converge", timeout=30)
    for i in alive:
        stored = c.get_all(i, "load/")
        missing = {k for k, v in acked.items() if stored.get(k) != v}
        assert not missing, f"{c.members[i].name} lost {len(missing)} acknowledged writes"
    c.check_consistency()


@pytest.mark.timeout(240)
def test_etcd_rules_and_messages(make_cluster: Callable[..., Cluster]) -> None:
    c = make_cluster(3, FAST)

    def fails(*args: str, message: str) -> None:
        res = c.etcdctl(*args, endpoints=c.live_endpoints(), check=False)
        assert res.returncode != 0 and message in res.stderr, (args, res.stdout, res.stderr)

    peer0 = c.members[0].peer_url
    fails("member", "add", "dup", f"--peer-urls={peer0}", message="Peer URLs already exists")
    # etcdctl checks URLs itself; a client that does not is answered as etcd answers it.
    with grpc.insecure_channel(c.members[0].endpoint) as ch, pytest.raises(grpc.RpcError) as bad:
        pb_grpc.ClusterStub(ch).MemberAdd(pb.MemberAddRequest(peerURLs=["ftp://x"]), timeout=5)
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert bad.value.details() == "etcdserver: given member URLs are invalid"
    fails("member", "remove", "1234", message="member not found")
    fails("member", "promote", member_hex(c, 0), message="can only promote a learner member")
    fails("member", "update", "1234", "--peer-urls=http://127.0.0.1:1", message="member not found")

    # A learner that never started cannot be promoted; a second learner is one too many.
    res = c.etcdctl(
        "member",
        "add",
        "l1",
        "--peer-urls=http://127.0.0.1:9",
        "--learner",
        endpoints=c.live_endpoints(),
    )
    learner_id = res.stdout.split()[1]
    fails(
        "member",
        "promote",
        learner_id,
        message="can only promote a learner member which is in sync with leader",
    )
    fails(
        "member",
        "add",
        "l2",
        "--peer-urls=http://127.0.0.1:10",
        "--learner",
        message="too many learner members in cluster",
    )
    c.etcdctl("member", "remove", learner_id, endpoints=c.live_endpoints())

    # Strict reconfiguration: with one of three voters down, removing another would leave no
    # healthy quorum, and adding a voter is refused; a learner may still be added.
    c.kill(2)
    victim = member_hex(c, 1)
    fails("member", "remove", victim, message="etcdserver: unhealthy cluster")
    fails("member", "add", "m9", "--peer-urls=http://127.0.0.1:11", message="unhealthy cluster")

    # A removed member cannot come back under its old ID: its peers refuse it, and it stops.
    c.start(2)
    c.wait_ready([2])
    old = member_hex(c, 2)
    c.etcdctl("member", "remove", old, endpoints=c.members[0].endpoint)
    proc = c.members[2].proc
    assert proc is not None
    proc.wait(30)
    c.members[2].proc = None
    c.start(2)
    proc = c.members[2].proc
    assert proc is not None
    assert proc.wait(30) != 0
    log = c.members[2].log_path.read_text()
    assert "the member has been permanently removed from the cluster" in log
    assert "Traceback" not in log
    assert set(members(c)) == {c.members[0].name, c.members[1].name}


@pytest.mark.timeout(120)
def test_update_peer_urls_and_linearizable_list(make_cluster: Callable[..., Cluster]) -> None:
    c = make_cluster(1, FAST)
    i = c.add_member(learner=True)
    c.wait_ready([i])
    mid = member_hex(c, i)
    # The learner serves serializable reads and member list, not linearizable reads.
    c.etcdctl("put", "k", "v", endpoints=c.members[0].endpoint)
    c.wait_until(
        lambda: (
            c.etcdctl(
                "get", "k", "--consistency=s", "--print-value-only", endpoints=c.members[i].endpoint
            ).stdout.strip()
            == "v"
        ),
        "the learner to apply",
    )
    res = c.etcdctl("get", "k", endpoints=c.members[i].endpoint, check=False)
    assert "rpc not supported for learner" in res.stderr
    promote_when_ready(c, i)
    # Update: the same URLs are accepted; another member's are not.
    c.etcdctl("member", "update", mid, f"--peer-urls={c.members[i].peer_url}")
    res = c.etcdctl("member", "update", mid, f"--peer-urls={c.members[0].peer_url}", check=False)
    assert "Peer URLs already exists" in res.stderr, res.stderr
    res = c.etcdctl("member", "list", "-w", "json")
    listed = {format(m["ID"], "x"): m for m in json.loads(res.stdout)["members"]}
    assert listed[mid]["peerURLs"] == [c.members[i].peer_url]
    assert not listed[mid].get("isLearner")
    # raftkv's member list -w json: etcd's JSON plus each member's raftkv version.
    cmd = ["member", "list", "-w", "json", "--endpoints", c.members[0].endpoint]
    ours = subprocess.run(
        [sys.executable, "-m", "raftkv.ctl.main", *cmd],
        capture_output=True,
        text=True,
        timeout=30,
        env={"PYTHONPATH": str(REPO / "src"), "PATH": "/usr/bin:/bin"},
    )
    assert ours.returncode == 0, ours.stderr
    members_ours = json.loads(ours.stdout)["members"]
    assert {m.pop("raftkvVersion") for m in members_ours} == {__version__}
    etcds = c.etcdctl("member", "list", "-w", "json", endpoints=c.members[0].endpoint)
    assert members_ours == json.loads(etcds.stdout)["members"]
    c.check_consistency()


def revision(c: Cluster, i: int) -> int | None:
    st = c.status(i)
    return None if st is None else int(st["header"]["revision"])  # type: ignore[index]


@pytest.mark.timeout(120)
def test_lagging_member_reaches_a_leader_it_does_not_know(
    make_cluster: Callable[..., Cluster],
) -> None:
    """etcd's remotes, with real processes: C stops, D is added and made leader, C restarts
    with a member list without D.  C refuses D's streams at first, asks A and B about D, adds
    it as a remote peer, then catches up from D, reads through it and joins its quorum."""
    c = make_cluster(3, FAST)
    a, b, lagging = 0, 1, 2
    for n in range(3):
        c.etcdctl("put", f"before/{n}", str(n))
    c.stop(lagging)
    c.wait_until(lambda: c.leader_index() is not None, "a leader among the others")

    # With a voter down, strict reconfiguration refuses a voter: add a learner, promote it.
    d = c.add_member(learner=True)
    c.wait_ready([d])
    # Through A and B: until its first snapshot D has no member list to find itself in.
    promote_when_ready(c, d, endpoints=f"{c.members[a].endpoint},{c.members[b].endpoint}")
    d_hex = member_hex(c, d)
    c.etcdctl("move-leader", d_hex, endpoints=c.live_endpoints())
    c.wait_until(lambda: c.leader_index() == d, f"{c.members[d].name} to lead")
    for n in range(3):
        c.etcdctl("put", f"after/{n}", str(n), endpoints=c.members[d].endpoint)

    # C knows A, B and itself only; its one way back is D, the leader.  (It restarts with the
    # harness's --initial-cluster, now A, B and D: as etcd, a member with a WAL ignores it.)
    c.start(lagging)
    want = revision(c, d)
    assert want is not None
    c.wait_until(
        lambda: all(revision(c, i) == want for i in (a, b, lagging, d)),
        f"{c.members[lagging].name} to catch up to revision {want}",
    )
    # Linearizable: the read index comes from D, over the remote's stream.
    got = c.etcdctl("get", "after/2", "--print-value-only", endpoints=c.members[lagging].endpoint)
    assert got.stdout.strip() == "2"
    log = c.members[lagging].log_path.read_text()
    assert any(
        f"member {d_hex} is not in this member's member list yet" in line
        and "added as a remote peer" in line
        for line in log.splitlines()
    ), c.dump_logs()

    # Without A, a quorum of the four voters needs C: it acknowledges D's appends.
    c.stop(a)
    c.etcdctl("put", "quorum", "q", endpoints=c.members[d].endpoint)
    got = c.etcdctl("get", "quorum", "--print-value-only", endpoints=c.members[lagging].endpoint)
    assert got.stdout.strip() == "q"
    c.check_consistency()
