"""What one benchmark request is: the put, range and txn-put workloads of etcd's benchmark tool.

Owns: :class:`Workload` (a picklable description handed to every load process), key and value
generation, and building the protobuf request for request number ``i``.

Contract (same as etcd 3.4's ``tools/benchmark``): a key is ``key_size`` bytes holding the
zigzag varint of its index in ``[0, key_space_size)`` followed by zero bytes; ``put`` takes the
index ``i % key_space_size`` with ``sequential`` and a uniform random one otherwise; ``txn-put``
is one txn without compares whose success branch puts ``txn_ops`` consecutive keys of the key
space; the value is ``val_size`` random bytes chosen once per process.  ``range`` reads the fixed
``[key, range_end)`` (a single key when ``range_end`` is empty) with the chosen consistency.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

KINDS = ("put", "range", "txn-put")


@dataclass(frozen=True)
class Workload:
    kind: str
    key_size: int = 8
    val_size: int = 8
    key_space_size: int = 1
    sequential: bool = False
    range_key: bytes = b""
    range_end: bytes = b""
    serializable: bool = False
    txn_ops: int = 1

    def validate(self) -> None:
        """Raises ValueError with etcd-style wording for an unusable combination."""
        if self.kind not in KINDS:
            raise ValueError(f"unknown workload {self.kind!r}")
        if self.kind in ("put", "txn-put"):
            if self.key_space_size <= 0:
                raise ValueError(f"expected positive --key-space-size, got ({self.key_space_size})")
            if self.key_size <= 0:
                raise ValueError(f"expected positive --key-size, got ({self.key_size})")
            if self.val_size < 0:
                raise ValueError(f"expected non-negative --val-size, got ({self.val_size})")
        if self.kind == "txn-put":
            if self.txn_ops <= 0:
                raise ValueError(f"expected positive --txn-ops, got ({self.txn_ops})")
            if self.txn_ops > self.key_space_size:
                raise ValueError(
                    "expected --txn-ops no larger than --key-space-size, "
                    f"got txn-ops({self.txn_ops}) key-space-size({self.key_space_size})"
                )
        if self.kind == "range" and not self.range_key:
            raise ValueError("range needs a key")

    @property
    def grpc_method(self) -> str:
        """The KV stub attribute this workload calls."""
        return {"put": "Put", "range": "Range", "txn-put": "Txn"}[self.kind]


def zigzag_varint(n: int) -> bytes:
    """Go's ``binary.PutVarint`` encoding of a signed integer."""
    u = (n << 1) ^ (n >> 63) if n < 0 else n << 1
    u &= (1 << 64) - 1
    out = bytearray()
    while u >= 0x80:
        out.append((u & 0x7F) | 0x80)
        u >>= 7
    out.append(u)
    return bytes(out)


def make_key(index: int, key_size: int) -> bytes:
    """``key_size`` bytes: the varint of ``index`` (truncated if longer) padded with zeros."""
    raw = zigzag_varint(index)[:key_size]
    return raw + bytes(key_size - len(raw))


class RequestFactory:
    """Builds request ``i`` of a workload; one per load process (holds its own RNG)."""

    def __init__(self, workload: Workload, seed: int | None = None) -> None:
        from raftkv.proto import rpc_pb2

        self._pb = rpc_pb2
        self.workload = workload
        self._rng = random.Random(seed)
        self.value = self._rng.randbytes(workload.val_size)
        self._range_req: Any = None
        if workload.kind == "range":
            self._range_req = rpc_pb2.RangeRequest(
                key=workload.range_key,
                range_end=workload.range_end,
                serializable=workload.serializable,
            )

    def key_index(self, i: int) -> int:
        w = self.workload
        if w.sequential:
            return i % w.key_space_size
        return self._rng.randrange(w.key_space_size)

    def build(self, i: int) -> Any:
        """The request message for global request number ``i``."""
        w = self.workload
        pb = self._pb
        if w.kind == "range":
            return self._range_req
        if w.kind == "put":
            return pb.PutRequest(key=make_key(self.key_index(i), w.key_size), value=self.value)
        ops = [
            pb.RequestOp(
                request_put=pb.PutRequest(
                    key=make_key((i * w.txn_ops + j) % w.key_space_size, w.key_size),
                    value=self.value,
                )
            )
            for j in range(w.txn_ops)
        ]
        return pb.TxnRequest(success=ops)
