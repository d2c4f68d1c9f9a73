"""Client threads for real-process tests: random puts, linearizable gets and compare-and-swaps
over gRPC, recorded as a history for the linearizability checker (``tests.linearizability``).

An operation whose RPC fails or times out has an unknown outcome (``ret=None``): it may or may
not have taken effect.  Times are ``time.monotonic()``.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Sequence

import grpc

from raftkv.proto import rpc_pb2 as pb
from raftkv.proto import rpc_pb2_grpc as pb_grpc
from tests.linearizability import Operation

RPC_TIMEOUT = 2.0


def cas_request(key: bytes, expected: str | None, new: str) -> pb.TxnRequest:
    """A Txn putting ``new`` if ``key`` holds ``expected`` (None: if it is absent)."""
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

    def __init__(
        self, cid: int, endpoints: list[str], seed: int, keys: Sequence[str], pause: float = 0.0
    ) -> None:
        """``pause``: seconds between two operations (none: as fast as answers come)."""
        super().__init__(daemon=True, name=f"lin-client-{cid}")
        self.cid = cid
        self.endpoints = endpoints
        self.rng = random.Random(seed)
        self.keys = list(keys)
        self.pause = pause
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
                key = self.rng.choice(self.keys)
                n += 1
                if not self._one(stub, key, f"c{self.cid}-{n}"):
                    self.failures += 1
                    at = (at + 1) % len(channels)
                    time.sleep(0.05)
                if self.pause:
                    self.stop_flag.wait(self.pause)
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
                txn = stub.Txn(cas_request(k, expected, value), timeout=RPC_TIMEOUT)
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
