"""An unconfirmed backend copy on a real 3-member cluster (``raftkv.guard.vouch``): the leader
sends its state to a member that needs a snapshot while the third voter is down, stamped as
the leader's; the receiver reports it (``raftkv_unconfirmed_copy_index{origin}``) until the
third voter comes back, applies past the copy's index and holds the same apply digest there,
and then it is the receiver's own state again."""

from __future__ import annotations

import time
import urllib.request
from collections.abc import Callable

import grpc

from raftkv.proto import rpc_pb2 as pb
from raftkv.proto import rpc_pb2_grpc as pb_grpc
from tests.cluster.harness import Cluster
from tests.prom_text import parse


def _copy_index(port: int) -> dict[str, float] | None:
    """origin (hex) -> index of the unconfirmed copy the member at metrics ``port`` holds;
    None while it does not serve metrics (starting)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
            _types, values = parse(resp.read().decode())
    except OSError:
        return None
    prefix = 'raftkv_unconfirmed_copy_index{origin="'
    return {k[len(prefix) : -2]: v for k, v in values.items() if k.startswith(prefix)}


def test_a_copy_sent_unconfirmed_is_stamped_until_a_third_voter_confirms_it(
    make_cluster: Callable[..., Cluster],
) -> None:
    c = make_cluster(
        3,
        extra_args=["--snapshot-count", "20", "--experimental-snapshot-catchup-entries", "5"],
        start=False,
    )
    ports = c.listen_metrics()
    c.start_all()
    c.etcdctl("put", "before", "1")
    leader = c.leader_index()
    assert leader is not None
    receiver, third = (leader + 1) % 3, (leader + 2) % 3
    c.kill(receiver)
    channel = grpc.insecure_channel(c.members[leader].endpoint)
    try:
        stub = pb_grpc.KVStub(channel)
        # Several snapshots while the receiver is down: it can only catch up by a copy.
        for n in range(120):
            stub.Put(pb.PutRequest(key=f"k/{n:04d}".encode(), value=b"x"), timeout=5)
    finally:
        channel.close()
    c.kill(third)  # nobody left to confirm the leader's apply digest
    c.start(receiver)
    leader_id = f"{c.member_id(leader):x}"
    c.wait_until(
        lambda: leader_id in (_copy_index(ports[receiver]) or {}),
        "the receiver to report the leader's unconfirmed copy",
        timeout=60,
    )
    leader_log = c.members[leader].log_path.read_text()
    assert "this member's state at index" in leader_log and "unconfirmed" in leader_log
    assert c.get_all(receiver, "k/") == {f"k/{n:04d}": "x" for n in range(120)}

    c.start(third)  # its log still reaches: it applies the copy's index itself
    c.wait_until(
        lambda: _copy_index(ports[receiver]) == {},
        "the third voter to confirm the copy",
        timeout=60,
    )
    receiver_log = c.members[receiver].log_path.read_text()
    assert f"the copy of member {leader_id}'s state at index" in receiver_log
    assert "is confirmed" in receiver_log
    assert c.corrupt_alarms(c.members[leader].endpoint) == set()
    # Confirmed means durable: a restart does not bring the stamp back.
    c.kill(receiver)
    c.start(receiver)
    c.wait_ready()
    c.etcdctl("put", "after", "1", endpoints=c.members[leader].endpoint)
    deadline = time.monotonic() + 30
    while c.get_all(receiver, "after").get("after") != "1":
        assert time.monotonic() < deadline, c.dump_logs()
        time.sleep(0.2)
    assert _copy_index(ports[receiver]) == {}
