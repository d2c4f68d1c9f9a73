"""Differential test: random request sequences against the store and a naive model.

Every response (or error) must be identical, at current and historical
revisions, across batches, reopenings and chunked compaction; a watcher from
revision 1 must see exactly the model's event history, in order.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from raftkv.mvcc import (
    CompactionRequest,
    Compare,
    CompareResult,
    CompareTarget,
    DeleteRangeRequest,
    KVStore,
    MVCCRequestError,
    PutRequest,
    QueueSink,
    RangeRequest,
    SortOrder,
    SortTarget,
    TxnRequest,
    WatchableStore,
)
from raftkv.mvcc.types import WriteRequest
from tests.mvcc.conftest import open_store
from tests.mvcc.model import LIVE_LEASES, Model

KEYS = st.sampled_from([b"a", b"ab", b"b", b"c", b"d"])
ENDS = st.sampled_from([b"", b"", b"\x00", b"b", b"c", b"e", b"a"])
VALUES = st.sampled_from([b"", b"x", b"y", b"zz"])
LEASES = st.sampled_from([0, 0, 7, 9])

puts = st.builds(
    PutRequest,
    KEYS,
    VALUES,
    LEASES,
    st.booleans(),
    st.booleans() | st.just(False),
    st.booleans() | st.just(False),
)
deletes = st.builds(DeleteRangeRequest, KEYS, ENDS, st.booleans())
compares = st.builds(
    Compare,
    KEYS,
    st.sampled_from(list(CompareTarget)),
    st.sampled_from(list(CompareResult)),
    version=st.integers(0, 3),
    create_revision=st.integers(0, 8),
    mod_revision=st.integers(0, 12),
    value=VALUES,
    lease=st.sampled_from([0, 7]),
    range_end=ENDS,
)


def ranges(max_rev: int) -> st.SearchStrategy[RangeRequest]:
    return st.builds(
        RangeRequest,
        KEYS,
        ENDS,
        st.integers(0, 3),
        st.integers(0, max_rev),
        st.sampled_from(list(SortOrder)),
        st.sampled_from(list(SortTarget)),
        st.just(False),
        st.booleans(),
        st.booleans(),
        st.integers(0, 6),
        st.integers(0, 6),
        st.integers(0, 6),
        st.integers(0, 6),
    )


def txns(max_rev: int) -> st.SearchStrategy[TxnRequest]:
    leaf = st.one_of(puts, deletes, ranges(max_rev))
    inner = st.builds(
        TxnRequest,
        st.lists(compares, max_size=2).map(tuple),
        st.lists(leaf, max_size=3).map(tuple),
        st.lists(leaf, max_size=3).map(tuple),
    )
    op = st.one_of(leaf, leaf, inner)
    return st.builds(
        TxnRequest,
        st.lists(compares, max_size=3).map(tuple),
        st.lists(op, max_size=4).map(tuple),
        st.lists(op, max_size=4).map(tuple),
    )


class MVCCMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="mvcc-model-"))
        self.model = Model()
        self.raft_index = 0
        self.received: list[object] = []
        self.canceled = False
        self._open()

    def _open(self) -> None:
        self.store: KVStore = open_store(self.dir, compaction_batch=2)
        self.store.lease_exists = LIVE_LEASES.__contains__
        self.watch = WatchableStore(self.store, batch_max_revs=2)
        self.sink = QueueSink(capacity=2)
        if not self.canceled:
            start = self.received[-1].kv.mod_revision + 1 if self.received else 1  # type: ignore[attr-defined]
            self.wid = self.watch.watch(b"\x00", b"\x00", start, sink=self.sink)

    def _drain(self) -> None:
        for resp in self.sink.drain():
            if resp.canceled:
                assert resp.compact_revision == self.store.compact_revision
                self.canceled = True
            self.received.extend(resp.events)
        assert self.received == self.model.events[: len(self.received)]

    def _apply(self, reqs: list[WriteRequest]) -> None:
        entries = []
        for r in reqs:
            self.raft_index += 1
            entries.append((self.raft_index, 3, r))
        got = self.store.apply_batch(entries)
        for r, g in zip(reqs, got, strict=True):
            try:
                want: object = self.model.apply(r)
            except MVCCRequestError as exc:
                want = exc
            if isinstance(want, Exception):
                assert type(g) is type(want), (r, g, want)
            else:
                assert g == want, (r, g, want)

    @rule(req=st.one_of(puts, deletes))
    def write(self, req: WriteRequest) -> None:
        self._apply([req])

    @rule(data=st.data())
    def txn(self, data: st.DataObject) -> None:
        self._apply([data.draw(txns(self.model.cur + 1))])

    @rule(data=st.data(), n=st.integers(2, 5))
    def batch(self, data: st.DataObject, n: int) -> None:
        reqs: list[WriteRequest] = []
        for _ in range(n):
            reqs.append(data.draw(st.one_of(puts, deletes, txns(self.model.cur + 1))))
        self._apply(reqs)

    @rule(data=st.data())
    def compact(self, data: st.DataObject) -> None:
        self._apply([CompactionRequest(data.draw(st.integers(0, self.model.cur + 1)))])

    @rule(steps=st.integers(1, 6))
    def compaction_work(self, steps: int) -> None:
        for _ in range(steps):
            self.store.compact_step()

    @rule(data=st.data())
    def read(self, data: st.DataObject) -> None:
        req = data.draw(ranges(self.model.cur + 1))
        try:
            want: object = self.model.range(req)
        except MVCCRequestError as exc:
            want = exc
        try:
            got: object = self.store.range(req)
        except MVCCRequestError as exc:
            got = exc
        if isinstance(want, Exception):
            assert type(got) is type(want)
        else:
            assert got == want, (req, got, want)

    @rule()
    def sync(self) -> None:
        self._drain()
        self.watch.sync_watchers()
        self._drain()

    @precondition(lambda self: True)
    @rule()
    def reopen(self) -> None:
        self._drain()
        h = self.store.hash_kv()
        self.store.backend.close()
        self._open()
        assert self.store.hash_kv() == h
        assert self.store.consistent_index == self.raft_index

    @invariant()
    def revisions_agree(self) -> None:
        assert self.store.current_revision == self.model.cur
        assert self.store.compact_revision == self.model.compact

    def teardown(self) -> None:
        for _ in range(200):
            self._drain()
            if self.watch.sync_watchers() == 0 and not self.sink.pending:
                break
        self._drain()
        if not self.canceled:
            assert self.received == self.model.events
        self.store.run_compaction()
        h = self.store.hash_kv()
        self.store.backend.close()
        s = open_store(self.dir)
        assert s.hash_kv() == h
        s.backend.close()
        shutil.rmtree(self.dir, ignore_errors=True)


MVCCMachine.TestCase.settings = settings(
    max_examples=60,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
TestMVCCModel = MVCCMachine.TestCase
