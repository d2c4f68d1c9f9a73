"""The replicated state machine of one member: committed entries in, state and answers out.

Owns: the LMDB backend, the MVCC store and its watchers, the lessor, the member list and the
alarm list, and the registry of proposals waiting for their entry to be applied.

Contracts:
- deterministic: the same entries applied to the same state give byte-identical state on every
  member (no clock, no randomness, sorted iteration only); lease IDs are chosen before proposing;
- one LMDB write transaction per batch of committed entries, the consistent index in it, so an
  entry at or below the durable consistent index is skipped after a restart (exactly once);
  batches join the backend's pending batch (``--backend-batch-interval``), so the durable
  consistent index may lag what was applied: the WAL still holds those entries (snapshots
  force-commit before the log is compacted) and a restart re-applies them;
- request errors (compacted revision, missing lease, ...) are answers, given to the waiting
  client; anything else raised while applying is a fatal bug: the batch is aborted and the error
  propagates to the Ready loop, which stops the member rather than let it diverge;
- waiters are resolved only after the batch committed (into the pending batch: readers see it);
- every applied entry's effects (keys written and deleted with revisions, values and leases;
  lease, membership, alarm and compaction changes) are folded into the apply digest chain
  (``raftkv.guard.digest``), whose head is stored in the same transaction, so members that
  applied the same entries the same way hold the same digest at every index.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import os
import struct
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from raftkv import errors, failpoints
from raftkv.backup.snapshot_file import write_snapshot_db
from raftkv.guard.digest import META_APPLY_DIGEST, ApplyDigest
from raftkv.guard.state_hash import StateHash, compute_state_hash
from raftkv.lease import errors as lease_errors
from raftkv.lease.lessor import Lessor
from raftkv.mvcc import types as m
from raftkv.mvcc.backend import (
    BUCKET_ALARM,
    BUCKET_LEASE,
    BUCKET_MEMBERS,
    BUCKET_META,
    Backend,
    BackendConfig,
)
from raftkv.mvcc.errors import MVCCRequestError
from raftkv.mvcc.kvstore import KVStore
from raftkv.mvcc.watchable import WatchableStore
from raftkv.mvcc.write_batch import WriteBatch
from raftkv.proto import rpc_pb2 as pb
from raftkv.raft.codec import decode_conf_change
from raftkv.raft.types import ConfChange, ConfChangeType, Entry, EntryType, Snapshot
from raftkv.server import convert
from raftkv.server.bootstrap import DataDir, MemberInfo, encode_members
from raftkv.server.requests import RequestKind, decode_request

log = logging.getLogger("raftkv.apply")

_U64 = struct.Struct(">Q")
_ALARM_KEY = struct.Struct(">QI")

Header = Callable[[int], pb.ResponseHeader]

# Entries whose apply is followed by a state hash on every member (first byte of entry data).
REVISIONS_KEPT = 10_000

_CHECKPOINT_KINDS = frozenset((RequestKind.HASH_CHECK, RequestKind.COMPACTION))
_PUT = RequestKind.PUT
_HASH_CHECK = RequestKind.HASH_CHECK
_MEMBER_ATTRIBUTES = RequestKind.MEMBER_ATTRIBUTES
_CONF_CHANGE = EntryType.CONF_CHANGE


class _LeaseBucket:
    """The lessor's ``LeaseStore``: writes go to the current batch's transaction."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.tx: Any = None

    def put_lease(self, lease_id: int, data: bytes) -> None:
        self._tx().put(BUCKET_LEASE, _U64.pack(lease_id), data)

    def delete_lease(self, lease_id: int) -> None:
        self._tx().delete(BUCKET_LEASE, _U64.pack(lease_id))

    def iter_leases(self) -> Iterable[tuple[int, bytes]]:
        for key, value in self.backend.items(BUCKET_LEASE):
            yield _U64.unpack(key)[0], value

    def _tx(self) -> Any:
        if self.tx is None:
            raise RuntimeError("lease records are written only while applying entries")
        return self.tx


_LEASE_ERRORS: dict[type[Exception], type[errors.EtcdError]] = {
    lease_errors.LeaseNotFoundError: errors.ERR_LEASE_NOT_FOUND,
    lease_errors.LeaseExistsError: errors.ERR_LEASE_EXIST,
    lease_errors.LeaseTTLTooLargeError: errors.ERR_LEASE_TTL_TOO_LARGE,
}


class Applier:
    def __init__(
        self,
        *,
        data_dir: DataDir,
        backend_config: BackendConfig,
        min_lease_ttl: int,
        header: Header,
        apply_conf_change: Callable[[ConfChange], object],
        on_members_changed: Callable[[dict[int, MemberInfo]], None],
    ) -> None:
        self.data_dir = data_dir
        self.backend_config = backend_config
        self.min_lease_ttl = min_lease_ttl
        self.header = header
        self._apply_conf_change = apply_conf_change
        self._on_members_changed = on_members_changed
        self.waiters: dict[int, asyncio.Future[Any]] = {}
        self.compaction_waiters: list[asyncio.Future[None]] = []
        # etcd's etcd_mvcc_{put,delete,txn}_total: requests applied on this member.
        self.counters = {"put": 0, "delete": 0, "txn": 0}
        # Called right after a checkpoint entry's batch commits: (index, is_compaction).
        self.on_checkpoint: Callable[[int, bool], None] | None = None
        # MVCC revision after each recently applied Raft index (for the guard's reports).
        self.revision_at: dict[int, int] = {}
        # False while applying an entry nobody on this member waits for: no response is built.
        self._answer_wanted = True
        # Held by a state hash reading the backend in a worker thread, and by whoever closes
        # the backend: a hash not yet started when the backend closes fails instead (its read
        # transaction is invalidated), one running is waited for.
        self._hashing = threading.Lock()
        self._open()

    @classmethod
    def detached(cls, root: str, backend_config: BackendConfig, min_lease_ttl: int) -> Applier:
        """An applier outside a running member (offline rebuild, benchmarks, tests): plain
        headers, and no Raft node or peer table to tell about conf and member changes."""
        return cls(
            data_dir=DataDir(root),
            backend_config=backend_config,
            min_lease_ttl=min_lease_ttl,
            header=lambda rev: pb.ResponseHeader(revision=rev),
            apply_conf_change=lambda _cc: None,
            on_members_changed=lambda _members: None,
        )

    # -- opening and snapshots ----------------------------------------------------------

    def _open(self) -> None:
        self.backend = Backend(self.data_dir.db, self.backend_config)
        self.store = KVStore(
            self.backend, lease_exists=lambda lid: self.lessor.lookup(lid) is not None
        )
        self.watchable = WatchableStore(self.store)
        self._load_side_state()
        self._load_digest()

    def _load_side_state(self) -> None:
        """Lessor, member list and alarms from the current backend (start-up, snapshot)."""
        self.lease_bucket = _LeaseBucket(self.backend)
        self.lessor = Lessor(self.lease_bucket, min_ttl=self.min_lease_ttl)
        self.lessor.restore(self.lease_bucket)
        for key, lease_id in sorted(self.store.leased_keys().items()):
            if self.lessor.lookup(lease_id) is not None:
                self.lessor.attach(lease_id, key)
        self.members = {
            info.id: info
            for info in (
                MemberInfo.from_json(_json_obj(v)) for _k, v in self.backend.items(BUCKET_MEMBERS)
            )
        }
        self.alarms = {_ALARM_KEY.unpack(k) for k, _v in self.backend.items(BUCKET_ALARM)}
        self._applied = self.store.consistent_index

    def _load_digest(self) -> None:
        self.digest = ApplyDigest.from_record(
            self.backend.get(BUCKET_META, META_APPLY_DIGEST),
            fallback_index=self.store.consistent_index,
        )

    def close(self) -> None:
        with self._hashing:
            self.backend.close()

    def write_initial_members(self, members: Sequence[MemberInfo]) -> None:
        """Bootstrap: the initial member list, committed at consistent index 1 and made
        durable at once (the bootstrap Raft snapshot is at index 1, so no WAL entry redoes it)."""
        try:
            with self.store.write_batch() as batch:
                if batch.begin_entry(1, 1):
                    for info in sorted(members, key=lambda m: m.id):
                        self._put_member(batch, info)
                    self.digest.recorder.finish(1)
                    batch.tx.put(BUCKET_META, META_APPLY_DIGEST, self.digest.encode_head())
        except BaseException:
            self.digest.rollback()
            raise
        self.digest.commit()
        self.backend.force_commit()
        self._applied = max(self._applied, 1)
        self._on_members_changed(dict(self.members))

    def applied_index(self) -> int:
        return self._applied

    def state_hash_deferred(self) -> Callable[[], StateHash]:
        """Fix the whole replicated state now (at ``applied_index()``); the callable hashes it.

        Leases, members and alarms are digested here (they are small and live in memory); the
        key bucket is read through an LMDB snapshot later, possibly in another thread, so a
        large store does not stall apply.  The callable must be called exactly once.
        """
        index = self._applied
        keys = self.store.hash_kv_deferred(0)
        leases = self.lessor.state_digest()
        members = list(self.members.values())
        alarms = set(self.alarms)

        def compute() -> StateHash:
            with self._hashing:  # the backend is not closed under a running hash
                kv_hash, _current = keys()
            return compute_state_hash(
                applied_index=index,
                kv_hash=kv_hash,
                lease_digest=leases,
                members=members,
                alarms=alarms,
            )

        return compute

    def snapshot_data(self) -> bytes:
        return encode_members(list(self.members.values()))

    def force_commit(self) -> None:
        """Everything applied so far reaches stable storage (the pending batch is committed,
        then one fsync).  From the applying thread."""
        self.backend.force_commit()

    def commit_pending(self) -> None:
        """Commit the backend's pending batch (from the applying thread)."""
        self.backend.commit_pending()

    def commit_deadline(self) -> float | None:
        """When (``time.monotonic``) the pending batch is due; None when nothing is pending."""
        return self.backend.commit_deadline()

    def copy_backend(self, path: str) -> None:
        """A consistent, compacted copy of what the backend file holds (for a follower's
        snapshot, a backup or a defragmentation).  May run in any thread; it holds only what
        was committed, so the applying thread calls ``commit_pending`` first."""
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            self.backend.env.copyfd(fd, compact=True)
            os.fsync(fd)
        finally:
            os.close(fd)

    def etcd_snapshot_deferred(self) -> Callable[[str], int]:
        """Fix the whole state now (as ``state_hash_deferred``); the callable writes it to a new
        file as an etcd-format snapshot database, with the state hash at this index recorded,
        and returns its size.  It may run in another thread and must be called exactly once;
        apply goes on meanwhile (it reads an LMDB snapshot).  Commit the pending batch first."""
        state_hash = self.state_hash_deferred()
        cm = self.backend.read()
        tx = cm.__enter__()

        def write(path: str) -> int:
            try:
                recorded = state_hash()
                with self._hashing:  # the backend is not closed under a running export
                    return write_snapshot_db(tx, recorded, path)
            finally:
                cm.__exit__(None, None, None)

        return write

    def install_snapshot(self, snap: Snapshot, db_path: str | None) -> None:
        """Replace the whole state with the snapshot's (the received backend file)."""
        if db_path is None:
            raise RuntimeError(
                f"snapshot at index {snap.metadata.index} arrived without its backend file"
            )
        log.info("installing the backend received with snapshot %d", snap.metadata.index)
        self._swap_backend(db_path)
        if self._applied < snap.metadata.index:
            raise RuntimeError(
                f"received backend is at index {self._applied}, behind snapshot "
                f"{snap.metadata.index}"
            )
        self._on_members_changed(dict(self.members))

    def replace_state(self, db_path: str) -> int:
        """Repair: take another member's backend file as this member's whole state.

        Returns the applied index the file carries (its consistent index).  The caller must
        re-apply any committed entry above that index this member had already applied.
        """
        log.warning("replacing this member's state with the backend file %s", db_path)
        self._swap_backend(db_path)
        return self._applied

    def _swap_backend(self, db_path: str) -> None:
        with self._hashing:
            self.backend.close()
        os.replace(db_path, os.path.join(self.data_dir.db, "data.mdb"))
        self.backend = Backend(self.data_dir.db, self.backend_config)
        self.watchable.restore(self.backend)  # keeps the watchers; they catch up
        self._load_side_state()
        self._load_digest()  # the sender's chain head travels in its backend

    def defragment(self) -> None:
        """Rewrite the backend file compactly (etcd's defrag).

        Runs on the event loop thread without yielding, so no apply interleaves: the copy
        holds every committed write.  Watchers are kept.  The lessor is reloaded, so the
        caller re-promotes it on the leader.
        """
        tmp = os.path.join(self.data_dir.db, "defrag.mdb.tmp")
        self.commit_pending()
        self.copy_backend(tmp)
        with self._hashing:
            self.backend.close()
        os.replace(tmp, os.path.join(self.data_dir.db, "data.mdb"))
        self.backend = Backend(self.data_dir.db, self.backend_config)
        self.watchable.restore(self.backend)
        self._load_side_state()

    # -- applying -------------------------------------------------------------------------

    def apply_entries(self, entries: Sequence[Entry]) -> None:
        """Apply committed entries; a checkpoint entry (hash check, compaction) ends its batch
        so ``on_checkpoint`` sees the state exactly at that entry's index."""
        start = 0
        for i, e in enumerate(entries):
            if e.data and e.data[0] in _CHECKPOINT_KINDS and e.type == EntryType.NORMAL:
                self._apply_batch(entries[start : i + 1])
                start = i + 1
                if self.on_checkpoint is not None and e.index == self._applied:
                    self.on_checkpoint(e.index, e.data[0] == RequestKind.COMPACTION)
        if start < len(entries):
            self._apply_batch(entries[start:] if start else entries)

    def _apply_batch(self, entries: Sequence[Entry]) -> None:
        answers: list[tuple[int, Any]] = []
        members_changed = False
        recorder = self.digest.recorder
        finish = recorder.finish
        revision_at = self.revision_at
        waiters = self.waiters
        apply_request = self._apply_request
        try:
            with self.store.write_batch() as batch:
                self.lease_bucket.tx = batch.tx
                begin_entry = batch.begin_entry
                try:
                    for e in entries:
                        index = e.index
                        if not begin_entry(index, e.term):
                            continue
                        if failpoints.ENABLED and failpoints.hit("applySkipEntry"):
                            log.warning("failpoint applySkipEntry: skipping entry %d", index)
                            finish(index)
                            continue
                        if e.type == _CONF_CHANGE:
                            self._apply_conf_change_entry(batch, e)
                            members_changed = True
                        elif e.data:
                            kind, request_id, body = decode_request(e.data)
                            # Only a proposal made on this member has someone to answer.
                            self._answer_wanted = request_id in waiters
                            if kind == _HASH_CHECK:
                                answers.append((request_id, index))
                            else:
                                answers.append((request_id, apply_request(batch, kind, body)))
                                members_changed |= kind == _MEMBER_ATTRIBUTES
                        finish(index)
                        revision_at[index] = batch.revision
                    self._answer_wanted = True
                    batch.tx.put(BUCKET_META, META_APPLY_DIGEST, self.digest.encode_head())
                    if failpoints.ENABLED and failpoints.hit("crashBeforeConsistentIndex"):
                        log.warning("failpoint crashBeforeConsistentIndex")
                finally:
                    self.lease_bucket.tx = None
        except BaseException:
            self.digest.rollback()
            raise
        self.digest.commit()
        if len(revision_at) > 2 * REVISIONS_KEPT:
            for index in list(itertools.islice(revision_at, len(revision_at) - REVISIONS_KEPT)):
                del revision_at[index]
        if failpoints.ENABLED and failpoints.hit("crashAfterBackendCommit"):
            log.warning("failpoint crashAfterBackendCommit")
        if entries:
            self._applied = max(self._applied, entries[-1].index)
        if members_changed:
            self._on_members_changed(dict(self.members))
        for request_id, answer in answers:
            fut = self.waiters.pop(request_id, None)
            if fut is None or fut.done():
                continue
            if isinstance(answer, BaseException):
                fut.set_exception(answer)
            else:
                fut.set_result(answer)

    def _apply_request(self, batch: WriteBatch, kind: RequestKind, body: bytes) -> Any:
        try:
            if kind == _PUT:
                self.counters["put"] += 1
                req = pb.PutRequest.FromString(body)
                if failpoints.ENABLED and failpoints.hit("applyCorruptValue"):
                    req.value = req.value + b"\x00corrupted"
                if req.prev_kv or req.ignore_value or req.ignore_lease:
                    return self._write(batch, batch.put, convert.put_to_mvcc(req))
                return self._put_plain(batch, req.key, req.value, req.lease)
            if kind == RequestKind.DELETE_RANGE:
                self.counters["delete"] += 1
                dreq = pb.DeleteRangeRequest.FromString(body)
                return self._write(batch, batch.delete_range, convert.delete_to_mvcc(dreq))
            if kind == RequestKind.TXN:
                self.counters["txn"] += 1
                treq = pb.TxnRequest.FromString(body)
                return self._write(batch, batch.txn, convert.txn_to_mvcc(treq))
            if kind == RequestKind.COMPACTION:
                creq = pb.CompactionRequest.FromString(body)
                batch.compact(m.CompactionRequest(creq.revision, creq.physical))
                self.digest.recorder.compact(creq.revision)
                return pb.CompactionResponse(header=self.header(batch.revision))
            if kind == RequestKind.LEASE_GRANT:
                greq = pb.LeaseGrantRequest.FromString(body)
                if failpoints.ENABLED and failpoints.hit("applyDropLease"):
                    log.warning("failpoint applyDropLease: not granting lease %x", greq.ID)
                    return pb.LeaseGrantResponse(
                        header=self.header(batch.revision), ID=greq.ID, TTL=greq.TTL
                    )
                lease = self.lessor.grant(greq.ID, greq.TTL, _now_if(self.lessor.is_primary))
                self.digest.recorder.lease_grant(lease.id, lease.ttl)
                return pb.LeaseGrantResponse(
                    header=self.header(batch.revision), ID=lease.id, TTL=lease.ttl
                )
            if kind == RequestKind.LEASE_REVOKE:
                rreq = pb.LeaseRevokeRequest.FromString(body)
                keys = self.lessor.revoke(rreq.ID)
                self.digest.recorder.lease_revoke(rreq.ID)
                if keys:
                    deletes = tuple(m.DeleteRangeRequest(key=k) for k in keys)
                    self._write(batch, batch.txn, m.TxnRequest(success=deletes))
                return pb.LeaseRevokeResponse(header=self.header(batch.revision))
            if kind == RequestKind.LEASE_CHECKPOINT:
                cp = pb.LeaseCheckpointRequest.FromString(body)
                for c in cp.checkpoints:
                    if self.lessor.lookup(c.ID) is not None:
                        self.digest.recorder.lease_checkpoint(c.ID, max(0, c.remaining_TTL))
                    self.lessor.apply_checkpoint(c.ID, c.remaining_TTL)
                return pb.LeaseCheckpointResponse(header=self.header(batch.revision))
            if kind == RequestKind.ALARM:
                return self._apply_alarm(batch, pb.AlarmRequest.FromString(body))
            if kind == RequestKind.MEMBER_ATTRIBUTES:
                return self._apply_member_attributes(batch, body)
        except MVCCRequestError as exc:
            return convert.error_to_etcd(exc)
        except lease_errors.LeaseError as exc:
            mapped = _LEASE_ERRORS.get(type(exc))
            if mapped is None:
                raise
            return mapped()
        raise AssertionError(f"unhandled request kind {kind!r}")

    def _write(self, batch: WriteBatch, op: Callable[[Any], m.WriteResponse], req: Any) -> Any:
        """Apply one KV write and keep lease attachments in step with the keys it changed."""
        mark = batch.change_count()
        resp = op(req)
        for key, create, mod, version, value, lease in batch.changes_since(mark):
            self._took_effect(key, create, mod, version, value, lease)
        if not self._answer_wanted:
            return None
        return convert.response_to_pb(resp, self.header(batch.revision))

    def _put_plain(self, batch: WriteBatch, key: bytes, value: bytes, lease: int) -> Any:
        """``_write`` of a put without prev_kv, ignore_value or ignore_lease: same effects,
        digest records and answer, without the request and response records."""
        rev, created, version = batch.put_plain(key, value, lease)
        self._took_effect(key, created, rev, version, value, lease)
        if not self._answer_wanted:
            return None
        resp = pb.PutResponse()
        resp.header.CopyFrom(self.header(rev))  # cheaper than PutResponse(header=...)
        return resp

    def _took_effect(
        self, key: bytes, create: int, mod: int, version: int, value: bytes, lease: int
    ) -> None:
        """One write (``RawKV``'s fields; a tombstone has no create revision) went into the
        batch: record it in the apply digest and keep ``key``'s lease attachment in step."""
        if create:
            self.digest.recorder.put(key, value, lease, mod, create, version)
        else:
            self.digest.recorder.delete(key, mod)
            lease = 0
        old = self.lessor.get_lease(key)
        if not (old or lease):
            return
        if old and old != lease and self.lessor.lookup(old) is not None:
            self.lessor.detach(old, key)
        if lease and lease != old:
            self.lessor.attach(lease, key)

    def _apply_alarm(self, batch: WriteBatch, req: pb.AlarmRequest) -> pb.AlarmResponse:
        key = (req.memberID, int(req.alarm))
        resp = pb.AlarmResponse()  # etcd sends alarm responses without a header
        if req.action == pb.AlarmRequest.ACTIVATE and req.alarm != pb.NONE:
            if key not in self.alarms:
                self.alarms = self.alarms | {key}
                batch.tx.put(BUCKET_ALARM, _ALARM_KEY.pack(*key), b"")
                self.digest.recorder.alarm(key[0], key[1], True)
            resp.alarms.add(memberID=req.memberID, alarm=req.alarm)
        elif req.action == pb.AlarmRequest.DEACTIVATE and key in self.alarms:
            self.alarms = self.alarms - {key}
            batch.tx.delete(BUCKET_ALARM, _ALARM_KEY.pack(*key))
            self.digest.recorder.alarm(key[0], key[1], False)
            resp.alarms.add(memberID=req.memberID, alarm=req.alarm)
        return resp

    def _apply_member_attributes(self, batch: WriteBatch, body: bytes) -> pb.ResponseHeader:
        info = MemberInfo.from_json(_json_obj(body))
        current = self.members.get(info.id)
        if current is not None:
            updated = MemberInfo(
                current.id, info.name, current.peer_urls, info.client_urls, current.is_learner
            )
            self._put_member(batch, updated)
        return self.header(batch.revision)

    def _apply_conf_change_entry(self, batch: WriteBatch, e: Entry) -> None:
        cc = decode_conf_change(e.data)
        self._apply_conf_change(cc)
        if cc.type == ConfChangeType.REMOVE_NODE:
            if cc.node_id in self.members:
                self.members = {k: v for k, v in self.members.items() if k != cc.node_id}
                batch.tx.delete(BUCKET_MEMBERS, _U64.pack(cc.node_id))
                self.digest.recorder.member_remove(cc.node_id)
            return
        if cc.context:
            info = MemberInfo.from_json(_json_obj(cc.context))
            if cc.type == ConfChangeType.ADD_NODE:
                info = MemberInfo(info.id, info.name, info.peer_urls, info.client_urls, False)
            self._put_member(batch, info)

    def _put_member(self, batch: WriteBatch, info: MemberInfo) -> None:
        record = encode_members([info])[1:-1]
        self.members = {**self.members, info.id: info}
        batch.tx.put(BUCKET_MEMBERS, _U64.pack(info.id), record)
        self.digest.recorder.member_set(info.id, record)

    # -- compaction -----------------------------------------------------------------------

    def compact_some(self) -> bool:
        """One bounded step of pending compaction; True when nothing is left to do."""
        done = self.store.compact_step()
        if done:
            for fut in self.compaction_waiters:
                if not fut.done():
                    fut.set_result(None)
            self.compaction_waiters.clear()
        return done


def _json_obj(data: bytes) -> dict[str, Any]:
    obj = json.loads(data.decode())
    if not isinstance(obj, dict):
        raise ValueError("member record is not a JSON object")
    return obj


def _now_if(primary: bool) -> float | None:
    return time.monotonic() if primary else None
