"""A deliberately naive in-memory model of etcd's KV semantics, for differential tests.

It keeps a full copy of the key space per revision and implements each request
from etcd's documented behaviour, sharing no code with ``raftkv.mvcc`` beyond
the record types and error classes.
"""

from __future__ import annotations

from raftkv.mvcc import (
    CompactedError,
    CompactionRequest,
    CompactionResponse,
    Compare,
    CompareResult,
    CompareTarget,
    DeleteRangeRequest,
    DeleteRangeResponse,
    DuplicateKeyError,
    Event,
    EventType,
    FutureRevError,
    KeyNotFoundError,
    KeyValue,
    LeaseNotFoundError,
    PutRequest,
    PutResponse,
    RangeRequest,
    RangeResponse,
    SortOrder,
    SortTarget,
    TxnRequest,
    TxnResponse,
)
from raftkv.mvcc.types import ResponseOp, WriteRequest, WriteResponse

LIVE_LEASES = frozenset({0, 7})


def in_range(k: bytes, key: bytes, end: bytes) -> bool:
    if end == b"":
        return k == key
    if end == b"\x00":
        return k >= key
    return key <= k < end


def _intervals(ops: tuple[object, ...]) -> tuple[set[bytes], list[tuple[bytes, bytes]]]:
    """etcd's duplicate-key rule: deletes of this level, then nested branches, then puts."""
    dels = [(op.key, op.range_end) for op in ops if isinstance(op, DeleteRangeRequest)]
    puts: set[bytes] = set()

    def clash(k: bytes) -> bool:
        return any(in_range(k, a, e) for a, e in dels)

    for op in ops:
        if isinstance(op, TxnRequest):
            then_puts, then_dels = _intervals(op.success)
            else_puts, else_dels = _intervals(op.failure)
            for k in sorted(then_puts):
                if k in puts or clash(k):
                    raise DuplicateKeyError()
                puts.add(k)
            for k in sorted(else_puts):
                if (k in puts and k not in then_puts) or clash(k):
                    raise DuplicateKeyError()
                puts.add(k)
            dels += then_dels + else_dels
    for op in ops:
        if isinstance(op, PutRequest):
            if op.key in puts or clash(op.key):
                raise DuplicateKeyError()
            puts.add(op.key)
    return puts, dels


class Model:
    def __init__(self) -> None:
        self.states: list[dict[bytes, KeyValue]] = [{}, {}]  # index = revision; rev 1 empty
        self.compact = -1
        self.events: list[Event] = []

    @property
    def cur(self) -> int:
        return len(self.states) - 1

    def _read(self, state: dict[bytes, KeyValue], r: RangeRequest, hdr: int) -> RangeResponse:
        kvs = sorted(
            (kv for k, kv in state.items() if in_range(k, r.key, r.range_end)),
            key=lambda kv: kv.key,
        )
        count = len(kvs)
        if r.count_only:
            return RangeResponse(hdr, (), False, count)
        if r.max_mod_revision:
            kvs = [kv for kv in kvs if kv.mod_revision <= r.max_mod_revision]
        if r.min_mod_revision:
            kvs = [kv for kv in kvs if kv.mod_revision >= r.min_mod_revision]
        if r.max_create_revision:
            kvs = [kv for kv in kvs if kv.create_revision <= r.max_create_revision]
        if r.min_create_revision:
            kvs = [kv for kv in kvs if kv.create_revision >= r.min_create_revision]
        order = r.sort_order
        if order == SortOrder.NONE and r.sort_target != SortTarget.KEY:
            order = SortOrder.ASCEND
        attr = {
            SortTarget.KEY: "key",
            SortTarget.VERSION: "version",
            SortTarget.CREATE: "create_revision",
            SortTarget.MOD: "mod_revision",
            SortTarget.VALUE: "value",
        }
        if order != SortOrder.NONE:
            kvs.sort(
                key=lambda kv: getattr(kv, attr[r.sort_target]), reverse=order == SortOrder.DESCEND
            )
        more = 0 < r.limit < len(kvs)
        if more:
            kvs = kvs[: r.limit]
        if r.keys_only:
            kvs = [
                KeyValue(kv.key, kv.create_revision, kv.mod_revision, kv.version, b"", kv.lease)
                for kv in kvs
            ]
        return RangeResponse(hdr, tuple(kvs), more, count)

    def range(self, r: RangeRequest) -> RangeResponse:
        rev = r.revision
        if rev > self.cur:
            raise FutureRevError()
        if rev <= 0:
            rev = self.cur
        if rev < self.compact:
            raise CompactedError()
        return self._read(self.states[rev], r, self.cur)

    def _compare(self, c: Compare) -> bool:
        end = c.range_end
        kvs = [kv for k, kv in self.states[self.cur].items() if in_range(k, c.key, end)]
        if not kvs:
            if c.target == CompareTarget.VALUE:
                return False
            kvs = [KeyValue(b"")]
        for kv in kvs:
            ours, theirs = {
                CompareTarget.VALUE: (kv.value, c.value),
                CompareTarget.VERSION: (kv.version, c.version),
                CompareTarget.CREATE: (kv.create_revision, c.create_revision),
                CompareTarget.MOD: (kv.mod_revision, c.mod_revision),
                CompareTarget.LEASE: (kv.lease, c.lease),
            }[c.target]
            ok = {
                CompareResult.EQUAL: ours == theirs,
                CompareResult.NOT_EQUAL: ours != theirs,
                CompareResult.GREATER: ours > theirs,  # type: ignore[operator]
                CompareResult.LESS: ours < theirs,  # type: ignore[operator]
            }[c.result]
            if not ok:
                return False
        return True

    def _taken(self, t: TxnRequest) -> list[object]:
        ops = t.success if all(self._compare(c) for c in t.compare) else t.failure
        out: list[object] = []
        for op in ops:
            out.extend(self._taken(op) if isinstance(op, TxnRequest) else [op])
        return out

    def _check(self, t: TxnRequest) -> None:
        _intervals(t.success)
        _intervals(t.failure)
        ops = self._taken(t)
        for op in ops:
            if isinstance(op, PutRequest):
                if (op.ignore_value or op.ignore_lease) and op.key not in self.states[self.cur]:
                    raise KeyNotFoundError()
                if op.lease not in LIVE_LEASES:
                    raise LeaseNotFoundError()
        for op in ops:
            if isinstance(op, RangeRequest) and op.revision:
                if op.revision > self.cur:
                    raise FutureRevError()
                if op.revision < self.compact:
                    raise CompactedError()

    def apply(self, req: WriteRequest) -> WriteResponse:
        if isinstance(req, CompactionRequest):
            if req.revision <= self.compact:
                raise CompactedError()
            if req.revision > self.cur:
                raise FutureRevError()
            self.compact = req.revision
            return CompactionResponse(self.cur)
        if isinstance(req, RangeRequest):
            return self.range(req)
        if isinstance(req, PutRequest):
            if req.lease not in LIVE_LEASES:
                raise LeaseNotFoundError()
            if (req.ignore_value or req.ignore_lease) and req.key not in self.states[self.cur]:
                raise KeyNotFoundError()
        if isinstance(req, TxnRequest):
            self._check(req)
        work = dict(self.states[self.cur])
        changes: list[Event] = []
        resp = self._op(req, work, changes)
        if changes:
            self.states.append(work)
            self.events.extend(changes)
        if isinstance(req, TxnRequest):
            assert isinstance(resp, TxnResponse)
            return TxnResponse(self.cur, resp.succeeded, resp.responses)
        return resp

    def _op(self, req: WriteRequest, w: dict[bytes, KeyValue], ch: list[Event]) -> ResponseOp:
        rev = self.cur + 1
        if isinstance(req, PutRequest):
            prev = w.get(req.key)
            value = prev.value if req.ignore_value and prev else req.value
            lease = prev.lease if req.ignore_lease and prev else req.lease
            kv = KeyValue(
                req.key,
                prev.create_revision if prev else rev,
                rev,
                prev.version + 1 if prev else 1,
                value,
                lease,
            )
            w[req.key] = kv
            ch.append(Event(EventType.PUT, kv))
            return PutResponse(rev, prev if req.prev_kv else None)
        if isinstance(req, DeleteRangeRequest):
            gone = sorted(k for k in w if in_range(k, req.key, req.range_end))
            prevs = tuple(w[k] for k in gone) if req.prev_kv else ()
            for k in gone:
                del w[k]
                ch.append(Event(EventType.DELETE, KeyValue(k, mod_revision=rev)))
            return DeleteRangeResponse(rev if gone or ch else self.cur, len(gone), prevs)
        if isinstance(req, RangeRequest):
            hdr = rev if ch else self.cur
            state = w if req.revision == 0 else self.states[req.revision]
            return self._read(state, req, hdr)
        assert isinstance(req, TxnRequest)
        ok = all(self._compare(c) for c in req.compare)
        out = tuple(self._op(op, w, ch) for op in (req.success if ok else req.failure))
        return TxnResponse(0, ok, out)
