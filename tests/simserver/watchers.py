"""Simulated watch clients and the watch guarantees every run checks.

Owns: ``SimWatcher`` (one client process keeping a watch open on the clients' keys through the
member's own Watch service, resuming after every broken stream, asking for progress now and
then), ``reference_events`` (the events the store's history implies, rebuilt from ranges at
every revision, independently of the watch code) and ``check_watches``.

Contracts, as etcd's robustness tests state them, checked per stream against the reference:
- ordered, unique, reliable: a stream's events are exactly the reference's events from its
  start revision on, a prefix of them, in order, none missing or repeated;
- atomic: a revision's events arrive together (never split across responses);
- resumable: a watcher's next stream starts after the last event or progress revision it
  saw, and is checked from there like any other;
- bookmarkable: a progress response at revision R comes after every event at or below R;
- prev_kv and is_create are right (equal to the reference's, which has them from the
  ranges at the previous revision);
- filters are honoured: every other watcher asks for ``NODELETE`` (``filters_of``), and its
  streams are checked against the reference without deletions.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Callable, Collection, Iterable
from dataclasses import dataclass, field
from typing import Any

from raftkv.api.gateway import GatewayContext
from raftkv.app.services import build_services
from raftkv.mvcc.types import RangeRequest
from raftkv.proto import kv_pb2
from raftkv.proto import rpc_pb2 as pb
from tests.simserver.clients import consume_outcome
from tests.simserver.loop import Process, VirtualLoop
from tests.simserver.members import SimMember

PREFIX = b"k"
PREFIX_END = b"l"

EventKey = tuple[int, int, bytes, bytes, int, int, int, bytes | None]
"""(type, mod revision, key, value, create revision, version, lease, prev value or None)."""


def event_key(ev: kv_pb2.Event) -> EventKey:
    prev = ev.prev_kv.value if ev.HasField("prev_kv") else None
    kv = ev.kv
    return (
        ev.type,
        kv.mod_revision,
        kv.key,
        kv.value,
        kv.create_revision,
        kv.version,
        kv.lease,
        prev,
    )


@dataclass
class StreamRecord:
    """What one watch stream delivered."""

    watcher: int
    member: str
    start_revision: int
    filters: tuple[int, ...] = ()  # WatchCreateRequest.FilterType values the stream asked for
    events: list[EventKey] = field(default_factory=list)
    # (revision of a progress response, events delivered before it)
    progress: list[tuple[int, int]] = field(default_factory=list)
    split_revisions: list[int] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


class SimWatcher:
    def __init__(
        self,
        *,
        index: int,
        loop: VirtualLoop,
        members: list[SimMember],
        rng: random.Random,
    ) -> None:
        self.index = index
        self.loop = loop
        self.members = members
        self.rng = rng
        self.process = Process(f"watcher-{index}")
        self.streams: list[StreamRecord] = []
        self.next_revision = 1
        self.stopping = False
        self.filters = filters_of(index)

    def start(self) -> asyncio.Task[None]:
        return self.process.spawn(self.loop, self._run())

    async def _run(self) -> None:
        while not self.stopping:
            up = [m for m in self.members if m.up]
            if not up:
                await asyncio.sleep(0.2)
                continue
            await self._stream(self.rng.choice(up), self.rng.uniform(0.5, 6.0))
            # A client does not retry in a tight loop (a learner refuses every watch at once).
            await asyncio.sleep(self.rng.uniform(0.05, 0.3))

    async def _stream(self, target: SimMember, lifetime: float) -> None:
        """One Watch stream on ``target`` for at most ``lifetime`` seconds (or until the
        member goes down or the stream ends)."""
        member, proc = target.member, target.process
        if member is None or proc is None:
            return
        services = build_services(member)
        record = StreamRecord(self.index, target.name, self.next_revision, self.filters)
        self.streams.append(record)
        requests: asyncio.Queue[pb.WatchRequest | None] = asyncio.Queue()
        requests.put_nowait(watch_request(self.next_revision, self.filters))
        responses: asyncio.Queue[pb.WatchResponse | BaseException | None] = asyncio.Queue()

        async def request_iterator() -> AsyncIterator[pb.WatchRequest]:
            while True:
                req = await requests.get()
                if req is None:
                    return
                yield req

        async def serve() -> None:  # the member's side of the stream, in its process
            ctx = GatewayContext((), {}, f"watcher-{self.index}")
            try:
                async for resp in services.watch.Watch(request_iterator(), ctx):  # type: ignore[arg-type]
                    responses.put_nowait(resp)
            except BaseException as exc:
                responses.put_nowait(exc)
                if isinstance(exc, asyncio.CancelledError):
                    raise
            else:
                responses.put_nowait(None)

        server = proc.spawn(self.loop, serve())
        end = self.loop.time() + lifetime
        next_progress = self.loop.time() + self.rng.uniform(0.2, 2.0)
        try:
            while self.loop.time() < end and not self.stopping:
                if not target.up or target.process is not proc:
                    return  # the member crashed: this stream is gone
                try:
                    item = await asyncio.wait_for(responses.get(), 0.2)
                except TimeoutError:
                    if self.loop.time() >= next_progress:
                        requests.put_nowait(
                            pb.WatchRequest(progress_request=pb.WatchProgressRequest())
                        )
                        next_progress = self.loop.time() + self.rng.uniform(0.2, 2.0)
                    continue
                if item is None or isinstance(item, BaseException):
                    return  # the stream ended (an error, a fence): resume elsewhere
                self._take(record, item)
                if record.problems:
                    return
        finally:
            requests.put_nowait(None)
            if not server.done():
                server.cancel()
            server.add_done_callback(consume_outcome)

    def _take(self, record: StreamRecord, resp: pb.WatchResponse) -> None:
        after = record_response(record, resp)
        if after is not None:
            self.next_revision = max(self.next_revision, after + 1)


def filters_of(index: int) -> tuple[int, ...]:
    """The filters watcher ``index`` asks for: ``NODELETE`` for every other one."""
    return (pb.WatchCreateRequest.NODELETE,) if index % 2 else ()


# The event type each filter leaves out (etcd's FilterType: NOPUT drops puts, NODELETE deletes).
_FILTERED_TYPE: dict[int, int] = {
    pb.WatchCreateRequest.NOPUT: kv_pb2.Event.PUT,
    pb.WatchCreateRequest.NODELETE: kv_pb2.Event.DELETE,
}


def watch_request(start_revision: int, filters: tuple[int, ...] = ()) -> pb.WatchRequest:
    """The watch every watcher opens: the watched keys from ``start_revision``, with prev_kv
    and ``filters``."""
    return pb.WatchRequest(
        create_request=pb.WatchCreateRequest(
            key=PREFIX,
            range_end=PREFIX_END,
            start_revision=start_revision,
            prev_kv=True,
            filters=filters,  # type: ignore[arg-type]
        )
    )


def record_response(record: StreamRecord, resp: pb.WatchResponse) -> int | None:
    """Add one response of a stream to its record; the revision it shows was delivered up to
    (its last event's, or a progress response's), else None."""
    if resp.watch_id == -1:  # a progress response: everything up to its revision came
        record.progress.append((resp.header.revision, len(record.events)))
        return int(resp.header.revision)
    if resp.canceled:
        record.problems.append(f"canceled: {resp.cancel_reason!r}")
        return None
    if not resp.events:
        return None
    revs = [ev.kv.mod_revision for ev in resp.events]
    if record.events and record.events[-1][1] == revs[0]:
        record.split_revisions.append(revs[0])
    record.events.extend(event_key(ev) for ev in resp.events)
    return int(revs[-1])


def store_reference(member: SimMember) -> list[EventKey]:
    """``reference_events`` from a simulated member's store."""
    assert member.member is not None
    store = member.member.applier.store
    return reference_events(
        lambda rev: store.range(RangeRequest(PREFIX, PREFIX_END, revision=rev)).kvs,
        store.current_revision,
    )


def reference_events(range_at: Callable[[int], Iterable[Any]], current: int) -> list[EventKey]:
    """Every event on the watched keys up to revision ``current``, from ranges over them at
    each revision (``range_at(rev)``: the key-values there, as mvcc's or etcd's protobuf
    ``KeyValue``; the watch code plays no part): revision r's events are the keys whose
    ``mod_revision`` is r, with the value at r - 1 as prev_kv; a key present at r - 1 and gone
    at r was deleted at r."""
    events: list[EventKey] = []
    before: dict[bytes, Any] = {}
    for rev in range(1, current + 1):
        now = {kv.key: kv for kv in range_at(rev)}
        for key, kv in sorted(now.items()):
            if kv.mod_revision == rev:
                prev = before.get(key)
                events.append(
                    (
                        kv_pb2.Event.PUT,
                        rev,
                        key,
                        kv.value,
                        kv.create_revision,
                        kv.version,
                        kv.lease,
                        prev.value if prev is not None else None,
                    )
                )
        for key, kv in sorted(before.items()):
            if key not in now:
                events.append((kv_pb2.Event.DELETE, rev, key, b"", 0, 0, 0, kv.value))
        before = now
    return events


def _rev_key(e: EventKey) -> tuple[int, bytes]:
    return e[1], e[2]


def check_watches(
    streams: list[StreamRecord], reference: list[EventKey], distrust: Collection[str] = ()
) -> list[str]:
    """Every violated guarantee, one line each (empty when all hold).  Streams served by the
    members ``distrust`` (made to diverge) are not checked."""
    problems: list[str] = []
    for n, s in enumerate(streams):
        if s.member in distrust:
            continue
        where = f"watcher {s.watcher} stream {n} on {s.member} from revision {s.start_revision}"
        problems += [f"{where}: {p}" for p in s.problems]
        # Within a revision the order of its events is not part of the guarantee.
        dropped = {_FILTERED_TYPE[f] for f in s.filters}
        want = sorted(
            (e for e in reference if e[1] >= s.start_revision and e[0] not in dropped),
            key=_rev_key,
        )
        got = sorted(s.events, key=_rev_key)
        if got != want[: len(got)]:
            first = next(i for i, e in enumerate(got) if i >= len(want) or e != want[i])
            problems.append(
                f"{where}: event {first} is {got[first]}, the store's history has "
                f"{want[first] if first < len(want) else 'nothing more'}"
            )
            continue
        if got and len(got) < len(want) and want[len(got)][1] == got[-1][1]:
            problems.append(f"{where}: revision {got[-1][1]} delivered in part")
        for rev in s.split_revisions:
            problems.append(f"{where}: revision {rev} split across responses")
        for rev, delivered in s.progress:
            owed = sum(1 for e in want if e[1] <= rev)
            if delivered < owed:
                problems.append(
                    f"{where}: progress at revision {rev} after {delivered} of the "
                    f"{owed} events at or below it"
                )
    return problems
