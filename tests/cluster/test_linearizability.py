"""A real 3-member cluster under SIGKILL/restart of leader and followers stays linearizable.

Client threads issue put / linearizable get / compare-and-set (a Txn comparing the value) on a
few keys through gRPC, recording monotonic call and return times; an error or a timeout is an
unknown outcome (the operation may or may not have taken effect).  Meanwhile the test kills
and restarts the leader and a follower.  The history is then checked with the simulator's
Wing-Gong checker (``tests.sim.linearizability``).  Wall time stays well under a minute.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable

import grpc

from raftkv.proto import rpc_pb2 as pb
from raftkv.proto import rpc_pb2_grpc as pb_grpc
from tests.cluster.harness import Cluster
from tests.sim.linearizability import Operation, check_history

KEYS = ("lin/a", "lin/b", "lin/c")
CLIENTS = 4
RPC_TIMEOUT = 2.0


def _cas_request(key: bytes, expected: str | None, new: str) -> pb.TxnRequest:
    if expected is None:
        cmp = pb.Compare(key=key, target=pb.Compare.CREATE, result=pb.Compare.EQUAL,
                         create_revision=0)  # fmt: skip
    else:
        cmp = pb.Compare(key=key, target=pb.Compare.VALUE, result=pb.Compare.EQUAL,
                         value=expected.encode())  # fmt: skip
    put = pb.RequestOp(request_put=pb.PutRequest(key=key, value=new.encode()))
    return pb.TxnRequest(compare=[cmp], success=[put])


class Client(threading.Thread):
    """Random operations until stopped; an operation's outcome is unknown when its RPC fails."""

    def __init__(self, cid: int, endpoints: list[str], seed: int) -> None:
        super().__init__(daemon=True, name=f"lin-client-{cid}")
        self.cid = cid
        self.endpoints = endpoints
        self.rng = random.Random(seed)
        self.history: list[Operation] = []
        self.stop_flag = threading.Event()
        self.failures = 0
        self.last_seen: dict[str, str | None] = {}

    def run(self) -> None:
        channels = [grpc.insecure_channel(e) for e in self.endpoints]
        at = self.cid % len(channels)
        n = 0
        try:
            while not self.stop_flag.is_set():
                stub = pb_grpc.KVStub(channels[at])
                key = self.rng.choice(KEYS)
                n += 1
                if not self._one(stub, key, f"c{self.cid}-{n}"):
                    self.failures += 1
                    at = (at + 1) % len(channels)
                    time.sleep(0.05)
        finally:
            for ch in channels:
                ch.close()

    def _one(self, stub: pb_grpc.KVStub, key: str, value: str) -> bool:
        kind = self.rng.choice(("put", "get", "get", "cas", "cas"))
        k = key.encode()
        call = time.monotonic()
        try:
            if kind == "put":
                stub.Put(pb.PutRequest(key=k, value=value.encode()), timeout=RPC_TIMEOUT)
                self.history.append(Operation.put(key, value, call, time.monotonic(), self.cid))
            elif kind == "get":
                resp = stub.Range(pb.RangeRequest(key=k), timeout=RPC_TIMEOUT)
                got = resp.kvs[0].value.decode() if resp.kvs else None
                self.last_seen[key] = got
                self.history.append(Operation.get(key, got, call, time.monotonic(), self.cid))
            else:
                expected = self.last_seen.get(key)
                txn = stub.Txn(_cas_request(k, expected, value), timeout=RPC_TIMEOUT)
                ret = time.monotonic()
                if txn.succeeded:
                    self.last_seen[key] = value
                self.history.append(
                    Operation.cas(key, expected, value, txn.succeeded, call, ret, self.cid)
                )
            return True
        except grpc.RpcError:
            if kind == "put":
                self.history.append(Operation.put(key, value, call, None, self.cid))
            elif kind == "cas":
                expected = self.last_seen.get(key)
                self.history.append(Operation.cas(key, expected, value, None, call, None, self.cid))
            return False


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
    clients = [Client(i, endpoints, seed + i) for i in range(CLIENTS)]
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
