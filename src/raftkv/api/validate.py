"""Request checks etcd makes before a request reaches Raft (etcd's api/v3rpc/key.go).

Contract: each ``check_*`` raises the exact ``raftkv.errors`` error etcd sends for the first
problem found, or returns None; nothing here touches state.
"""

from __future__ import annotations

from raftkv import errors
from raftkv.proto import rpc_pb2 as pb

_SORT_ORDERS = frozenset(pb.RangeRequest.SortOrder.values())
_SORT_TARGETS = frozenset(pb.RangeRequest.SortTarget.values())


def check_range(r: pb.RangeRequest) -> None:
    if not r.key:
        raise errors.ERR_EMPTY_KEY
    if r.sort_order not in _SORT_ORDERS or r.sort_target not in _SORT_TARGETS:
        raise errors.ERR_INVALID_SORT_OPTION


def check_put(r: pb.PutRequest) -> None:
    if not r.key:
        raise errors.ERR_EMPTY_KEY
    if r.ignore_value and r.value:
        raise errors.ERR_VALUE_PROVIDED
    if r.ignore_lease and r.lease:
        raise errors.ERR_LEASE_PROVIDED


def check_delete_range(r: pb.DeleteRangeRequest) -> None:
    if not r.key:
        raise errors.ERR_EMPTY_KEY


def check_txn(r: pb.TxnRequest, max_txn_ops: int) -> None:
    if len(r.compare) > max_txn_ops or len(r.success) > max_txn_ops or len(r.failure) > max_txn_ops:
        raise errors.ERR_TOO_MANY_OPS
    for c in r.compare:
        if not c.key:
            raise errors.ERR_EMPTY_KEY
    for op in r.success:
        _check_request_op(op, max_txn_ops)
    for op in r.failure:
        _check_request_op(op, max_txn_ops)
    _check_duplicate_puts(r.success)
    _check_duplicate_puts(r.failure)


def _check_request_op(op: pb.RequestOp, max_txn_ops: int) -> None:
    which = op.WhichOneof("request")
    if which == "request_range":
        check_range(op.request_range)
    elif which == "request_put":
        check_put(op.request_put)
    elif which == "request_delete_range":
        check_delete_range(op.request_delete_range)
    elif which == "request_txn":
        check_txn(op.request_txn, max_txn_ops)


def _collect_puts(ops: object, out: set[bytes]) -> None:
    for op in ops:  # type: ignore[attr-defined]
        which = op.WhichOneof("request")
        if which == "request_put":
            key = op.request_put.key
            if key in out:
                raise errors.ERR_DUPLICATE_KEY
            out.add(key)
        elif which == "request_txn":
            # A nested txn's branches are alternatives: each must be disjoint from the outer puts.
            success: set[bytes] = set(out)
            _collect_puts(op.request_txn.success, success)
            failure: set[bytes] = set(out)
            _collect_puts(op.request_txn.failure, failure)
            out |= success | failure


def _check_duplicate_puts(ops: object) -> None:
    """etcd refuses a txn branch that writes one key twice, or puts a key it also deletes."""
    puts: set[bytes] = set()
    _collect_puts(ops, puts)
    for op in ops:  # type: ignore[attr-defined]
        if op.WhichOneof("request") != "request_delete_range":
            continue
        d = op.request_delete_range
        for key in puts:
            if _in_range(key, d.key, d.range_end):
                raise errors.ERR_DUPLICATE_KEY


def _in_range(key: bytes, start: bytes, end: bytes) -> bool:
    if not end:
        return key == start
    if end == b"\x00":
        return key >= start
    return start <= key < end
