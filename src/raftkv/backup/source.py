"""Where backups come from: choosing a healthy member and reading from it over the v3 API.

Owns: surveying the endpoints (``Maintenance.Status`` of each, the cluster's alarms through
``Maintenance.Alarm GET``) and ordering the members a backup may be taken from
(``candidates``), streaming a snapshot into a zstd-compressed file with the SHA-256 trailer
checked (``fetch_snapshot``), a live member's ``HashKV`` at a revision (``live_hash``), the
lease table (``lease_table``), and the watch stream deltas are cut from (``WatchFeed``).

Members are dialed with the TLS and the user's token of the ``ClientSecurity`` given
(``raftkv.client.conn.dial``); one that cannot be used says why (unreachable, a TLS failure,
authentication refused) in its ``MemberState.error``.

Contracts:

- a member under a CORRUPT alarm, or one that answers ``etcdserver: corrupt cluster``, is
  never read from; followers come before the leader (a backup should not load the leader);
- the compressed file holds exactly the bytes of the stream, trailer included: decompressed,
  it is what ``etcdctl snapshot save`` writes; a stream whose trailer is missing or differs
  raises ``SourceError`` and the caller discards the file;
- ``WatchFeed.cut`` returns every event up to the revision a progress response confirmed, in
  order, each revision's events together; a compacted start revision raises
  ``WatchCompactedError``; a broken stream is reopened on another member from the first
  revision not yet confirmed complete, so a member restarting loses nothing.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

import grpc
import zstandard

from raftkv.backup.delta import DELETE, PUT, RevisionEvents
from raftkv.backup.snapshot_file import SnapshotFileError, StreamCheck
from raftkv.client.conn import CtlError, Stubs, dial, grpc_error_text
from raftkv.client.security import ClientSecurity
from raftkv.proto import rpc_pb2 as pb

CORRUPT_MESSAGE = "etcdserver: corrupt cluster"
COMPACTED_MESSAGE = "etcdserver: mvcc: required revision has been compacted"
FUTURE_MESSAGE = "etcdserver: mvcc: required revision is a future revision"

Log = Callable[[str], None]
DOWN_SECONDS = 5.0


class SourceError(Exception):
    """No healthy member could serve the request; the message lists what each said."""


class WatchCompactedError(SourceError):
    """The watch's start revision was compacted: only a new full backup can continue."""

    def __init__(self, start: int, compact_revision: int) -> None:
        super().__init__(
            f"watch from revision {start}: compacted at {compact_revision}; a new full "
            "backup is needed"
        )
        self.compact_revision = compact_revision


@dataclass(frozen=True)
class MemberState:
    endpoint: str
    member_id: int
    leader: int
    revision: int
    corrupt: bool
    error: str  # why it is not usable ("" when it answered)


@dataclass(frozen=True)
class SnapshotFetch:
    endpoint: str
    raw_size: int  # bytes of the stream (database and trailer)
    compressed_size: int


@dataclass(frozen=True)
class LiveHash:
    endpoint: str
    revision: int
    hash: int
    compact_revision: int


class Source:
    def __init__(
        self,
        endpoints: list[str],
        dial_timeout: float = 2.0,
        command_timeout: float = 10.0,
        security: ClientSecurity | None = None,
    ) -> None:
        if not endpoints:
            raise SourceError("no endpoints")
        self.endpoints = list(endpoints)
        self.dial_timeout = dial_timeout
        self.command_timeout = command_timeout
        self.security = security or ClientSecurity()
        self._stubs: dict[str, Stubs] = {}
        self._down: dict[str, tuple[float, str]] = {}  # endpoint -> (retry at, why it is down)
        self._granted: dict[int, int] = {}  # lease ID -> granted TTL (never changes)

    def stubs(self, endpoint: str) -> Stubs | None:
        """A channel to ``endpoint``; None when it cannot be used (then not dialed again for
        ``DOWN_SECONDS``, so a dead member does not stall every survey; ``why_down`` says
        why)."""
        s = self._stubs.get(endpoint)
        if s is None:
            if time.monotonic() < self._down.get(endpoint, (0.0, ""))[0]:
                return None
            why = "unreachable"
            try:
                s = dial(endpoint, self.dial_timeout, self.security)
            except CtlError as exc:
                why = exc.message
            if s is None:
                self._down[endpoint] = (time.monotonic() + DOWN_SECONDS, why)
            else:
                self._stubs[endpoint] = s
                self._down.pop(endpoint, None)
        return s

    def why_down(self, endpoint: str) -> str:
        """Why ``stubs(endpoint)`` last gave None."""
        return self._down.get(endpoint, (0.0, "unreachable"))[1]

    def drop(self, endpoint: str) -> None:
        s = self._stubs.pop(endpoint, None)
        if s is not None:
            s.close()

    def close(self) -> None:
        for endpoint in list(self._stubs):
            self.drop(endpoint)

    def survey(self) -> list[MemberState]:
        """Every endpoint's state, with the CORRUPT alarms the cluster reports."""
        states = []
        corrupt_ids: set[int] = set()
        alarms_read = False
        for endpoint in self.endpoints:
            s = self.stubs(endpoint)
            if s is None:
                states.append(MemberState(endpoint, 0, 0, 0, False, self.why_down(endpoint)))
                continue
            try:
                st = s.maintenance.Status(pb.StatusRequest(), timeout=self.command_timeout)
            except grpc.RpcError as exc:
                text = grpc_error_text(exc)
                states.append(MemberState(endpoint, 0, 0, 0, CORRUPT_MESSAGE in text, text))
                self.drop(endpoint)
                continue
            if not alarms_read:
                try:
                    req = pb.AlarmRequest(action=pb.AlarmRequest.GET)
                    alarms = s.maintenance.Alarm(req, timeout=self.command_timeout)
                    corrupt_ids |= {a.memberID for a in alarms.alarms if a.alarm == pb.CORRUPT}
                    alarms_read = True
                except grpc.RpcError:
                    pass  # asked again through the next member
            bad = CORRUPT_MESSAGE in " ".join(st.errors)
            states.append(
                MemberState(
                    endpoint,
                    st.header.member_id,
                    st.leader,
                    st.header.revision,
                    bad,
                    # etcd lists every member's alarms in each member's errors: whose they
                    # are comes from the alarm list read above, not from this text
                    "; ".join(e for e in st.errors if not e.startswith("memberID:")),
                )
            )
        return [
            MemberState(m.endpoint, m.member_id, m.leader, m.revision, True, m.error or "alarmed")
            if m.member_id in corrupt_ids
            else m
            for m in states
        ]

    def candidates(self) -> tuple[list[str], str]:
        """Healthy endpoints, followers first, and a line explaining the others."""
        states = self.survey()
        usable = [m for m in states if m.member_id and not m.corrupt and not m.error]
        usable.sort(key=lambda m: (m.member_id == m.leader, -m.revision))
        why = "; ".join(
            f"{m.endpoint}: {'CORRUPT alarm' if m.corrupt else m.error or 'no leader'}"
            for m in states
            if m not in usable
        )
        return [m.endpoint for m in usable], why

    def fetch_snapshot(self, endpoint: str, out: BinaryIO) -> SnapshotFetch:
        """Stream ``endpoint``'s snapshot into ``out`` zstd-compressed (not closed, not
        fsynced); SourceError on any failure, the partial output then being garbage."""
        s = self.stubs(endpoint)
        if s is None:
            raise SourceError(f"{endpoint}: {self.why_down(endpoint)}")
        check = StreamCheck()
        cctx = zstandard.ZstdCompressor(level=3, write_checksum=True)
        writer = cctx.stream_writer(out, closefd=False)
        try:
            for chunk in s.maintenance.Snapshot(pb.SnapshotRequest()):
                writer.write(chunk.blob)
                check.feed(chunk.blob)
            writer.flush(zstandard.FLUSH_FRAME)
            check.finish()
        except grpc.RpcError as exc:
            self.drop(endpoint)
            raise SourceError(f"{endpoint}: snapshot: {grpc_error_text(exc)}") from None
        except SnapshotFileError as exc:
            raise SourceError(f"{endpoint}: {exc}") from None
        size = check.size
        return SnapshotFetch(endpoint, size, out.tell())

    def live_hash(self, revision: int, exclude: str = "") -> LiveHash | str:
        """A healthy member's HashKV at ``revision``, or why none could give it (compacted,
        not reached yet, unreachable)."""
        endpoints, why = self.candidates()
        reasons = [why] if why else []
        for endpoint in [e for e in endpoints if e != exclude] or endpoints:
            s = self.stubs(endpoint)
            if s is None:
                continue
            try:
                resp = s.maintenance.HashKV(
                    pb.HashKVRequest(revision=revision), timeout=self.command_timeout
                )
            except grpc.RpcError as exc:
                text = grpc_error_text(exc)
                reasons.append(f"{endpoint}: {text}")
                if COMPACTED_MESSAGE in text:
                    return f"revision {revision} is compacted on {endpoint}"
                continue
            return LiveHash(endpoint, revision, resp.hash, resp.compact_revision)
        return "; ".join(reasons) or "no member answered"

    def lease_table(self) -> list[tuple[int, int]]:
        """(lease ID, granted TTL) of every live lease, by ID; SourceError when no healthy
        member answers."""
        endpoints, why = self.candidates()
        for endpoint in endpoints:
            s = self.stubs(endpoint)
            if s is None:
                continue
            try:
                listed = s.lease.LeaseLeases(pb.LeaseLeasesRequest(), timeout=self.command_timeout)
                ids = sorted(ls.ID for ls in listed.leases)
                for lease_id in ids:
                    if lease_id not in self._granted:
                        ttl = s.lease.LeaseTimeToLive(
                            pb.LeaseTimeToLiveRequest(ID=lease_id), timeout=self.command_timeout
                        )
                        if ttl.TTL >= 0 or ttl.grantedTTL > 0:
                            self._granted[lease_id] = ttl.grantedTTL
                alive = set(ids)
                self._granted = {i: t for i, t in self._granted.items() if i in alive}
                return sorted(self._granted.items())
            except grpc.RpcError:
                self.drop(endpoint)
        raise SourceError(f"lease table: no healthy member answered ({why})")


class WatchFeed:
    """One watch on every key from ``start`` on; ``cut`` hands over what is confirmed."""

    def __init__(self, source: Source, start: int, log: Log) -> None:
        self.source = source
        self.next_rev = start  # the first revision not yet handed over by ``cut``
        self.log = log
        self._lock = threading.Condition()
        self._groups: list[RevisionEvents] = []
        self._progress: list[int] = []
        self._failure: BaseException | None = None
        self._requests: queue.Queue[pb.WatchRequest | None] = queue.Queue()
        self._call: Any = None
        self._thread: threading.Thread | None = None
        self.endpoint = ""

    def _open(self) -> None:
        endpoints, why = self.source.candidates()
        if not endpoints:
            raise SourceError(f"watch: no healthy member ({why})")
        start = self._groups[-1].revision + 1 if self._groups else self.next_rev
        for endpoint in endpoints:
            s = self.source.stubs(endpoint)
            if s is None:
                continue
            self._requests = queue.Queue()
            create = pb.WatchCreateRequest(key=b"\x00", range_end=b"\x00", start_revision=start)
            self._requests.put(pb.WatchRequest(create_request=create))
            self._call = s.watch.Watch(_drain(self._requests))
            self._failure = None
            self._thread = threading.Thread(
                target=self._read, args=(self._call, self._requests), daemon=True
            )
            self._thread.start()
            self.endpoint = endpoint
            self.log(f"watching every key from revision {start} on {endpoint}")
            return
        raise SourceError(f"watch: no member reachable ({why})")

    def _read(self, call: Any, requests: queue.Queue[pb.WatchRequest | None]) -> None:
        try:
            for resp in call:
                with self._lock:
                    if resp.canceled and resp.compact_revision:
                        self._failure = WatchCompactedError(self.next_rev, resp.compact_revision)
                    elif resp.canceled:
                        self._failure = SourceError(f"watch canceled: {resp.cancel_reason}")
                    elif resp.events:
                        self._add(resp.events)
                    elif resp.watch_id == -1 and not resp.created:
                        self._progress.append(resp.header.revision)
                    self._lock.notify_all()
                    if self._failure is not None:
                        break
            else:
                raise SourceError("watch stream ended")
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.CANCELLED:
                with self._lock:
                    self._failure = SourceError(f"watch: {grpc_error_text(exc)}")
        except BaseException as exc:
            with self._lock:
                self._failure = self._failure or exc
        finally:
            requests.put(None)
            with self._lock:
                if self._failure is None:
                    self._failure = SourceError("watch stream closed")
                self._lock.notify_all()

    def _add(self, events: Any) -> None:
        now = time.time()
        for ev in events:
            rev = ev.kv.mod_revision
            kind = DELETE if ev.type == 1 else PUT
            item = (kind, ev.kv.SerializeToString())
            if self._groups and self._groups[-1].revision == rev:
                last = self._groups[-1]
                self._groups[-1] = RevisionEvents(rev, last.received, (*last.events, item))
            else:
                self._groups.append(RevisionEvents(rev, now, (item,)))

    def cut(self, timeout: float) -> tuple[list[RevisionEvents], int]:
        """Events of every revision up to the one a fresh progress response confirms, and
        that revision; reopens a broken stream (once) before giving up with SourceError."""
        failure: BaseException | None = None
        for _attempt in range(2):
            if self._call is None or self._failure is not None:
                self._reopen()
            with self._lock:
                self._progress.clear()
            self._requests.put(pb.WatchRequest(progress_request=pb.WatchProgressRequest()))
            deadline = time.monotonic() + timeout
            with self._lock:
                while not self._progress and self._failure is None:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    self._lock.wait(left)
                if self._progress:
                    covered = max(self._progress[0], self.next_rev - 1)
                    taken = [g for g in self._groups if g.revision <= covered]
                    self._groups = [g for g in self._groups if g.revision > covered]
                    self.next_rev = covered + 1
                    return taken, covered
                failure = self._failure
            if isinstance(failure, WatchCompactedError):
                raise failure
            self.log(f"watch on {self.endpoint}: {failure or 'no progress response'}; reopening")
            self._stop()
        raise SourceError(f"watch: no progress from any member: {failure}")

    def _reopen(self) -> None:
        if self._failure is not None and isinstance(self._failure, WatchCompactedError):
            raise self._failure
        if self._call is not None:
            self.log(f"watch on {self.endpoint}: {self._failure}; reopening")
        self._stop()
        with self._lock:
            # the newest buffered revision may be incomplete: take it again from the server
            self._groups = self._groups[:-1]
        self._open()

    def _stop(self) -> None:
        if self._call is not None:
            self._requests.put(None)
            self._call.cancel()
            if self._thread is not None:
                self._thread.join(5)
            self._call = None
            self.source.drop(self.endpoint)

    def close(self) -> None:
        self._stop()


def _drain(requests: queue.Queue[pb.WatchRequest | None]) -> Iterator[pb.WatchRequest]:
    while True:
        item = requests.get()
        if item is None:
            return
        yield item
