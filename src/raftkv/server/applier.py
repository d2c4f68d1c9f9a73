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
  (``raftkv.guard.digest``), whose head and history are stored in the same transaction, so
  members that applied the same entries the same way hold the same digest at every index, and
  a restarted member still answers for the indexes before its restart;
- the backend quota (etcd's capped and quota appliers, ``raftkv.server.quota``): while any
  NOSPACE alarm is active (replicated state, so on every member alike) Put, Txn with a put and
  LeaseGrant take no effect and answer ``ERR_NO_SPACE``; otherwise a member whose own backend
  is over the quota when it applies one of them applies it all the same (the state stays
  identical) but answers ``ERR_NO_SPACE`` and raises its NOSPACE alarm (``on_no_space``);
- a write that finds LMDB's map full aborts its batch; the map is doubled, the in-memory state
  reloaded from the backend (``on_state_reloaded``) and the batch applied again, so the
  member neither stops nor diverges (only a batch lost at its final commit needs a restart);
- a backend received with a Raft snapshot is installed as a copy (fsynced, renamed over
  data.mdb, directory fsynced) and the received ``member/snap/<index>-<term>.snap.db`` is kept
  as ``raftkv check data``'s rebuild base, at the cost of one copy of the backend per
  installed snapshot in I/O and disk; the files of older snapshots are deleted then.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import os
import struct
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from typing import Any

import lmdb

from raftkv import errors, failpoints
from raftkv.auth.store import AuthStore
from raftkv.auth.tokens import AuthInfo, TokenProvider
from raftkv.backup.snapshot_file import write_snapshot_db
from raftkv.clock import Clock
from raftkv.fileutil import PRIVATE_FILE_MODE, copy_file
from raftkv.guard.digest import META_APPLY_DIGEST, ApplyDigest
from raftkv.guard.state_hash import StateHash, compute_state_hash
from raftkv.guard.vouch import META_COPY_VOUCH, CopyVouch
from raftkv.lease import errors as lease_errors
from raftkv.lease.lessor import Lessor
from raftkv.mvcc import types as m
from raftkv.mvcc.backend import (
    BUCKET_ALARM,
    BUCKET_APPLY_DIGEST,
    BUCKET_LEASE,
    BUCKET_META,
    META_CONSISTENT_INDEX,
    META_STORAGE_VERSION,
    SPACE_ERRORS,
    Backend,
    BackendConfig,
    ReadTxn,
    rewrite_file_value,
)
from raftkv.mvcc.errors import MVCCRequestError
from raftkv.mvcc.kvstore import KVStore
from raftkv.mvcc.watchable import WatchableStore
from raftkv.mvcc.write_batch import WriteBatch
from raftkv.proto import rpc_pb2 as pb
from raftkv.raft.codec import decode_conf_change
from raftkv.raft.types import ConfChange, Entry, EntryType, Snapshot
from raftkv.server import convert
from raftkv.server.auth_apply import Check, auth_handlers, request_checks
from raftkv.server.bootstrap import MemberInfo, encode_members
from raftkv.server.cluster_info import (
    DEFAULT_MAX_LEARNERS,
    ClusterInfo,
    DowngradeInfo,
    MemberChange,
)
from raftkv.server.data_dir import DataDir
from raftkv.server.quota import KV_OVERHEAD, LEASE_OVERHEAD, cost_txn, fits, humanize_bytes
from raftkv.server.raft_node import FatalStateMachineError, StorageVersionError
from raftkv.server.requests import (
    CHECKPOINT_KINDS,
    FIRST_VERSION,
    KIND_SINCE,
    Request,
    RequestDecodeError,
    RequestKind,
    UnknownRequestError,
    decode_request,
    request_kind,
)
from raftkv.version import SERVER_VERSION, STORAGE_VERSION, Version
from raftkv.wal.files import fsync_dir

log = logging.getLogger("raftkv.apply")

_U64 = struct.Struct(">Q")
_ALARM_KEY = struct.Struct(">QI")

Header = Callable[[int], pb.ResponseHeader]
Handler = Callable[[WriteBatch, bytes, int], Any]
"""Applies one request (its body, at its entry index) in the batch; returns the answer."""

# Entries whose apply is followed by a state hash on every member (first byte of entry data).
REVISIONS_KEPT = 10_000
INSTALL_COPY_NAME = "install.mdb.tmp"
"""In ``member/db/``: the copy of a received backend file being installed (``install_snapshot``);
one left by a crash is removed when the applier opens the backend."""
MAP_GROWTHS = 4
"""How many times one batch may double LMDB's map before its failure is fatal."""

_CONF_CHANGE = EntryType.CONF_CHANGE
# Kinds after whose apply the member is told the cluster record changed.
_CLUSTER_KINDS = frozenset(
    (RequestKind.MEMBER_ATTRIBUTES, RequestKind.CLUSTER_VERSION, RequestKind.DOWNGRADE)
)
_NOSPACE = int(pb.NOSPACE)
_OVER_QUOTA: Any = object()
"""The answer of a write applied while this member's backend was over the quota: its waiter
gets ``ERR_NO_SPACE`` once this member's NOSPACE alarm is raised (``on_no_space``)."""


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
        max_learners: int = DEFAULT_MAX_LEARNERS,
        waiters: dict[int, asyncio.Future[Any]] | None = None,
        auth_tokens: TokenProvider | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.backend_config = backend_config
        # The member's clock (``raftkv.clock``), the backend's: lease grants on a primary
        # lessor and every other timer of the member read it.
        self.clock: Clock = backend_config.clock
        self.min_lease_ttl = min_lease_ttl
        self.header = header
        self._apply_conf_change = apply_conf_change
        self._on_members_changed = on_members_changed
        self.max_learners = max_learners
        # The proposer's wait registry (request ID -> future): answered here once applied.
        self.waiters: dict[int, asyncio.Future[Any]] = {} if waiters is None else waiters
        self.compaction_waiters: list[asyncio.Future[None]] = []
        # etcd's etcd_mvcc_{put,delete,txn}_total: requests applied on this member.
        self.counters = {"put": 0, "delete": 0, "txn": 0}
        # Called right after a checkpoint entry's batch commits: (index, is_compaction).
        self.on_checkpoint: Callable[[int, bool], None] | None = None
        # Called after a batch in which this member's backend was over the quota while no
        # NOSPACE alarm was active, with the waiters of the writes so answered: raise this
        # member's NOSPACE alarm, then fail them with ERR_NO_SPACE (etcd's applyEntryNormal).
        # None: they fail at once.
        self.on_no_space: Callable[[list[asyncio.Future[Any]]], None] | None = None
        # Called after the in-memory state was reloaded from the backend outside a swap the
        # caller made (the LMDB map grew under a batch): a leader's lessor is promoted again.
        self.on_state_reloaded: Callable[[], None] | None = None
        # Called when a swap replaced this member's apply digest history with the one the new
        # backend carries (an installed snapshot, a repair): (the history replaced, the new).
        self.on_history_replaced: Callable[[ApplyDigest, ApplyDigest], None] | None = None
        # MVCC revision after each recently applied Raft index (for the guard's reports).
        self.revision_at: dict[int, int] = {}
        # False while applying an entry nobody on this member waits for: no response is built.
        self._answer_wanted = True
        # The user and auth revision of the entry being applied (format 2; None: nobody).
        self._who: AuthInfo | None = None
        # The entry being applied while a batch applies, else None: for failpoints that need to
        # know where they fired (the simulator's apply faults; compiled code has no frames).
        self.applying: Entry | None = None
        # Member-local tokens of the auth store (they survive backend swaps).
        self._auth_tokens = auth_tokens
        # Held by a state hash reading the backend in a worker thread, and by whoever closes
        # the backend: a hash not yet started when the backend closes fails instead (its read
        # transaction is invalidated), one running is waited for.
        self._hashing = threading.Lock()
        # etcd's appliers: the full table, and the capped one used while any NOSPACE alarm is
        # active; ``_handlers`` is one of them, chosen whenever the alarms change.
        self._uncapped = self._handler_table()
        self._capped = self._capped_table(self._uncapped)
        self._handlers = self._uncapped
        self._over_quota = False  # a write of the current batch found the backend over quota
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
        # A crash between the copy of an installed backend and its rename leaves the copy
        # behind: data.mdb is still the backend it was to replace, and the kept file is
        # installed again at start-up (``install_if_behind``).
        with contextlib.suppress(FileNotFoundError):
            os.remove(self._install_copy_path())
        self.backend = Backend(self.data_dir.db, self.backend_config)
        try:
            check_storage_version(self.backend, self.data_dir.db)
            self.store = KVStore(
                self.backend, lease_exists=lambda lid: self.lessor.lookup(lid) is not None
            )
            self.watchable = WatchableStore(self.store)
            self._load_side_state()
            self._load_digest()
        except BaseException:
            # A backend this applier cannot load (a newer layout, a value corrupted at rest)
            # is closed again: a tool or a restart in the same process can open it.
            self.backend.close()
            raise

    def _load_side_state(self) -> None:
        """Lessor, member list and alarms from the current backend (start-up, snapshot)."""
        self.lease_bucket = _LeaseBucket(self.backend)
        self.lessor = Lessor(self.lease_bucket, min_ttl=self.min_lease_ttl)
        self.lessor.restore(self.lease_bucket)
        for key, lease_id in sorted(self.store.leased_keys().items()):
            if self.lessor.lookup(lease_id) is not None:
                self.lessor.attach(lease_id, key)
        self.cluster = ClusterInfo(self.backend)
        self.auth = AuthStore(self.backend, self._auth_tokens)
        self.alarms = {_ALARM_KEY.unpack(k) for k, _v in self.backend.items(BUCKET_ALARM)}
        self._select_handlers()
        self._applied = self.store.consistent_index

    def _load_digest(self) -> None:
        self.digest = ApplyDigest.load(
            self.backend.get(BUCKET_META, META_APPLY_DIGEST),
            self.backend.items(BUCKET_APPLY_DIGEST),
            fallback_index=self.store.consistent_index,
        )
        raw = self.backend.get(BUCKET_META, META_COPY_VOUCH)
        try:
            self.copy_vouch = CopyVouch.decode(raw) if raw is not None else None
        except ValueError as exc:
            # Not trusted either way: counted as a copy of this member's own state.
            log.error("ignoring the backend's copy vouch record: %s", exc)
            self.copy_vouch = None
        self._vouch_cleared_unwritten = False

    def confirm_copy(self, vouch: CopyVouch) -> bool:
        """A member of another origin confirmed the unconfirmed copy this state came from
        (``raftkv.guard.vouch``): the state is this member's own from now on.  Only if
        ``vouch`` is still the one held (an install may have replaced it meanwhile); the
        record is deleted with the next apply batch.  From the event loop."""
        if self.copy_vouch != vouch:
            return False
        self.copy_vouch = None
        self._vouch_cleared_unwritten = True
        return True

    def stamp_copy(self, path: str, vouch: CopyVouch | None) -> None:
        """Record in the backend copy ``path`` (``copy_backend``'s, not yet sent) whose
        unconfirmed state it is, or that it is confirmed (None: no record).  Blocking; raises
        OSError when the copy cannot be written."""
        payload = vouch.encode() if vouch is not None else None
        try:
            rewrite_file_value(path, BUCKET_META, META_COPY_VOUCH, payload)
        except lmdb.Error as exc:
            raise OSError(f"cannot stamp backend copy {path}: {exc}") from exc

    def storage_version(self) -> Version | None:
        """The storage version recorded in the backend (None: raftkv 0.1 recorded none)."""
        raw = self.backend.get(BUCKET_META, META_STORAGE_VERSION)
        return Version.parse(raw.decode()) if raw is not None else None

    @property
    def members(self) -> dict[int, MemberInfo]:
        """The replicated member list by ID (a new dict after each change: never mutated)."""
        return self.cluster.members

    def close(self) -> None:
        with self._hashing:
            self.backend.close()

    def abandon(self) -> None:
        """Close the backend as a crash would (``Backend.abandon``)."""
        self.backend.abandon()

    def write_initial_members(self, members: Sequence[MemberInfo]) -> None:
        """Bootstrap: the initial member list, committed at consistent index 1 and made
        durable at once (the bootstrap Raft snapshot is at index 1, so no WAL entry redoes it)."""
        try:
            with self.store.write_batch() as batch:
                if batch.begin_entry(1, 1):
                    for info in sorted(members, key=lambda m: m.id):
                        self.cluster.put_member(batch.tx, self.digest.recorder, info)
                    self.digest.recorder.finish(1)
                    self.digest.persist(batch.tx)
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
        cluster = self.cluster.records()
        alarms = set(self.alarms)
        auth = self.auth.hash_part()

        def compute() -> StateHash:
            with self._hashing:  # the backend is not closed under a running hash
                kv_hash, _current = keys()
            return compute_state_hash(
                applied_index=index,
                kv_hash=kv_hash,
                lease_digest=leases,
                members=members,
                alarms=alarms,
                cluster=cluster,
                auth=auth,
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
        """When (on ``self.clock``) the pending batch is due; None when nothing is pending."""
        return self.backend.commit_deadline()

    def copy_backend(self, path: str) -> int:
        """A consistent, compacted copy of what the backend file holds (for a follower's
        snapshot, a backup or a defragmentation); returns the copy's consistent index (the
        Raft index whose state it holds).  May run in any thread; it holds only what was
        committed, so the applying thread calls ``commit_pending`` first.  The backend is not
        closed (defragmentation, a map growth) while the copy runs.  Every stored value is
        checked against its CRC first: a value corrupted at rest raises
        ``BackendCorruptionError`` and is never copied on (to a follower, or into a backup)."""
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PRIVATE_FILE_MODE)
        try:
            with self._hashing:
                env = self.backend.env
                txn = env.begin(write=False)
                try:
                    reader = ReadTxn(self.backend, txn)
                    for bucket in self.backend.buckets:
                        for _ in reader.iterate(bucket):  # unseals: checks each value's CRC
                            pass
                    ci = reader.get(BUCKET_META, META_CONSISTENT_INDEX)
                    env.copyfd(fd, compact=True, txn=txn)
                finally:
                    txn.abort()
            os.fsync(fd)
        finally:
            os.close(fd)
        return _U64.unpack(ci)[0] if ci else 0

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
        """Replace the whole state with the snapshot's (the received backend file).

        The received file ``db_path`` (``member/snap/<index>-<term>.snap.db``) is kept: it
        is copied to ``member/db/`` (fsynced), the copy renamed over ``data.mdb`` and the
        directory fsynced.  It is the base ``raftkv check data`` rebuilds this member from:
        the WAL has a gap before the snapshot index, so nothing older can be one.  This
        costs one copy of the backend per installed snapshot, in I/O and in disk space.
        Once installed, the backend files of older snapshots (index below this one, the
        copy a restore keeps at index 1 too) can never be a base again and are deleted.
        A file kept at or below the backend's consistent index is not installed again at
        start-up (``install_if_behind``).
        """
        md = snap.metadata
        if db_path is None:
            raise RuntimeError(f"snapshot at index {md.index} arrived without its backend file")
        log.info("installing the backend received with snapshot %d", md.index)
        copy = self._install_copy_path()
        copy_file(db_path, copy, sync=True)
        self._swap_backend(copy)
        if self._applied < md.index:
            raise RuntimeError(
                f"received backend is at index {self._applied}, behind snapshot {md.index}"
            )
        self._delete_backend_files_below(md.index)
        self._on_members_changed(dict(self.members))

    def install_if_behind(self, snap: Snapshot) -> bool:
        """Start-up: install the backend file received with the Raft snapshot ``snap`` when
        the backend is behind it (a crash came between the file's receipt and its install,
        or during the install); True when it did.  A backend at or past ``snap`` installs
        nothing: the file then is the one kept as ``raftkv check data``'s base."""
        md = snap.metadata
        if self._applied >= md.index:
            return False
        db = self.data_dir.received_backend(md.index, md.term)
        if db is None:
            if md.index > 1:
                raise RuntimeError(
                    f"backend at index {self._applied} is behind snapshot {md.index} and no "
                    "received backend file is present"
                )
            return False  # the bootstrap snapshot: the caller writes the member list
        self.install_snapshot(snap, db)
        return True

    def _install_copy_path(self) -> str:
        """Where an installed backend file is copied before it is renamed over data.mdb."""
        return os.path.join(self.data_dir.db, INSTALL_COPY_NAME)

    def _delete_backend_files_below(self, index: int) -> None:
        """Delete the kept backend files of snapshots older than ``index`` (the one just
        installed): the WAL now starts after ``index``, so they can never be a base again.
        Not fsynced: a file a crash brings back is deleted at the next install."""
        for older, path in self.data_dir.received_backends():
            if older >= index:
                break
            with contextlib.suppress(FileNotFoundError):
                os.remove(path)
            log.info("deleted the backend file %s, older than snapshot %d", path, index)

    def replace_state(self, db_path: str) -> int:
        """Repair: take another member's backend file as this member's whole state.

        Returns the applied index the file carries (its consistent index).  The caller must
        re-apply any committed entry above that index this member had already applied.
        """
        log.warning("replacing this member's state with the backend file %s", db_path)
        self._swap_backend(db_path)
        return self._applied

    def _swap_backend(self, db_path: str) -> None:
        """Close the backend, rename ``db_path`` (a durable file on the same file system)
        over data.mdb, fsync the directory and open it."""
        with self._hashing:
            self.backend.close()
        os.replace(db_path, os.path.join(self.data_dir.db, "data.mdb"))
        fsync_dir(self.data_dir.db)
        self.backend = Backend(self.data_dir.db, self.backend_config)
        check_storage_version(self.backend, self.data_dir.db)
        self.watchable.restore(self.backend)  # keeps the watchers; they catch up
        self._load_side_state()
        replaced = self.digest
        self._load_digest()  # the sender's chain head travels in its backend
        if self.on_history_replaced is not None:
            self.on_history_replaced(replaced, self.digest)

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
            if e.type == EntryType.NORMAL and request_kind(e.data) in CHECKPOINT_KINDS:
                self._apply_with_room(entries[start : i + 1])
                start = i + 1
                if self.on_checkpoint is not None and e.index == self._applied:
                    self.on_checkpoint(e.index, request_kind(e.data) == RequestKind.COMPACTION)
        if start < len(entries):
            self._apply_with_room(entries[start:] if start else entries)

    def _apply_with_room(self, entries: Sequence[Entry]) -> None:
        """``_apply_batch``; when LMDB's map fills under it, grow the map and apply the batch
        again (the failed attempt left nothing behind: see ``_grow_backend``), up to
        ``MAP_GROWTHS`` times."""
        for _ in range(MAP_GROWTHS):
            try:
                self._apply_batch(entries)
                return
            except SPACE_ERRORS as exc:
                self._grow_backend(exc)
        self._apply_batch(entries)

    def _grow_backend(self, exc: BaseException, *, reload: bool = True) -> None:
        """LMDB's map filled: double it.  The batch that failed was aborted (its digest rolled
        back, the key index rebuilt by the store); the lessor, members, auth and alarms may
        have changed in memory before the failure, so they are reloaded from the backend
        (``reload``).  A batch lost at its final commit cannot be redone here: the member must
        stop, and its restart opens the map at twice the file's size and redoes it from the
        WAL (``FatalStateMachineError``)."""
        backend = self.backend
        if backend.batch_lost:
            raise FatalStateMachineError(
                f"the backend's LMDB map ({backend.map_size} bytes) filled while committing "
                "applied entries; restart the member: it reopens the map larger and applies "
                "them again from its WAL"
            ) from exc
        before = backend.map_size
        with self._hashing:
            after = backend.grow_map()
        log.warning(
            "the backend's LMDB map filled at %s (%d bytes in use, quota %s): map grown to %s",
            humanize_bytes(before),
            backend.committed_size,
            humanize_bytes(backend.quota_limit) if backend.quota_limit else "disabled",
            humanize_bytes(after),
        )
        if reload:
            self._load_side_state()
            if self.on_state_reloaded is not None:
                self.on_state_reloaded()

    def _apply_batch(self, entries: Sequence[Entry]) -> None:
        answers: list[tuple[int, Any]] = []
        members_changed = False
        recorder = self.digest.recorder
        finish = recorder.finish
        revision_at = self.revision_at
        waiters = self.waiters
        self._over_quota = False
        try:
            with self.store.write_batch() as batch:
                self.lease_bucket.tx = batch.tx
                begin_entry = batch.begin_entry
                try:
                    for e in entries:
                        index = e.index
                        self.applying = e
                        if not begin_entry(index, e.term):
                            if e.type == _CONF_CHANGE:
                                self._replay_conf_change(e)
                            continue
                        if failpoints.ENABLED and failpoints.hit("applySkipEntry"):
                            log.warning("failpoint applySkipEntry: skipping entry %d", index)
                            finish(index)
                            continue
                        if e.type == _CONF_CHANGE:
                            answers.append(self._apply_conf_change_entry(batch, e))
                            members_changed = True
                        elif e.data and (decoded := self._decode(e)) is not None:
                            kind, request_id, body, user, auth_revision = decoded
                            self._who = AuthInfo(user, auth_revision) if user else None
                            # Only a proposal made on this member has someone to answer.
                            self._answer_wanted = request_id in waiters
                            try:
                                # Looked up per entry: an ALARM entry may cap the next ones.
                                answer = self._handlers[kind](batch, body, index)
                            # One name per handler: a compiled function types each name once.
                            except MVCCRequestError as mvcc_exc:
                                answer = convert.error_to_etcd(mvcc_exc)
                            except lease_errors.LeaseError as lease_exc:
                                mapped = _LEASE_ERRORS.get(type(lease_exc))
                                if mapped is None:
                                    raise
                                answer = mapped()
                            answers.append((request_id, answer))
                            members_changed |= kind in _CLUSTER_KINDS
                        finish(index)
                        revision_at[index] = batch.revision
                    self._answer_wanted = True
                    self.digest.persist(batch.tx)
                    vouch_cleared = self._vouch_cleared_unwritten
                    if vouch_cleared:
                        batch.tx.delete(BUCKET_META, META_COPY_VOUCH)
                    if failpoints.ENABLED and failpoints.hit("crashBeforeConsistentIndex"):
                        log.warning("failpoint crashBeforeConsistentIndex")
                finally:
                    self.lease_bucket.tx = None
                    self.applying = None
        except BaseException:
            self.digest.rollback()
            raise
        self.digest.commit()
        if vouch_cleared and self.copy_vouch is None:
            self._vouch_cleared_unwritten = False
        if len(revision_at) > 2 * REVISIONS_KEPT:
            for index in list(itertools.islice(revision_at, len(revision_at) - REVISIONS_KEPT)):
                del revision_at[index]
        if failpoints.ENABLED and failpoints.hit("crashAfterBackendCommit"):
            log.warning("failpoint crashAfterBackendCommit")
        if entries:
            self._applied = max(self._applied, entries[-1].index)
        if members_changed:
            self._on_members_changed(dict(self.members))
        over_quota: list[asyncio.Future[Any]] = []
        for request_id, answer in answers:
            fut = self.waiters.pop(request_id, None)
            if fut is None or fut.done():
                continue
            if answer is _OVER_QUOTA:
                over_quota.append(fut)
            elif isinstance(answer, BaseException):
                fut.set_exception(answer)
            else:
                fut.set_result(answer)
        if self._over_quota:
            self._no_space(over_quota)

    def _no_space(self, waiters: list[asyncio.Future[Any]]) -> None:
        """Writes of the batch just applied found this member's backend over the quota (etcd's
        quota applier): unless a NOSPACE alarm is active by now, this member raises its own
        (``on_no_space``), and their waiters get ``ERR_NO_SPACE``."""
        self._over_quota = False
        if self.on_no_space is not None and not self.no_space_active():
            log.warning(
                "message exceeded backend quota; raising alarm (quota-size-bytes=%d, "
                "quota-size=%s, error=%s)",
                self.backend.quota,
                humanize_bytes(self.backend.quota),
                errors.ERR_NO_SPACE.message,
            )
            self.on_no_space(waiters)
            return
        for fut in waiters:
            if not fut.done():
                fut.set_exception(errors.ERR_NO_SPACE())

    def _decode(self, e: Entry) -> Request | None:
        """The entry's request; None for a newer member's request this member may skip.

        Every kind this binary does not know is newer than its own version.  While the
        cluster version is at most this binary's (always, for a member the cluster admits),
        such an entry takes no effect on any member: the newer ones refuse it as ``not
        capable`` (it reached the log from a proposer that had not yet applied a lower
        cluster version, e.g. during a downgrade), so skipping it keeps the state identical.
        Above that, this member is behind the cluster and must stop.
        """
        try:
            return decode_request(e.data)
        except UnknownRequestError as exc:
            cv = self.cluster.cluster_version
            if cv is None or cv <= SERVER_VERSION.minor_version:
                log.warning(
                    "entry %d holds %s, newer than raftkv %s: no member applies it at cluster "
                    "version %s; skipped",
                    e.index,
                    exc,
                    SERVER_VERSION,
                    cv.short() if cv else "(not set)",
                )
                return None
            raise FatalStateMachineError(
                f"entry {e.index} holds {exc}, which raftkv {SERVER_VERSION} cannot apply at "
                f"cluster version {cv.short()}: upgrade this member to the cluster's version"
            ) from None
        except RequestDecodeError as decode_exc:
            raise FatalStateMachineError(f"entry {e.index} does not decode: {decode_exc}") from None

    # -- the handler table: one handler per request kind, cross-cutting checks as wrappers --

    def _handler_table(self) -> dict[RequestKind, Handler]:
        table: dict[RequestKind, Handler] = {
            RequestKind.PUT: self._apply_put,
            RequestKind.DELETE_RANGE: self._apply_delete_range,
            RequestKind.TXN: self._apply_txn,
            RequestKind.COMPACTION: self._apply_compaction,
            RequestKind.LEASE_GRANT: self._apply_lease_grant,
            RequestKind.LEASE_REVOKE: self._apply_lease_revoke,
            RequestKind.LEASE_CHECKPOINT: self._apply_lease_checkpoint,
            RequestKind.ALARM: self._apply_alarm,
            RequestKind.MEMBER_ATTRIBUTES: self._apply_member_attributes,
            RequestKind.HASH_CHECK: lambda _batch, _body, index: index,
            RequestKind.CLUSTER_VERSION: self._apply_cluster_version,
            RequestKind.DOWNGRADE: self._apply_downgrade,
            RequestKind.MEMBER_CHANGE: self._not_a_request,
        } | auth_handlers(self)
        missing = set(RequestKind) - set(table)
        if missing:
            raise AssertionError(f"request kinds without an apply handler: {sorted(missing)}")
        for kind, check in request_checks(self).items():
            table[kind] = self._authorized(check, table[kind])
        for kind, since in KIND_SINCE.items():
            if since > FIRST_VERSION:
                table[kind] = self._gated(since, table[kind])
        return table

    def _capped_table(self, table: dict[RequestKind, Handler]) -> dict[RequestKind, Handler]:
        """``table`` as etcd's capped applier changes it (while a NOSPACE alarm is active):
        Put and LeaseGrant take no effect and answer ``ERR_NO_SPACE``, so does a Txn with a
        put in either branch (at any depth); every other request is applied as before.  The
        cap comes before the auth check, as etcd's capped applier wraps its auth applier."""
        uncapped_txn = table[RequestKind.TXN]

        def refuse(batch: WriteBatch, body: bytes, index: int) -> Any:
            return errors.ERR_NO_SPACE()

        def txn(batch: WriteBatch, body: bytes, index: int) -> Any:
            if cost_txn(pb.TxnRequest.FromString(body)) > 0:
                return errors.ERR_NO_SPACE()
            return uncapped_txn(batch, body, index)

        capped = dict(table)
        capped[RequestKind.PUT] = refuse
        capped[RequestKind.LEASE_GRANT] = refuse
        capped[RequestKind.TXN] = txn
        return capped

    def no_space_active(self) -> bool:
        """Whether any member's NOSPACE alarm is active (the capped applier is in use)."""
        return self._handlers is self._capped

    def _select_handlers(self) -> None:
        """The capped table while any NOSPACE alarm is active, else the full one."""
        capped = any(alarm == _NOSPACE for _member, alarm in self.alarms)
        self._handlers = self._capped if capped else self._uncapped

    def _gated(self, since: Version, handler: Handler) -> Handler:
        """``handler`` answers only once the cluster version reaches ``since``; before, the
        entry takes no effect and its proposer gets ``not capable`` (the same answer on every
        member: the cluster version is replicated state)."""

        def gated(batch: WriteBatch, body: bytes, index: int) -> Any:
            cv = self.cluster.cluster_version
            if cv is None or cv < since:
                return errors.ERR_NOT_CAPABLE()
            return handler(batch, body, index)

        return gated

    def _authorized(self, check: Check, handler: Handler) -> Handler:
        """While auth is enabled, ``handler`` runs only if ``check`` lets the entry's user
        (``_who``) do it; otherwise the entry takes no effect and answers the check's error
        (the same on every member: the auth store is replicated state)."""

        def authorized(batch: WriteBatch, body: bytes, index: int) -> Any:
            if self.auth.enabled:
                try:
                    check(body, self._who)
                except errors.EtcdError as exc:
                    return exc
            return handler(batch, body, index)

        return authorized

    def _not_a_request(self, batch: WriteBatch, body: bytes, index: int) -> Any:
        raise FatalStateMachineError(
            f"entry {index}: a member-change context proposed as a normal entry"
        )

    def _apply_put(self, batch: WriteBatch, body: bytes, index: int) -> Any:
        self.counters["put"] += 1
        req = pb.PutRequest.FromString(body)
        if failpoints.ENABLED and failpoints.hit("applyCorruptValue"):
            req.value = req.value + b"\x00corrupted"
        if req.prev_kv or req.ignore_value or req.ignore_lease:
            answer = self._write(batch, batch.put, convert.put_to_mvcc(req))
        else:
            answer = self._put_plain(batch, req.key, req.value, req.lease)
        backend = self.backend  # quota.fits inlined: this is the hottest path
        limit = backend.quota_limit
        if limit is not None and (
            backend.committed_size + KV_OVERHEAD + len(req.key) + len(req.value) >= limit
        ):
            return self._applied_over_quota()
        return answer

    def _apply_delete_range(self, batch: WriteBatch, body: bytes, index: int) -> Any:
        self.counters["delete"] += 1
        req = pb.DeleteRangeRequest.FromString(body)
        return self._write(batch, batch.delete_range, convert.delete_to_mvcc(req))

    def _apply_txn(self, batch: WriteBatch, body: bytes, index: int) -> Any:
        self.counters["txn"] += 1
        req = pb.TxnRequest.FromString(body)
        answer = self._write(batch, batch.txn, convert.txn_to_mvcc(req))
        if self.backend.quota_limit is not None and not fits(self.backend, cost_txn(req)):
            return self._applied_over_quota()
        return answer

    def _apply_compaction(self, batch: WriteBatch, body: bytes, index: int) -> Any:
        req = pb.CompactionRequest.FromString(body)
        batch.compact(m.CompactionRequest(req.revision, req.physical))
        self.digest.recorder.compact(req.revision)
        return pb.CompactionResponse(header=self.header(batch.revision))

    def _apply_lease_grant(self, batch: WriteBatch, body: bytes, index: int) -> Any:
        req = pb.LeaseGrantRequest.FromString(body)
        if failpoints.ENABLED and failpoints.hit("applyDropLease"):
            log.warning("failpoint applyDropLease: not granting lease %x", req.ID)
            return pb.LeaseGrantResponse(header=self.header(batch.revision), ID=req.ID, TTL=req.TTL)
        lessor = self.lessor
        now = self.clock.monotonic() if lessor.is_primary else None
        lease = lessor.grant(req.ID, req.TTL, now)
        self.digest.recorder.lease_grant(lease.id, lease.ttl)
        if not fits(self.backend, LEASE_OVERHEAD):
            return self._applied_over_quota()
        return pb.LeaseGrantResponse(header=self.header(batch.revision), ID=lease.id, TTL=lease.ttl)

    def _applied_over_quota(self) -> Any:
        """The answer of a write this member applied with its backend over the quota (etcd's
        quota applier: the write takes effect on every member, only the answer differs)."""
        self._over_quota = True
        return _OVER_QUOTA

    def _apply_lease_revoke(self, batch: WriteBatch, body: bytes, index: int) -> Any:
        req = pb.LeaseRevokeRequest.FromString(body)
        keys = self.lessor.revoke(req.ID)
        self.digest.recorder.lease_revoke(req.ID)
        if keys:
            deletes = tuple(m.DeleteRangeRequest(key=k) for k in keys)
            self._write(batch, batch.txn, m.TxnRequest(success=deletes))
        return pb.LeaseRevokeResponse(header=self.header(batch.revision))

    def _apply_lease_checkpoint(self, batch: WriteBatch, body: bytes, index: int) -> Any:
        cp = pb.LeaseCheckpointRequest.FromString(body)
        for c in cp.checkpoints:
            if self.lessor.lookup(c.ID) is not None:
                self.digest.recorder.lease_checkpoint(c.ID, max(0, c.remaining_TTL))
            self.lessor.apply_checkpoint(c.ID, c.remaining_TTL)
        return pb.LeaseCheckpointResponse(header=self.header(batch.revision))

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

    def _apply_alarm(self, batch: WriteBatch, body: bytes, index: int) -> pb.AlarmResponse:
        req = pb.AlarmRequest.FromString(body)
        key = (req.memberID, int(req.alarm))
        resp = pb.AlarmResponse()  # etcd sends alarm responses without a header
        if req.action == pb.AlarmRequest.ACTIVATE and req.alarm != pb.NONE:
            if key not in self.alarms:
                self.alarms = self.alarms | {key}
                batch.tx.put(BUCKET_ALARM, _ALARM_KEY.pack(*key), b"")
                self.digest.recorder.alarm(key[0], key[1], True)
                self._alarms_changed(key, "alarm raised")
            resp.alarms.add(memberID=req.memberID, alarm=req.alarm)
        elif req.action == pb.AlarmRequest.DEACTIVATE and key in self.alarms:
            self.alarms = self.alarms - {key}
            batch.tx.delete(BUCKET_ALARM, _ALARM_KEY.pack(*key))
            self.digest.recorder.alarm(key[0], key[1], False)
            self._alarms_changed(key, "alarm disarmed")
            resp.alarms.add(memberID=req.memberID, alarm=req.alarm)
        return resp

    def _alarms_changed(self, key: tuple[int, int], what: str) -> None:
        """After an alarm was raised or cleared: the capped applier follows the NOSPACE alarms
        (etcd logs the first of a kind raised and the last cleared)."""
        if key[1] != _NOSPACE:
            return
        was = self.no_space_active()
        self._select_handlers()
        if was != self.no_space_active():
            log.warning("%s (alarm=NOSPACE, from=%x)", what, key[0])

    def _apply_member_attributes(self, batch: WriteBatch, body: bytes, index: int) -> Any:
        """A member published its name, client URLs and server version (etcd's publish)."""
        info = MemberInfo.from_json(_json_obj(body))
        current = self.members.get(info.id)
        if current is not None:
            updated = replace(
                current, name=info.name, client_urls=info.client_urls, version=info.version
            )
            self.cluster.put_member(batch.tx, self.digest.recorder, updated)
        return self.header(batch.revision)

    def _apply_cluster_version(self, batch: WriteBatch, body: bytes, index: int) -> Any:
        """The leader decided the cluster version (the lowest minor among the voters)."""
        version = Version.parse(body.decode())
        if version != self.cluster.cluster_version:
            log.info("cluster version is now %s", version.short())
            self.cluster.set_cluster_version(batch.tx, self.digest.recorder, version)
            storage = min(version.minor_version, STORAGE_VERSION)
            batch.tx.put(BUCKET_META, META_STORAGE_VERSION, storage.short().encode())
        return self.header(batch.revision)

    def _apply_downgrade(self, batch: WriteBatch, body: bytes, index: int) -> Any:
        """A downgrade enabled (held at its target version) or ended (cancelled, or done)."""
        obj = _json_obj(body)
        info = DowngradeInfo(Version.parse(obj["target"])) if obj.get("enabled") else None
        if info != self.cluster.downgrade:
            self.cluster.set_downgrade(batch.tx, self.digest.recorder, info)
        return self.header(batch.revision)

    # -- membership changes -------------------------------------------------------------

    def _apply_conf_change_entry(self, batch: WriteBatch, e: Entry) -> tuple[int, Any]:
        """Validate and apply a conf change (etcd's rules); returns (request id, the member
        list after it, or the error that refused it)."""
        cc = decode_conf_change(e.data)
        request_id, change = self._member_change(e.index, cc)
        error = self.cluster.validate_change(cc, change, self.max_learners)
        if error is not None:
            log.warning("conf change at index %d refused: %s", e.index, error.message)
            self.cluster.reject_change(batch.tx, self.digest.recorder, e.index)
            self._apply_conf_change(ConfChange(cc.type, 0))  # a no-op for the Raft core
            return request_id, error
        self._apply_conf_change(cc)
        self.cluster.apply_change(batch.tx, self.digest.recorder, cc, change)
        return request_id, sorted(self.members.values(), key=lambda i: i.id)

    def _replay_conf_change(self, e: Entry) -> None:
        """A conf change at or below the consistent index (applied before a restart, or held
        by a received backend): the Raft core, which restarted from an older snapshot, learns
        it again; the member list already holds its effect."""
        if e.index not in self.cluster.rejected:
            self._apply_conf_change(decode_conf_change(e.data))

    def _member_change(self, index: int, cc: ConfChange) -> tuple[int, MemberChange | None]:
        if not cc.context:
            return 0, None
        if cc.context[:1] == b"{":  # raftkv 0.1: the member record, no request id
            return 0, MemberChange.decode(cc.context)
        kind, request_id, body, *_who = decode_request(cc.context)
        if kind != RequestKind.MEMBER_CHANGE:
            raise FatalStateMachineError(f"conf change at index {index} has a {kind.name} context")
        return request_id, MemberChange.decode(body)

    # -- compaction -----------------------------------------------------------------------

    def compact_some(self) -> bool:
        """One bounded step of pending compaction; True when nothing is left to do.  A step
        that finds LMDB's map full grows it and is done again at the next call."""
        try:
            done = self.store.compact_step()
        except SPACE_ERRORS as exc:
            self._grow_backend(exc, reload=False)  # the step changed nothing in memory
            return False
        if done:
            for fut in self.compaction_waiters:
                if not fut.done():
                    fut.set_result(None)
            self.compaction_waiters.clear()
        return done


def check_storage_version(backend: Backend, path: str) -> None:
    """Refuse a backend whose storage version is newer than this binary's (its layout may
    differ).  The storage version follows the cluster version (written when that is set), so
    a member one minor older can still open the data of a cluster that did not move past it."""
    raw = backend.get(BUCKET_META, META_STORAGE_VERSION)
    if raw is None:
        return  # raftkv 0.1 recorded none; the first cluster version decided records one
    stored = Version.parse(raw.decode())
    if stored > STORAGE_VERSION:
        raise StorageVersionError(
            f"{path}: the data dir has storage version {stored.short()}, newer than this "
            f"raftkv {SERVER_VERSION} supports ({STORAGE_VERSION.short()}); run raftkv "
            f"{stored.short()} or later, or downgrade the cluster first"
        )


def _json_obj(data: bytes) -> dict[str, Any]:
    obj = json.loads(data.decode())
    if not isinstance(obj, dict):
        raise ValueError("member record is not a JSON object")
    return obj
