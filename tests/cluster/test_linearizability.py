"""A real 3-member cluster under SIGKILL/restart of leader and followers stays linearizable.

Client threads issue put / linearizable get / compare-and-set (a Txn comparing the value) on a
few keys through gRPC, recording monotonic call and return times; an error or a timeout is an
unknown outcome (the operation may or may not have taken effect).  Meanwhile the test kills
and restarts the leader and a follower.  The history is then checked with the simulator's
Wing-Gong checker (``tests.linearizability``).  Wall time stays well under a minute.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable

import grpc

from raftkv.proto import rpc_pb2 as pb
from raftkv.proto import rpc_pb2_grpc as pb_grpc
from tests.cluster.harness import Cluster
from tests.cluster.workload import RPC_TIMEOUT as CLIENT_RPC_TIMEOUT
from tests.cluster.workload import Client
from tests.linearizability import check_history

KEYS = ("lin/a", "lin/b", "lin/c")
CLIENTS = 4
RPC_TIMEOUT = CLIENT_RPC_TIMEOUT


def _wait_write(c: Cluster, timeout: float = 30) -> None:
    """Until some member acknowledges a write (bounded)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for m in c.members:
            if not m.alive():
                continue
            with grpc.insecure_channel(m.endpoint) as ch:
                try:
                    pb_grpc.KVStub(ch).Put(pb.PutRequest(key=b"lin-probe", value=b"1"), timeout=2)
                    return
                except grpc.RpcError:
                    pass
        time.sleep(0.2)
    raise AssertionError("no member accepts writes\n" + c.dump_logs())


def test_history_under_kills_is_linearizable(make_cluster: Callable[..., Cluster]) -> None:
    c = make_cluster(3)
    endpoints = [m.endpoint for m in c.members]
    seed = random.randrange(1 << 30)
    clients = [Client(i, endpoints, seed + i, KEYS) for i in range(CLIENTS)]
    for cl in clients:
        cl.start()
    kills: list[str] = []
    try:
        time.sleep(2)
        for victim in ("leader", "follower", "leader"):
            leader = c.leader_index()
            assert leader is not None, "no leader\n" + c.dump_logs()
            i = leader if victim == "leader" else (leader + 1) % 3
            c.kill(i)
            kills.append(f"{victim} {c.members[i].name}")
            time.sleep(2.5)
            c.start(i)
            c.wait_ready()
            time.sleep(2)
        _wait_write(c)
        time.sleep(1)
    finally:
        for cl in clients:
            cl.stop_flag.set()
        for cl in clients:
            cl.join(RPC_TIMEOUT + 10)
    history = [op for cl in clients for op in cl.history]
    completed = [op for op in history if op.ret is not None]
    # enough work got through on every key for the check to mean something
    for key in KEYS:
        assert sum(1 for op in completed if op.key == key) >= 5, (key, len(completed), kills)
    result = check_history(history)
    assert result.ok, (
        f"seed {seed}, kills {kills}, {len(history)} ops ({len(completed)} completed):\n"
        + result.explanation
        + "\n"
        + c.dump_logs(30)
    )
