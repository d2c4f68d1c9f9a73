"""The Watch service: one bidirectional stream carries many watchers.

Contracts (as etcd's watch server):
- watch IDs are per stream; a create answers ``created=true`` with the watch ID before any
  event of that watcher, a cancel answers ``canceled=true``; a watcher whose start revision is
  below the compacted revision is canceled with ``compact_revision`` set (one that starts at
  exactly the compacted revision is served from it, as etcd serves it);
- events of one watcher arrive in revision order, none missed or duplicated (the store's
  watcher groups guarantee it; a full stream buffer makes the watcher a victim that is retried,
  never drops events);
- with ``fragment=true`` a response larger than the member's max request size is split into
  several responses, all but the last marked ``fragment=true``;
- a member fenced by a CORRUPT alarm refuses new streams and ends open ones with etcd's
  ``etcdserver: corrupt cluster`` (DATA_LOSS), as it refuses every other read;
- a progress request is answered, once every watcher of the stream is synced, with an empty
  response carrying the current revision and watch ID -1;
- while auth is enabled, a watcher is created only if the stream's caller may read its range
  (else ``created`` and ``canceled`` with etcd's ``etcdserver: permission denied``), and an
  open watcher whose permission is revoked is canceled with that reason before it delivers
  any event applied after the revocation.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

from raftkv import errors
from raftkv.api.common import Context, caller
from raftkv.api.ports import AuthPort, WatchPort, Who
from raftkv.auth.tokens import AuthInfo
from raftkv.mvcc.watchable import WatchFilter, WatchResponse
from raftkv.proto import kv_pb2
from raftkv.proto import rpc_pb2 as pb
from raftkv.proto import rpc_pb2_grpc as pb_grpc
from raftkv.server import convert


def compacted_start(start_revision: int, compact_revision: int) -> bool:
    """Whether a watch from ``start_revision`` is canceled as compacted: etcd's ``startRev <
    compactRev``.  0 means "from the next revision"; a watch starting exactly at the compacted
    revision is served, from what the compaction kept at that revision (as etcd serves it)."""
    return 0 < start_revision < compact_revision


STREAM_BUFFER = 1024
PROGRESS_INTERVAL = 600.0  # etcd's default progress-notify interval (10 minutes)
_FILTERS = {
    pb.WatchCreateRequest.NOPUT: WatchFilter.NOPUT,
    pb.WatchCreateRequest.NODELETE: WatchFilter.NODELETE,
}


@dataclass
class _StreamWatcher:
    stream_id: int
    store_id: int
    fragment: bool
    progress_notify: bool
    key: bytes = b""
    range_end: bytes = b""
    auth_revision: int = 0  # the auth revision its permission was last checked at


_FENCED = pb.WatchResponse()  # marker: the member was fenced; the stream ends with DataLoss


class _Stream:
    def __init__(self, member: WatchPort, auth: AuthPort, who: Who) -> None:
        self.member = member
        self.auth = auth
        self.who = who
        self.out: asyncio.Queue[pb.WatchResponse | None] = asyncio.Queue()
        self.watchers: dict[int, _StreamWatcher] = {}
        self.by_store_id: dict[int, _StreamWatcher] = {}
        self.next_id = 0
        self.pending_progress = False

    @property
    def watchable(self):  # type: ignore[no-untyped-def]
        return self.member.watchable

    def sink(self, resp: WatchResponse) -> bool:
        if self.out.qsize() >= STREAM_BUFFER:
            return False
        w = self.by_store_id.get(resp.watch_id)
        if w is None:
            return True
        if self.auth.enabled and w.auth_revision != self.auth.revision() and not self._allowed(w):
            # Forgotten now (nothing more reaches the client); removed from the store once
            # the store's delivery loop that called this sink has finished.
            self._forget(w)
            self.out.put_nowait(self._denied(w.stream_id, errors.ERR_PERMISSION_DENIED()))
            asyncio.get_running_loop().call_soon(self.watchable.cancel, w.store_id)
            return True
        self._emit(w, resp)
        return True

    def _allowed(self, w: _StreamWatcher) -> bool:
        """Whether the caller may still read ``w``'s range, at the current auth revision (the
        token's own revision is older after any auth change; the user is what counts)."""
        revision = self.auth.revision()
        who = AuthInfo(self.who.username, revision) if self.who is not None else None
        try:
            self.auth.check_read(who, w.key, w.range_end)
        except errors.EtcdError:
            return False
        w.auth_revision = revision
        return True

    def _denied(self, stream_id: int, exc: errors.EtcdError) -> pb.WatchResponse:
        return pb.WatchResponse(
            header=self.member.header(),
            watch_id=stream_id,
            created=True,
            canceled=True,
            cancel_reason=exc.message,
        )

    def _emit(self, w: _StreamWatcher, resp: WatchResponse) -> None:
        header = self.member.header(resp.revision or None)
        if resp.canceled:
            self.out.put_nowait(
                pb.WatchResponse(
                    header=header,
                    watch_id=w.stream_id,
                    canceled=True,
                    compact_revision=resp.compact_revision,
                    cancel_reason="mvcc: required revision has been compacted"
                    if resp.compact_revision
                    else "",
                )
            )
            self._forget(w)
            return
        events = [convert.event_to_pb(ev) for ev in resp.events]
        limit = self.member.max_request_bytes
        if not w.fragment or sum(ev.ByteSize() for ev in events) <= limit:
            self.out.put_nowait(
                pb.WatchResponse(header=header, watch_id=w.stream_id, events=events)
            )
            return
        chunk: list[kv_pb2.Event] = []
        size = 0
        for ev in events:
            if chunk and size + ev.ByteSize() > limit:
                self.out.put_nowait(
                    pb.WatchResponse(
                        header=header, watch_id=w.stream_id, events=chunk, fragment=True
                    )
                )
                chunk, size = [], 0
            chunk.append(ev)
            size += ev.ByteSize()
        self.out.put_nowait(pb.WatchResponse(header=header, watch_id=w.stream_id, events=chunk))

    def _forget(self, w: _StreamWatcher) -> None:
        self.watchers.pop(w.stream_id, None)
        self.by_store_id.pop(w.store_id, None)

    def create(self, req: pb.WatchCreateRequest) -> None:
        stream_id = req.watch_id
        if stream_id == 0 or stream_id in self.watchers:
            if req.watch_id and stream_id in self.watchers:
                # etcd: a duplicate explicit ID is refused with created+canceled.
                self.out.put_nowait(
                    pb.WatchResponse(
                        header=self.member.header(),
                        watch_id=stream_id,
                        created=True,
                        canceled=True,
                        cancel_reason="mvcc: watcher ID is already in use",
                    )
                )
                return
            while self.next_id in self.watchers:
                self.next_id += 1
            stream_id = self.next_id
            self.next_id += 1
        if self.auth.enabled:
            try:
                self.auth.check_read(self.who, req.key, req.range_end)
            except errors.EtcdError as exc:
                self.out.put_nowait(self._denied(stream_id, exc))
                return
        compacted = self.member.compact_revision
        self.out.put_nowait(
            pb.WatchResponse(header=self.member.header(), watch_id=stream_id, created=True)
        )
        if compacted_start(req.start_revision, compacted):
            self.out.put_nowait(
                pb.WatchResponse(
                    header=self.member.header(),
                    watch_id=stream_id,
                    canceled=True,
                    compact_revision=compacted,
                    cancel_reason="mvcc: required revision has been compacted",
                )
            )
            return
        w = _StreamWatcher(
            stream_id,
            -1,
            req.fragment,
            req.progress_notify,
            req.key,
            req.range_end,
            self.auth.revision(),
        )
        self.watchers[stream_id] = w
        store_id = self.watchable.watch(
            req.key,
            req.range_end,
            req.start_revision,
            sink=self.sink,
            filters=[_FILTERS[f] for f in req.filters if f in _FILTERS],
            prev_kv=req.prev_kv,
        )
        w.store_id = store_id
        self.by_store_id[store_id] = w

    def cancel(self, stream_id: int) -> None:
        w = self.watchers.get(stream_id)
        if w is None:
            return
        self.watchable.cancel(w.store_id)
        self._forget(w)
        self.out.put_nowait(
            pb.WatchResponse(header=self.member.header(), watch_id=stream_id, canceled=True)
        )

    def progress(self) -> None:
        ids = [w.store_id for w in self.watchers.values()]
        if not ids or all(self.watchable.is_synced(i) for i in ids):
            self.out.put_nowait(pb.WatchResponse(header=self.member.header(), watch_id=-1))
        else:
            self.pending_progress = True

    def close(self) -> None:
        for w in list(self.watchers.values()):
            self.watchable.cancel(w.store_id)
        self.watchers.clear()
        self.by_store_id.clear()


class WatchService(pb_grpc.WatchServicer):
    def __init__(
        self, member: WatchPort, auth: AuthPort, progress_interval: float = PROGRESS_INTERVAL
    ) -> None:
        self.member = member
        self.auth = auth
        self.progress_interval = progress_interval

    async def Watch(
        self, request_iterator: AsyncIterator[pb.WatchRequest], context: Context
    ) -> AsyncIterator[pb.WatchResponse]:
        try:  # a fenced member serves no reads, watches included; nor does a learner
            self.member.check_watch()
            who = await caller(self.auth, context)
        except errors.EtcdError as exc:
            await errors.abort(context, exc)
        stream = _Stream(self.member, self.auth, who)

        async def read_requests() -> None:
            try:
                async for req in request_iterator:
                    which = req.WhichOneof("request_union")
                    if which == "create_request":
                        stream.create(req.create_request)
                    elif which == "cancel_request":
                        stream.cancel(req.cancel_request.watch_id)
                    elif which == "progress_request":
                        stream.progress()
            finally:
                stream.out.put_nowait(None)

        reader = asyncio.create_task(read_requests())
        ticker = asyncio.create_task(self._progress_loop(stream))
        try:
            while True:
                resp = await stream.out.get()
                if resp is None:
                    break
                if resp is _FENCED:
                    await context.abort(errors.ERR_CORRUPT.code, errors.ERR_CORRUPT.message)
                yield resp
        finally:
            reader.cancel()
            ticker.cancel()
            outcome = await asyncio.gather(reader, ticker, return_exceptions=True)
            stream.close()
        for failure in outcome:  # the request stream failed (e.g. a malformed message)
            if isinstance(failure, Exception):
                raise failure

    async def _progress_loop(self, stream: _Stream) -> None:
        loop = asyncio.get_running_loop()
        next_notify = loop.time() + self.progress_interval
        while True:
            await asyncio.sleep(0.1)
            if self.member.is_fenced():
                stream.out.put_nowait(_FENCED)
                return
            if stream.pending_progress:
                stream.pending_progress = False
                stream.progress()
            if loop.time() >= next_notify:
                next_notify = loop.time() + self.progress_interval
                for w in list(stream.watchers.values()):
                    if w.progress_notify and stream.watchable.is_synced(w.store_id):
                        stream.out.put_nowait(
                            pb.WatchResponse(header=self.member.header(), watch_id=w.stream_id)
                        )
