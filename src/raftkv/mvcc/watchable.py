"""The watchable store: watchers over key ranges, fed from commits and from history.

Owns: watcher registration and cancellation, the synced group (caught up,
fed directly by each committed batch), the unsynced group (catching up from
the key bucket, ``sync_watchers``), victims (watchers whose sink refused a
response; retried by ``sync_watchers``), filters, prev_kv, progress
notifications and cancellation of watchers whose start revision was compacted.

Contracts (as etcd's watchableStore):
- each watcher sees every event with mod_revision >= its start revision, in
  revision order, each once; a response holds events of at most
  ``batch_max_revs`` revisions;
- a watcher whose next revision is below the compacted revision gets one
  response with ``compact_revision`` set and ``canceled`` True and is removed;
- a sink is called with the store lock held: it must not block and must not
  call back into the store; it returns False to refuse (the watcher becomes a
  victim and the same response is offered again later);
- no threads or timers here: the server calls ``sync_watchers()`` after each
  apply batch and on a timer (etcd: every 100 ms).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import IntEnum

from raftkv.mvcc.backend import BUCKET_KEY, Backend
from raftkv.mvcc.errors import MVCCRequestError
from raftkv.mvcc.kvstore import KVStore
from raftkv.mvcc.revision import SUB_BITS, bytes_to_rev, decode_kv, is_tombstone, main_to_bytes
from raftkv.mvcc.types import Event, EventType, KeyValue

MAX_WATCHERS_PER_SYNC = 512
WATCH_BATCH_MAX_REVS = 1000


class WatchFilter(IntEnum):
    NOPUT = 0
    NODELETE = 1


@dataclass(frozen=True, slots=True)
class WatchResponse:
    watch_id: int
    events: tuple[Event, ...] = ()
    revision: int = 0
    compact_revision: int = 0
    canceled: bool = False


Sink = Callable[[WatchResponse], bool]


class QueueSink:
    """A bounded in-memory sink: accepts responses until ``capacity`` are pending."""

    def __init__(self, capacity: int = 1024) -> None:
        self.capacity = capacity
        self.pending: deque[WatchResponse] = deque()

    def __call__(self, resp: WatchResponse) -> bool:
        if len(self.pending) >= self.capacity:
            return False
        self.pending.append(resp)
        return True

    def drain(self) -> list[WatchResponse]:
        out = list(self.pending)
        self.pending.clear()
        return out


class Watcher:
    __slots__ = ("end", "filters", "id", "key", "min_rev", "prev_kv", "sink", "start_rev")

    def __init__(
        self,
        wid: int,
        key: bytes,
        end: bytes | None,
        start_rev: int,
        sink: Sink,
        filters: frozenset[WatchFilter],
        prev_kv: bool,
    ) -> None:
        self.id = wid
        self.key = key
        self.end = end  # None: the single key; b"": every key >= key; else [key, end)
        self.start_rev = start_rev
        self.min_rev = start_rev  # next revision this watcher has not seen yet
        self.sink = sink
        self.filters = filters
        self.prev_kv = prev_kv

    def matches(self, key: bytes) -> bool:
        if self.end is None:
            return key == self.key
        return key >= self.key and (not self.end or key < self.end)


class WatcherGroup:
    """Watchers indexed by single key, plus range watchers (scanned)."""

    def __init__(self) -> None:
        self.watchers: dict[int, Watcher] = {}
        self._by_key: dict[bytes, dict[int, Watcher]] = {}
        self._ranges: dict[int, Watcher] = {}

    def __len__(self) -> int:
        return len(self.watchers)

    def __contains__(self, wid: int) -> bool:
        return wid in self.watchers

    def add(self, w: Watcher) -> None:
        self.watchers[w.id] = w
        if w.end is None:
            self._by_key.setdefault(w.key, {})[w.id] = w
        else:
            self._ranges[w.id] = w

    def delete(self, w: Watcher) -> bool:
        if self.watchers.pop(w.id, None) is None:
            return False
        if w.end is None:
            ws = self._by_key[w.key]
            del ws[w.id]
            if not ws:
                del self._by_key[w.key]
        else:
            del self._ranges[w.id]
        return True

    def for_key(self, key: bytes) -> list[Watcher]:
        """Watchers interested in ``key``, in watcher-id order (deterministic delivery)."""
        keyed = self._by_key.get(key)
        out = list(keyed.values()) if keyed else []
        if self._ranges:
            out.extend(w for w in self._ranges.values() if w.matches(key))
        if len(out) > 1:
            out.sort(key=lambda w: w.id)
        return out

    def contains_key(self, key: bytes) -> bool:
        return key in self._by_key or any(w.matches(key) for w in self._ranges.values())


class _EventBatch:
    __slots__ = ("evs", "more_rev", "revs")

    def __init__(self) -> None:
        self.evs: list[Event] = []
        self.revs = 0
        self.more_rev = 0

    def add(self, ev: Event, max_revs: int) -> None:
        if self.revs > max_revs:
            return
        if not self.evs:
            self.revs = 1
            self.evs.append(ev)
            return
        if ev.kv.mod_revision > self.evs[-1].kv.mod_revision:
            self.revs += 1
            if self.revs > max_revs:
                self.more_rev = ev.kv.mod_revision
                return
        self.evs.append(ev)


class WatchableStore:
    def __init__(
        self,
        store: KVStore,
        *,
        max_watchers_per_sync: int = MAX_WATCHERS_PER_SYNC,
        batch_max_revs: int = WATCH_BATCH_MAX_REVS,
    ) -> None:
        self.store = store
        self.max_watchers_per_sync = max_watchers_per_sync
        self.batch_max_revs = batch_max_revs
        self.synced = WatcherGroup()
        self.unsynced = WatcherGroup()
        self._victims: list[tuple[Watcher, _EventBatch]] = []
        self._all: dict[int, Watcher] = {}
        self._next_id = 0
        store.add_commit_listener(self._notify, self._has_synced)

    # -- registration -------------------------------------------------------

    def watch(
        self,
        key: bytes,
        range_end: bytes = b"",
        start_revision: int = 0,
        *,
        sink: Sink,
        filters: Iterable[WatchFilter] = (),
        prev_kv: bool = False,
        watch_id: int | None = None,
    ) -> int:
        """Register a watcher; returns its id. ``range_end`` as in a RangeRequest."""
        end = None if not range_end else (b"" if range_end == b"\x00" else range_end)
        with self.store.lock:
            if watch_id is None:
                while self._next_id in self._all:
                    self._next_id += 1
                watch_id = self._next_id
                self._next_id += 1
            elif watch_id in self._all:
                raise ValueError(f"watch id {watch_id} already in use")
            w = Watcher(watch_id, key, end, start_revision, sink, frozenset(filters), prev_kv)
            cur = self.store.current_revision
            if start_revision == 0 or start_revision > cur:
                w.min_rev = max(cur + 1, start_revision)
                self.synced.add(w)
            else:
                self.unsynced.add(w)
            self._all[watch_id] = w
        return watch_id

    def restore(self, backend: Backend) -> None:
        """Switch the store to ``backend`` (a snapshot install) keeping every watcher.

        Synced watchers have seen everything up to the old current revision; they become
        unsynced from the revision after it and catch up from the new history (or are
        canceled with its compact revision) on the next ``sync_watchers``.
        """
        with self.store.lock:
            seen = self.store.current_revision
            self.store.replace_backend(backend)
            for w in list(self.synced.watchers.values()):
                self.synced.delete(w)
                w.min_rev = max(w.min_rev, seen + 1)
                self.unsynced.add(w)

    def cancel(self, watch_id: int) -> bool:
        with self.store.lock:
            w = self._all.pop(watch_id, None)
            if w is None:
                return False
            self.synced.delete(w)
            self.unsynced.delete(w)
            self._victims = [(v, eb) for v, eb in self._victims if v.id != watch_id]
            return True

    def is_synced(self, watch_id: int) -> bool:
        return watch_id in self.synced

    def __len__(self) -> int:
        return len(self._all)

    # -- progress -------------------------------------------------------------

    def request_progress(self, watch_id: int) -> bool:
        """Send an empty response at the current revision if the watcher is synced."""
        return self.progress_if_synced([watch_id], watch_id)

    def progress_if_synced(self, watch_ids: Iterable[int], response_watch_id: int) -> bool:
        """If every listed watcher is synced, send one progress response; else False."""
        with self.store.lock:
            ws = [self._all.get(i) for i in watch_ids]
            if not ws or any(w is None or w.id not in self.synced for w in ws):
                return False
            first = ws[0]
            assert first is not None
            first.sink(WatchResponse(response_watch_id, (), self.store.current_revision))
            return True

    # -- delivery -------------------------------------------------------------

    def _with_prev(self, evs: list[Event]) -> list[Event]:
        out: list[Event] = []
        for ev in evs:
            prev: KeyValue | None = None
            if ev.kv.mod_revision > 1:
                try:
                    with self.store.read() as view:
                        kvs, _c, _r = view.range_keys(
                            ev.kv.key, None, ev.kv.mod_revision - 1, 0, False
                        )
                    prev = kvs[0] if kvs else None
                except MVCCRequestError:
                    prev = None
            out.append(Event(ev.type, ev.kv, prev))
        return out

    def _send(self, w: Watcher, evs: list[Event], rev: int) -> bool:
        if w.filters:
            evs = [
                ev
                for ev in evs
                if not (
                    (ev.type == EventType.PUT and WatchFilter.NOPUT in w.filters)
                    or (ev.type == EventType.DELETE and WatchFilter.NODELETE in w.filters)
                )
            ]
            if not evs:
                return True  # everything filtered out: nothing to send
        if w.prev_kv:
            evs = self._with_prev(evs)
        return w.sink(WatchResponse(w.id, tuple(evs), rev))

    def _batch(self, group: WatcherGroup, evs: list[Event]) -> dict[int, _EventBatch]:
        out: dict[int, _EventBatch] = {}
        for ev in evs:
            for w in group.for_key(ev.kv.key):
                if ev.kv.mod_revision >= w.min_rev:
                    eb = out.get(w.id)
                    if eb is None:
                        eb = out[w.id] = _EventBatch()
                    eb.add(ev, self.batch_max_revs)
        return out

    def _has_synced(self) -> bool:
        """Whether a commit's events can reach anyone: only synced watchers hear them."""
        return bool(self.synced)

    def _notify(self, batches: list[tuple[int, list[Event]]]) -> None:
        """Commit listener: push each committed revision's events to synced watchers."""
        with self.store.lock:
            for rev, evs in batches:
                for wid, eb in sorted(self._batch(self.synced, evs).items()):
                    w = self.synced.watchers[wid]
                    if not self._send(w, eb.evs, rev):
                        w.min_rev = rev + 1
                        self.synced.delete(w)
                        self._victims.append((w, eb))

    def _move_victims(self) -> None:
        victims, self._victims = self._victims, []
        cur = self.store.current_revision
        for w, eb in victims:
            if not self._send(w, eb.evs, w.min_rev - 1):
                self._victims.append((w, eb))
                continue
            if eb.more_rev:
                w.min_rev = eb.more_rev
            if w.min_rev <= cur:
                self.unsynced.add(w)
            else:
                self.synced.add(w)

    def sync_watchers(self) -> int:
        """Retry victims, then catch up unsynced watchers; returns how many lag still."""
        with self.store.lock:
            self._move_victims()
            if not self.unsynced:
                return len(self._victims)
            store = self.store
            cur, compact = store.current_revision, store.compact_revision
            chosen: list[Watcher] = []
            for w in sorted(self.unsynced.watchers.values(), key=lambda x: x.id):
                if len(chosen) >= self.max_watchers_per_sync:
                    break
                if w.min_rev < compact:
                    self.unsynced.delete(w)
                    del self._all[w.id]
                    w.sink(WatchResponse(w.id, (), 0, compact, True))
                    continue
                chosen.append(w)
            if chosen:
                self._catch_up(chosen, cur)
            return len(self.unsynced) + len(self._victims)

    def _catch_up(self, chosen: list[Watcher], cur: int) -> None:
        group = WatcherGroup()
        for w in chosen:
            group.add(w)
        min_rev = min(w.min_rev for w in chosen)
        evs: list[Event] = []
        with self.store.backend.read_latest() as tx:
            for raw, payload in tx.iterate(
                BUCKET_KEY, main_to_bytes(min_rev), main_to_bytes(cur + 1)
            ):
                kv = decode_kv(payload)
                if not group.contains_key(kv.key):
                    continue
                if is_tombstone(raw):
                    main = bytes_to_rev(raw) >> SUB_BITS
                    evs.append(Event(EventType.DELETE, KeyValue(kv.key, mod_revision=main)))
                else:
                    evs.append(Event(EventType.PUT, kv))
        batches = self._batch(group, evs)
        for w in chosen:
            # Never back: a watcher may wait for a revision beyond ``cur`` (a watch from a
            # future revision, or one that saw more before its store went back to an older
            # backend received with a snapshot).
            w.min_rev = max(w.min_rev, cur + 1)
            eb = batches.get(w.id)
            if eb is None:
                self.unsynced.delete(w)
                self.synced.add(w)
                continue
            if eb.more_rev:
                w.min_rev = eb.more_rev
            self.unsynced.delete(w)
            if not self._send(w, eb.evs, cur):
                self._victims.append((w, eb))
            elif eb.more_rev:
                self.unsynced.add(w)
            else:
                self.synced.add(w)
