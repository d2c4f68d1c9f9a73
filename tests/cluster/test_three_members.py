"""Three real members: replication, leader failure under write load, and catch-up by snapshot.

Every acknowledged write must be present on every member afterwards, and ``endpoint hashkv``
must agree across members.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import grpc

from raftkv.proto import rpc_pb2 as pb
from raftkv.proto import rpc_pb2_grpc as pb_grpc
from tests.cluster.harness import Cluster, Writer
from tests.prom_text import parse


def _wait_converged(c: Cluster, members: list[int], timeout: float = 30) -> None:
    """Until the listed members report the same applied revision and hash."""
    deadline = time.monotonic() + timeout
    last: list[tuple[int, int]] = []
    while time.monotonic() < deadline:
        last = [c.hashkv(i) for i in members]
        if len(set(last)) == 1:
            return
        time.sleep(0.3)
    raise AssertionError(f"members did not converge: {last}\n" + c.dump_logs())


def test_replication_and_reads_everywhere(make_cluster: Callable[..., Cluster]) -> None:
    c = make_cluster(3)
    for i, m in enumerate(c.members):
        c.etcdctl("put", f"from-{i}", m.name, endpoints=m.endpoint)
    for m in c.members:
        out = c.etcdctl("get", "from-", "--prefix", endpoints=m.endpoint).stdout.split()
        assert out == ["from-0", "m1", "from-1", "m2", "from-2", "m3"]
    _wait_converged(c, [0, 1, 2])


def test_leader_kill_under_write_load_loses_nothing(make_cluster: Callable[..., Cluster]) -> None:
    c = make_cluster(3)
    writer = Writer([m.endpoint for m in c.members], "load/")
    writer.start()
    try:
        time.sleep(2)
        leader = c.leader_index()
        assert leader is not None
        c.kill(leader)
        time.sleep(3)
        c.start(leader)
        c.wait_ready()
        time.sleep(2)
        follower = next(i for i in range(3) if i != c.leader_index())
        c.kill(follower)
        time.sleep(1)
        c.start(follower)
        c.wait_ready()
        time.sleep(1)
    finally:
        writer.stop_flag.set()
        writer.join(20)
    assert len(writer.acked) > 20, f"only {len(writer.acked)} writes acknowledged"
    _wait_converged(c, [0, 1, 2])
    for i in range(3):
        data = c.get_all(i, "load/")
        missing = [k for k in writer.acked if data.get(k) != writer.acked[k]]
        assert not missing, f"member {i} lost acknowledged writes: {missing[:5]}"


def test_lagging_follower_catches_up_by_snapshot(make_cluster: Callable[..., Cluster]) -> None:
    c = make_cluster(
        3, extra_args=["--snapshot-count", "50", "--experimental-snapshot-catchup-entries", "10"]
    )
    c.etcdctl("put", "before", "1")
    leader = c.leader_index()
    assert leader is not None
    lagging = (leader + 1) % 3
    c.kill(lagging)
    up = [i for i in range(3) if i != lagging]
    endpoints = ",".join(c.members[i].endpoint for i in up)
    # Several snapshots happen while it is down and the leader keeps only 10 entries behind
    # each, so the lagging member can only catch up by receiving a snapshot.
    channel = grpc.insecure_channel(c.members[up[0]].endpoint)
    stub = pb_grpc.KVStub(channel)
    try:
        for n in range(400):
            stub.Put(pb.PutRequest(key=f"lag/{n:04d}".encode(), value=b"x" * 100), timeout=5)
    finally:
        channel.close()
    assert c.etcdctl("get", "lag/0399", endpoints=endpoints).stdout.split() == [
        "lag/0399",
        "x" * 100,
    ]
    c.start(lagging)
    c.wait_ready()
    _wait_converged(c, [0, 1, 2], timeout=60)
    assert len(c.get_all(lagging, "lag/")) == 400
    assert (
        "installing the backend received with snapshot" in c.members[lagging].log_path.read_text()
    )


def test_a_member_without_quorum_refuses_writes_and_counts_them(
    make_cluster: Callable[..., Cluster],
) -> None:
    """Two of three members gone: a put on the survivor waits for a leader as etcd's does, then
    fails with ``request timed out``; it is never acknowledged nor applied, and it is counted in
    ``etcd_server_proposals_failed_total``."""
    import urllib.request

    c = make_cluster(3, start=False)
    ports = c.listen_metrics()
    c.start_all()
    c.etcdctl("put", "before", "1")
    leader = c.leader_index()
    assert leader is not None
    survivor = next(i for i in range(3) if i != leader)
    for i in range(3):
        if i != survivor:
            c.kill(i)

    def failed_proposals() -> int:
        url = f"http://127.0.0.1:{ports[survivor]}/metrics"
        with urllib.request.urlopen(url, timeout=5) as resp:
            _types, values = parse(resp.read().decode())
        return int(values["etcd_server_proposals_failed_total"])

    endpoint = c.members[survivor].endpoint
    errors_seen = set()
    deadline = time.monotonic() + 40
    while failed_proposals() == 0:
        assert time.monotonic() < deadline, "no failed proposal counted\n" + c.dump_logs()
        res = c.etcdctl(
            "put",
            "after",
            "x",
            "--command-timeout=15s",
            endpoints=endpoint,
            check=False,
            timeout=30,
        )
        assert res.returncode != 0, "a put was acknowledged without a quorum"
        errors_seen.add(res.stderr.strip().splitlines()[-1] if res.stderr.strip() else "")
    assert any("etcdserver: request timed out" in e for e in errors_seen), errors_seen
    got = c.etcdctl("get", "after", "--consistency=s", endpoints=endpoint)
    assert got.stdout == ""  # nothing was applied
