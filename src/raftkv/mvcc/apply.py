"""Request semantics of the KV service on top of MVCC views (etcd's applierV3backend).

Owns: what a Range, Put, DeleteRange and Txn request means, given a read view
(snapshot at a revision) or a write view (one MVCC transaction = one main
revision): range_end conventions, limit/sort/filter/count/more, prev_kv,
ignore_value/ignore_lease, compares (with range_end) and nested txns.

Contracts (as etcd):
- a txn whose branch writes one key twice (two puts, or a put inside a deleted
  range) is rejected with DuplicateKeyError, as etcd's API does, so no write
  inside a txn can fail once validation passed;
- all compares of a txn, nested ones included, are evaluated against the state
  before the txn, and every put/range of the chosen branches is validated
  against that state before anything is written: a txn either fails with a
  request error and changes nothing, or applies completely;
- a txn that writes gets one new main revision; each write a sub revision;
- ``count`` is the number of keys in range at the read revision before limit
  and the min/max revision filters; ``more`` is set when the limit cut results.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Protocol

from raftkv.mvcc.errors import (
    CompactedError,
    DuplicateKeyError,
    FutureRevError,
    KeyNotFoundError,
    LeaseNotFoundError,
)
from raftkv.mvcc.types import (
    Compare,
    CompareResult,
    CompareTarget,
    DeleteRangeRequest,
    DeleteRangeResponse,
    KeyValue,
    PutRequest,
    PutResponse,
    RangeRequest,
    RangeResponse,
    RequestOp,
    ResponseOp,
    SortOrder,
    SortTarget,
    TxnRequest,
    TxnResponse,
)

LeaseChecker = Callable[[int], bool]


class ReadView(Protocol):
    def rev(self) -> int:
        """The revision this view reads at (etcd's Rev())."""
        ...

    def first_rev(self) -> int:
        """The compacted revision (etcd's FirstRev())."""
        ...

    def range_keys(
        self, key: bytes, end: bytes | None, rev: int, limit: int, count_only: bool
    ) -> tuple[list[KeyValue], int, int]:
        """(kvs, count, header revision); raises FutureRevError / CompactedError."""
        ...


class WriteView(ReadView, Protocol):
    def changed(self) -> bool: ...

    def put(self, key: bytes, value: bytes, lease: int) -> int: ...

    def delete_range(self, key: bytes, end: bytes | None) -> tuple[int, int]: ...


def mk_gte_range(range_end: bytes) -> bytes | None:
    """Request range_end -> index end: None = single key, b"" = no upper bound."""
    if not range_end:
        return None
    if range_end == b"\x00":
        return b""
    return range_end


_SORT_KEYS: dict[SortTarget, Callable[[KeyValue], bytes | int]] = {
    SortTarget.KEY: lambda kv: kv.key,
    SortTarget.VERSION: lambda kv: kv.version,
    SortTarget.CREATE: lambda kv: kv.create_revision,
    SortTarget.MOD: lambda kv: kv.mod_revision,
    SortTarget.VALUE: lambda kv: kv.value,
}


def range_request(view: ReadView, r: RangeRequest) -> RangeResponse:
    limit = r.limit
    if (
        r.sort_order != SortOrder.NONE
        or r.min_mod_revision
        or r.max_mod_revision
        or r.min_create_revision
        or r.max_create_revision
    ):
        limit = 0  # fetch everything; filter, sort and truncate afterwards
    if limit > 0:
        limit += 1  # one extra to learn whether there are more
    kvs, count, rev = view.range_keys(
        r.key, mk_gte_range(r.range_end), r.revision, limit, r.count_only
    )
    if r.max_mod_revision:
        kvs = [kv for kv in kvs if kv.mod_revision <= r.max_mod_revision]
    if r.min_mod_revision:
        kvs = [kv for kv in kvs if kv.mod_revision >= r.min_mod_revision]
    if r.max_create_revision:
        kvs = [kv for kv in kvs if kv.create_revision <= r.max_create_revision]
    if r.min_create_revision:
        kvs = [kv for kv in kvs if kv.create_revision >= r.min_create_revision]
    order = r.sort_order
    if r.sort_target != SortTarget.KEY and order == SortOrder.NONE:
        order = SortOrder.ASCEND
    if order != SortOrder.NONE:
        # Stable sort: ties keep ascending key order in both directions.
        kvs = sorted(kvs, key=_SORT_KEYS[r.sort_target], reverse=order == SortOrder.DESCEND)
    more = False
    if r.limit > 0 and len(kvs) > r.limit:
        kvs = kvs[: r.limit]
        more = True
    if r.keys_only:
        kvs = [
            KeyValue(kv.key, kv.create_revision, kv.mod_revision, kv.version, b"", kv.lease)
            for kv in kvs
        ]
    return RangeResponse(rev, tuple(kvs), more, count)


def _get_one(view: ReadView, key: bytes) -> KeyValue | None:
    kvs, _count, _rev = view.range_keys(key, None, 0, 0, False)
    return kvs[0] if kvs else None


def put_request(
    view: WriteView, p: PutRequest, lease_exists: LeaseChecker | None, standalone: bool = True
) -> PutResponse:
    """Apply one put; ``standalone`` is False inside a txn (checks were done up front)."""
    value, lease = p.value, p.lease
    if standalone and lease != 0 and lease_exists is not None and not lease_exists(lease):
        raise LeaseNotFoundError()
    prev: KeyValue | None = None
    if p.ignore_value or p.ignore_lease or p.prev_kv:
        prev = _get_one(view, p.key)
    if (p.ignore_value or p.ignore_lease) and prev is None:
        raise KeyNotFoundError()
    if p.ignore_value and prev is not None:
        value = prev.value
    if p.ignore_lease and prev is not None:
        lease = prev.lease
    rev = view.put(p.key, value, lease)
    return PutResponse(rev, prev if p.prev_kv else None)


def delete_range_request(view: WriteView, d: DeleteRangeRequest) -> DeleteRangeResponse:
    end = mk_gte_range(d.range_end)
    prev: tuple[KeyValue, ...] = ()
    if d.prev_kv:
        kvs, _count, _rev = view.range_keys(d.key, end, 0, 0, False)
        prev = tuple(kvs)
    deleted, rev = view.delete_range(d.key, end)
    return DeleteRangeResponse(rev, deleted, prev)


def _compare_kv(c: Compare, kv: KeyValue) -> bool:
    target = c.target
    ours: bytes | int
    theirs: bytes | int
    if target == CompareTarget.VALUE:
        ours, theirs = kv.value, c.value
    elif target == CompareTarget.CREATE:
        ours, theirs = kv.create_revision, c.create_revision
    elif target == CompareTarget.MOD:
        ours, theirs = kv.mod_revision, c.mod_revision
    elif target == CompareTarget.VERSION:
        ours, theirs = kv.version, c.version
    else:
        ours, theirs = kv.lease, c.lease
    result = (ours > theirs) - (ours < theirs)  # type: ignore[operator]
    if c.result == CompareResult.EQUAL:
        return result == 0
    if c.result == CompareResult.NOT_EQUAL:
        return result != 0
    if c.result == CompareResult.GREATER:
        return result > 0
    if c.result == CompareResult.LESS:
        return result < 0
    return True


def apply_compare(view: ReadView, c: Compare) -> bool:
    try:
        kvs, _count, _rev = view.range_keys(c.key, mk_gte_range(c.range_end), 0, 0, False)
    except (CompactedError, FutureRevError):
        return False
    if not kvs:
        if c.target == CompareTarget.VALUE:
            return False  # a missing key has no value to compare, not even b""
        return _compare_kv(c, KeyValue(b""))
    return all(_compare_kv(c, kv) for kv in kvs)


def compare_to_path(view: ReadView, t: TxnRequest) -> list[bool]:
    """Branch taken by the txn and, in pre-order, by every nested txn on that branch."""
    ok = all(apply_compare(view, c) for c in t.compare)
    path = [ok]
    for op in t.success if ok else t.failure:
        if isinstance(op, TxnRequest):
            path.extend(compare_to_path(view, op))
    return path


def is_txn_readonly(t: TxnRequest) -> bool:
    for op in (*t.success, *t.failure):
        if isinstance(op, (PutRequest, DeleteRangeRequest)):
            return False
        if isinstance(op, TxnRequest) and not is_txn_readonly(op):
            return False
    return True


def _branch_ops(t: TxnRequest, path: Iterator[bool]) -> Iterator[RequestOp]:
    """Ops on the taken branches in execution order, consuming ``path`` in pre-order."""
    for op in t.success if next(path) else t.failure:
        if isinstance(op, TxnRequest):
            yield from _branch_ops(op, path)
        else:
            yield op


def _check_put(view: ReadView, op: PutRequest, lease_exists: LeaseChecker | None) -> None:
    if (op.ignore_value or op.ignore_lease) and _get_one(view, op.key) is None:
        raise KeyNotFoundError()
    if op.lease != 0 and lease_exists is not None and not lease_exists(op.lease):
        raise LeaseNotFoundError()


def _check_range(view: ReadView, op: RangeRequest) -> None:
    if op.revision == 0:
        return
    if op.revision > view.rev():
        raise FutureRevError()
    if op.revision < view.first_rev():
        raise CompactedError()


def _deleted(dels: list[tuple[bytes, bytes | None]], k: bytes) -> bool:
    return any(k == lo if hi is None else lo <= k and (not hi or k < hi) for lo, hi in dels)


def _check_intervals(
    ops: tuple[RequestOp, ...],
) -> tuple[set[bytes], list[tuple[bytes, bytes | None]]]:
    """Keys put and ranges deleted by one branch; DuplicateKeyError on overlap.

    As etcd's checkIntervals, except that a delete with range_end b"\\x00" covers
    every key from ``key`` on (etcd's interval tree treats that range as empty).
    """
    dels = [
        (op.key, mk_gte_range(op.range_end)) for op in ops if isinstance(op, DeleteRangeRequest)
    ]
    puts: set[bytes] = set()
    for op in ops:
        if not isinstance(op, TxnRequest):
            continue
        puts_then, dels_then = _check_intervals(op.success)
        puts_else, dels_else = _check_intervals(op.failure)
        for k in puts_then:
            if k in puts or _deleted(dels, k):
                raise DuplicateKeyError()
            puts.add(k)
        for k in puts_else:
            if (k in puts and k not in puts_then) or _deleted(dels, k):
                raise DuplicateKeyError()
            puts.add(k)
        dels.extend(dels_then)
        dels.extend(dels_else)
    for op in ops:
        if isinstance(op, PutRequest):
            if op.key in puts or _deleted(dels, op.key):
                raise DuplicateKeyError()
            puts.add(op.key)
    return puts, dels


def check_txn_intervals(t: TxnRequest) -> None:
    """Reject txns whose branches write one key twice (etcd's ErrGRPCDuplicateKey)."""
    _check_intervals(t.success)
    _check_intervals(t.failure)


def txn_request(view: WriteView, t: TxnRequest, lease_exists: LeaseChecker | None) -> TxnResponse:
    check_txn_intervals(t)
    path = compare_to_path(view, t)
    ops = list(_branch_ops(t, iter(path)))
    if not is_txn_readonly(t):
        for op in ops:
            if isinstance(op, PutRequest):
                _check_put(view, op, lease_exists)
    for op in ops:
        if isinstance(op, RangeRequest):
            _check_range(view, op)
    succeeded, responses = _apply_txn(view, t, iter(path), lease_exists)
    return TxnResponse(view.rev() + (1 if view.changed() else 0), succeeded, responses)


def _apply_txn(
    view: WriteView, t: TxnRequest, path: Iterator[bool], lease_exists: LeaseChecker | None
) -> tuple[bool, tuple[ResponseOp, ...]]:
    ok = next(path)
    out: list[ResponseOp] = []
    for op in t.success if ok else t.failure:
        if isinstance(op, RangeRequest):
            out.append(range_request(view, op))
        elif isinstance(op, PutRequest):
            out.append(put_request(view, op, lease_exists, standalone=False))
        elif isinstance(op, DeleteRangeRequest):
            out.append(delete_range_request(view, op))
        else:
            nested_ok, nested = _apply_txn(view, op, path, lease_exists)
            out.append(TxnResponse(0, nested_ok, nested))  # etcd leaves nested headers empty
    return ok, tuple(out)
