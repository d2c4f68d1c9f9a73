"""WatchableStore: synced/unsynced delivery, filters, prev_kv, progress, compaction cancel."""

from __future__ import annotations

from raftkv.mvcc import (
    CompactionRequest,
    DeleteRangeRequest,
    EventType,
    KVStore,
    PutRequest,
    QueueSink,
    TxnRequest,
    WatchableStore,
    WatchFilter,
)
from raftkv.mvcc.types import WriteRequest


def _apply(s: KVStore, *reqs: WriteRequest) -> None:
    start = s.consistent_index + 1
    s.apply_batch([(start + i, 1, r) for i, r in enumerate(reqs)])


def _events(sink: QueueSink) -> list[tuple[EventType, bytes, int]]:
    return [(e.type, e.kv.key, e.kv.mod_revision) for r in sink.drain() for e in r.events]


def test_synced_watch_key_prefix_and_range(store: KVStore) -> None:
    ws = WatchableStore(store)
    one, pre, rng = QueueSink(), QueueSink(), QueueSink()
    ws.watch(b"a", sink=one)
    ws.watch(b"a", b"b", sink=pre)
    ws.watch(b"b", b"\x00", sink=rng)
    _apply(store, PutRequest(b"a", b"1"), PutRequest(b"ab", b"2"), PutRequest(b"c", b"3"))
    _apply(store, TxnRequest(success=(DeleteRangeRequest(b"a", b"\x00"),)))
    assert _events(one) == [(EventType.PUT, b"a", 2), (EventType.DELETE, b"a", 5)]
    assert _events(pre) == [
        (EventType.PUT, b"a", 2),
        (EventType.PUT, b"ab", 3),
        (EventType.DELETE, b"a", 5),
        (EventType.DELETE, b"ab", 5),
    ]
    assert _events(rng) == [(EventType.PUT, b"c", 4), (EventType.DELETE, b"c", 5)]


def test_unsynced_catch_up_from_history(store: KVStore) -> None:
    for i in range(10):
        _apply(store, PutRequest(b"k", b"%d" % i))
    ws = WatchableStore(store, batch_max_revs=3)
    sink = QueueSink()
    wid = ws.watch(b"k", start_revision=4, sink=sink)
    assert not ws.is_synced(wid)
    assert ws.sync_watchers() == 1  # more revisions than one response may hold
    first = sink.drain()
    assert [e.kv.mod_revision for r in first for e in r.events] == [4, 5, 6]
    while ws.sync_watchers():
        pass
    assert ws.is_synced(wid)
    _apply(store, PutRequest(b"k", b"new"))
    revs = [e.kv.mod_revision for r in sink.drain() for e in r.events]
    assert revs == [7, 8, 9, 10, 11, 12]


def test_filters_and_prev_kv(store: KVStore) -> None:
    ws = WatchableStore(store)
    noput, nodel = QueueSink(), QueueSink()
    ws.watch(b"k", sink=noput, filters=[WatchFilter.NOPUT], prev_kv=True)
    ws.watch(b"k", sink=nodel, filters=[WatchFilter.NODELETE], prev_kv=True)
    _apply(store, PutRequest(b"k", b"1"), PutRequest(b"k", b"2"), DeleteRangeRequest(b"k"))
    dels = [e for r in noput.drain() for e in r.events]
    assert [e.type for e in dels] == [EventType.DELETE]
    assert dels[0].prev_kv is not None and dels[0].prev_kv.value == b"2"
    puts = [e for r in nodel.drain() for e in r.events]
    assert [e.kv.value for e in puts] == [b"1", b"2"]
    assert puts[0].prev_kv is None and puts[1].prev_kv is not None
    assert puts[1].prev_kv.value == b"1"


def test_compacted_start_revision_cancels(store: KVStore) -> None:
    for i in range(6):
        _apply(store, PutRequest(b"k", b"%d" % i))
    _apply(store, CompactionRequest(5))
    store.run_compaction()
    ws = WatchableStore(store)
    sink = QueueSink()
    wid = ws.watch(b"k", start_revision=3, sink=sink)
    ws.sync_watchers()
    [resp] = sink.drain()
    assert resp.canceled and resp.compact_revision == 5 and resp.watch_id == wid
    assert not ws.cancel(wid)
    ok = QueueSink()
    ws.watch(b"k", start_revision=5, sink=ok)  # at the compacted revision is fine
    ws.sync_watchers()
    assert [e.kv.mod_revision for r in ok.drain() for e in r.events] == [5, 6, 7]


def test_slow_sink_becomes_victim_and_loses_nothing(store: KVStore) -> None:
    ws = WatchableStore(store)
    sink = QueueSink(capacity=1)
    ws.watch(b"k", sink=sink)
    got: list[int] = []
    for i in range(8):
        _apply(store, PutRequest(b"k", b"%d" % i))
        if i % 3 == 0:
            got += [e.kv.mod_revision for r in sink.drain() for e in r.events]
            ws.sync_watchers()
    for _ in range(20):
        got += [e.kv.mod_revision for r in sink.drain() for e in r.events]
        if ws.sync_watchers() == 0 and not sink.pending:
            break
    assert got == list(range(2, 10))


def test_progress_and_cancel(store: KVStore) -> None:
    _apply(store, PutRequest(b"a"))
    ws = WatchableStore(store)
    sink = QueueSink()
    wid = ws.watch(b"a", sink=sink)
    lag = ws.watch(b"a", start_revision=1, sink=QueueSink())
    assert ws.request_progress(wid)
    [p] = sink.drain()
    assert p.events == () and p.revision == 2
    assert not ws.request_progress(lag)  # unsynced watchers get no progress
    assert not ws.progress_if_synced([wid, lag], -1)
    assert ws.cancel(wid) and not ws.cancel(wid)
    _apply(store, PutRequest(b"a"))
    assert sink.drain() == []
    assert len(ws) == 1
