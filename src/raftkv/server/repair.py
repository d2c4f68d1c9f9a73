"""Repair of a fenced member: its whole state rebuilt from a healthy member's, verified, unfenced.

Owns: ``raftkv member repair <ID>`` on the server side — routing the request to the member
being repaired, fetching a healthy member's backend, checking it, installing it in place of the
diverged state (re-applying what this member had applied beyond it, or, when this member's
Raft log itself left the cluster's, as a Raft snapshot that replaces the log too), verifying
the result by a state hash check against the quorum, and clearing this member's CORRUPT alarm
and guard verdict.

Contracts:
- only a fenced member is repaired: under a CORRUPT alarm, fenced by a guard verdict it
  accepted (``raftkv.server.fencing``; it may be unable to apply the alarm), or whose apply
  stopped on a corrupt stored value; the source is a voter under no alarm, the leader first;
- the fetched file is the source's Maintenance.Snapshot stream (an LMDB copy ending with its
  SHA-256, the one ``etcdctl snapshot save`` checks); it is accepted only when the checksum
  matches, every stored value passes its CRC, and the apply digest it carries at its consistent
  index is the one a majority of ALL voters holds at that index;
- when this member's log holds the file's index with the term the source applied there, the
  install happens between two apply batches, in one step on the event loop: the file replaces
  the backend and the committed entries this member had applied above the file's index are
  applied again from the local Raft log, so no committed entry is skipped or applied twice;
- otherwise this member's log conflicts with the cluster's (a forged or lost entry; it cannot
  apply what the leader sends, the alarm entry included): the file is installed as a Raft
  snapshot at its index (its term and configuration read from the file), as a lagging follower
  installs the leader's, which replaces the whole local log.  That needs the file's index to be
  above this member's commit index (Raft never drops committed entries); until the cluster's
  log has passed it, the repair fails saying so;
- the alarm is cleared (through Raft) only after a new checkpoint shows this member's state hash
  equal to the quorum's, then the guard verdict; otherwise the member stays fenced and the
  request fails saying why.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import shutil
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import grpc
import grpc.aio

from raftkv.backup.snapshot_file import (
    SnapshotFileError,
)
from raftkv.guard.digest import META_APPLY_DIGEST, ApplyDigest
from raftkv.mvcc.backend import (
    BUCKET_META,
    META_CONSISTENT_INDEX,
    META_TERM,
    Backend,
    BackendConfig,
    verify_file,
)
from raftkv.mvcc.errors import BackendCorruptionError
from raftkv.peer.transport import PeerRequestError
from raftkv.proto import rpc_pb2 as pb
from raftkv.raft.errors import CompactedError, UnavailableError
from raftkv.raft.types import (
    ConfState,
    EntryType,
    Message,
    MessageType,
    Snapshot,
    SnapshotMetadata,
)
from raftkv.server.bootstrap import encode_members
from raftkv.server.cluster_info import ClusterInfo
from raftkv.server.requests import RequestKind
from raftkv.tlsutil import TLSConfigError
from raftkv.wal.files import fsync_dir

if TYPE_CHECKING:
    from raftkv.server.member import Member

log = logging.getLogger("raftkv.repair")

REPAIR_TIMEOUT = 120.0
FETCH_ATTEMPTS = 3
LOG_CATCH_UP = 3.0  # how long the local log may take to reach a fetched file's index


class RepairError(Exception):
    """The repair could not be done; the message says why (the member stays fenced)."""


@dataclass(frozen=True)
class _Fetched:
    """What a fetched backend file holds: its consistent index and the term of the entry
    there, the apply digest at it, and the configuration it applied up to it."""

    index: int
    term: int
    head: bytes
    conf_state: ConfState
    members: bytes  # the member list, as a Raft snapshot's data carries it


class Repairer:
    def __init__(self, member: Member) -> None:
        self.member = member
        self._lock = asyncio.Lock()
        self._token: str | None = None  # the operator's auth token, during one repair
        member.transport.register_handler("repair", self._handle_repair)

    async def repair(self, target: int, token: str | None = None) -> dict[str, Any]:
        """Repair member ``target`` (this one or a peer); returns what was done.  ``token``
        (auth enabled: the operator's) goes with the backend fetch from a healthy member."""
        if target == self.member.member_id:
            return await self._repair_self(token)
        if target not in self.member.applier.members:
            raise RepairError(f"member {target:x} is not in the member list")
        request = {"member_id": target} | ({"token": token} if token else {})
        try:
            raw = await self.member.transport.request(
                target, "repair", json.dumps(request).encode(), REPAIR_TIMEOUT
            )
        except PeerRequestError as exc:
            raise RepairError(f"member {target:x} could not be reached: {exc}") from None
        answer: dict[str, Any] = json.loads(raw)
        if "error" in answer:
            raise RepairError(str(answer["error"]))
        return answer

    async def _handle_repair(self, peer: int, payload: bytes) -> bytes:
        try:
            token = json.loads(payload).get("token")
            result = await self._repair_self(token if isinstance(token, str) else None)
        except RepairError as exc:
            result = {"error": str(exc)}
        return json.dumps(result).encode()

    # -- the repair of this member -----------------------------------------------------------

    async def _repair_self(self, token: str | None = None) -> dict[str, Any]:
        if self._lock.locked():
            raise RepairError(f"member {self.member.member_id:x} is already being repaired")
        async with self._lock:
            self._token = token
            try:
                return await self._repair_locked()
            finally:
                self._token = None

    async def _repair_locked(self) -> dict[str, Any]:
        m = self.member
        me = m.member_id
        if not m.fence.self_alarmed():  # its alarm, a guard verdict, or a corrupt value
            raise RepairError(f"member {me:x} is not under a CORRUPT alarm: nothing to repair")
        problems: list[str] = []
        for source in self._sources():
            for _attempt in range(FETCH_ATTEMPTS):
                try:
                    installed = await self._fetch_and_install(source)
                except (RepairError, grpc.RpcError, OSError, TimeoutError) as exc:
                    problems.append(f"from {source:x}: {_text(exc)}")
                    log.warning("repair of %x from %x failed: %s", me, source, _text(exc))
                    continue
                if installed is not None:
                    return await self._verify_and_unfence(source, *installed)
        raise RepairError(
            f"no healthy member could repair {me:x}: " + ("; ".join(problems) or "none reachable")
        )

    def _sources(self) -> list[int]:
        m = self.member
        alarmed = {mid for mid, _a in m.applier.alarms}
        voters = [v for v in m.raft.conf_state.voters if v != m.member_id and v not in alarmed]
        return sorted(voters, key=lambda v: (v != m.raft.lead, v))

    async def _fetch_and_install(self, source: int) -> tuple[int, int, bool] | None:
        """Fetch ``source``'s backend, check it and install it; (index, entries re-applied,
        whether the Raft log was replaced too), or None when this member has moved past what it
        can re-apply (try again)."""
        m = self.member
        workdir = os.path.join(m.data_dir.snap, f"repair-{secrets.token_hex(4)}")
        os.makedirs(workdir)
        try:
            path = os.path.join(workdir, "data.mdb")
            await self._fetch(source, path)
            found = await asyncio.to_thread(_inspect_backend, workdir, m.applier.backend_config)
            index = found.index
            await self._check_quorum_digest(index, found.head)
            if not await self._log_holds(index, found.term):
                await self._install_as_snapshot(source, found, path)
                return index, 0, True
            applied = m.applier.applied_index()
            storage = m.raft.storage
            if index < applied and index + 1 < storage.first_index():
                return None  # the entries above the file's index are gone from the log
            redo = storage.entries(index + 1, applied + 1) if index < applied else []
            if any(e.type != EntryType.NORMAL for e in redo):
                return None  # a membership change in between: fetch a newer file
            # one step on the loop: no apply batch can run between these two calls
            m.applier.replace_state(path)
            if redo:
                m.applier.apply_entries(redo)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        m.on_state_replaced()
        m.raft.resume_apply()  # apply may have parked on the corrupt state
        log.warning(
            "member %x: state replaced by member %x's at raft index %d; %d entries re-applied",
            m.member_id,
            source,
            index,
            len(redo),
        )
        return index, len(redo), False

    async def _install_as_snapshot(self, source: int, found: _Fetched, path: str) -> None:
        """Install the fetched file as a Raft snapshot from this member's leader: the local log,
        which conflicts with the cluster's, is replaced with it (see the module contract)."""
        m = self.member
        committed = m.raft.storage.hard_state().commit
        if found.index <= committed:
            raise RepairError(
                f"member {m.member_id:x}'s Raft log conflicts with the cluster's at or below "
                f"raft index {found.index}, and it has committed up to {committed}: its log "
                f"can be replaced only by a state newer than that (retry once the cluster's "
                f"log has passed raft index {committed})"
            )
        try:
            async with asyncio.timeout(m.request_timeout):
                await m.raft.wait_leader()
        except TimeoutError:
            raise RepairError("no leader to take the Raft log from") from None
        if m.raft.is_leader:
            raise RepairError(
                f"member {m.member_id:x} leads the cluster: move the leadership away first"
            )
        final = m.data_dir.received_backend_path(found.index, found.term)
        os.replace(path, final)
        await asyncio.to_thread(fsync_dir, os.path.dirname(final))
        meta = SnapshotMetadata(found.index, found.term, found.conf_state)
        m.raft.receive_snapshot(
            Message(
                type=MessageType.MSG_SNAP,
                to=m.member_id,
                frm=m.raft.lead,
                term=m.raft.node.term,
                snapshot=Snapshot(meta, found.members),
            ),
            final,
        )
        try:
            async with asyncio.timeout(m.request_timeout):
                await m.raft.wait_applied(found.index)
        except TimeoutError:
            with contextlib.suppress(FileNotFoundError):
                os.remove(final)
            raise RepairError(
                f"member {source:x}'s state at raft index {found.index} was not installed as a "
                "Raft snapshot in time (this member was applying entries or lost its leader)"
            ) from None
        m.on_state_replaced()
        log.warning(
            "member %x: Raft log and state replaced by member %x's at raft index %d (term %d): "
            "its own log conflicted with the cluster's",
            m.member_id,
            source,
            found.index,
            found.term,
        )

    async def _fetch(self, source: int, path: str) -> None:
        info = self.member.applier.members.get(source)
        if info is None or not info.client_urls:
            raise RepairError(f"member {source:x} has published no client URL")
        try:
            await self.member.env.fetch_backend(
                info.client_urls[0],
                path,
                config=self.member.config,
                token=self._token,
                timeout=REPAIR_TIMEOUT,
            )
        except (SnapshotFileError, TLSConfigError) as exc:
            raise RepairError(f"backend from member {source:x}: {exc}") from None

    async def _check_quorum_digest(self, index: int, head: bytes) -> None:
        """The file's apply digest at its index must be the one a majority of voters holds."""
        m = self.member
        voters = m.raft.conf_state.voters
        holders = 0
        for voter in voters:
            if voter == m.member_id:
                continue  # this member's own chain is the suspect one
            try:
                theirs = await m.guard.digest_at(voter, index, m.request_timeout)
            except PeerRequestError:
                continue
            holders += theirs == head
        if holders < len(voters) // 2 + 1:
            raise RepairError(
                f"the backend's apply digest at raft index {index} is held by {holders} of "
                f"{len(voters)} voters, not a majority"
            )

    async def _log_holds(self, index: int, term: int) -> bool:
        """Whether this member's log holds ``index`` with ``term`` (waiting a little for it
        to get there): False when it has another term there, or does not get there in time
        (it does not accept the leader's entries)."""
        m = self.member
        storage = m.raft.storage
        loop = asyncio.get_running_loop()
        # A member whose apply parked on a corrupt value cannot install a snapshot behind the
        # parked batch: its log is given the whole request timeout to catch up instead.
        wait = m.request_timeout if m.state_broken else min(LOG_CATCH_UP, m.request_timeout)
        deadline = loop.time() + wait
        while storage.last_index() < index:
            if loop.time() >= deadline:
                return False
            await asyncio.sleep(0.05)
        try:
            return storage.term(index) == term
        except CompactedError:
            return True  # applied and compacted past it: the re-apply check decides
        except UnavailableError:
            return False

    async def _verify_and_unfence(
        self, source: int, index: int, redone: int, log_replaced: bool
    ) -> dict[str, Any]:
        m = self.member
        checker = m.hash_checker
        try:
            at = await checker.checkpoint()
            result = await checker.compare(at)
        except Exception as exc:
            raise RepairError(f"state installed but could not be verified: {_text(exc)}") from None
        mine = result.reports.get(m.member_id)
        if result.truth is None or mine is None or mine.value != result.truth:
            raise RepairError(
                f"state installed but its state hash at raft index {at} is not the quorum's; "
                "the member stays fenced"
            )
        body = pb.AlarmRequest(
            action=pb.AlarmRequest.DEACTIVATE, memberID=m.member_id, alarm=pb.CORRUPT
        ).SerializeToString()
        try:
            await m.propose_internal(RequestKind.ALARM, body)
        except Exception as exc:
            raise RepairError(
                f"state verified at raft index {at} but the CORRUPT alarm could not be "
                f"cleared: {_text(exc)}; the member stays fenced (repair it again)"
            ) from None
        # Only now (the alarm is cleared here, so on the leader too or soon): a verdict a
        # leader sent about the alarm before applying its clearing is older than this index.
        m.state_broken = False
        had_verdict = m.fence.verdict is not None
        m.fence.clear_verdict(m.applier.applied_index())  # on the loop: no verdict interleaves
        log.warning(
            "member %x repaired from member %x; state hash %s at raft index %d matches the "
            "quorum; CORRUPT alarm cleared%s",
            m.member_id,
            source,
            mine.value.hex(),
            at,
            " and guard verdict cleared" if had_verdict else "",
        )
        return {
            "member_id": m.member_id,
            "source_id": source,
            "installed_index": index,
            "reapplied_entries": redone,
            "log_replaced": log_replaced,
            "verified_index": at,
            "state_hash": mine.value.hex(),
            "alarm_cleared": True,
            "verdict_cleared": had_verdict,
        }


def _inspect_backend(workdir: str, config: BackendConfig) -> _Fetched:
    """What a fetched backend holds (``_Fetched``), every value CRC-checked first
    (``verify_file``, the check a follower makes of a received snapshot)."""
    try:
        verify_file(os.path.join(workdir, "data.mdb"))
    except BackendCorruptionError as exc:
        raise RepairError(f"fetched backend is corrupt: {exc}") from None
    backend = Backend(workdir, config)
    try:
        raw = backend.get(BUCKET_META, META_CONSISTENT_INDEX)
        if raw is None:
            raise RepairError("fetched backend has no consistent index")
        index = int.from_bytes(raw, "big")
        digest = ApplyDigest.from_record(
            backend.get(BUCKET_META, META_APPLY_DIGEST), fallback_index=index
        )
        at_index, head = digest.latest()
        if at_index != index:
            raise RepairError(
                f"fetched backend's apply digest is at index {at_index}, its state at {index}"
            )
        raw_term = backend.get(BUCKET_META, META_TERM)
        if raw_term is None:
            raise RepairError("fetched backend has no term")
        members = list(ClusterInfo(backend).members.values())
        conf = ConfState(
            voters=tuple(sorted(i.id for i in members if not i.is_learner)),
            learners=tuple(sorted(i.id for i in members if i.is_learner)),
        )
        return _Fetched(index, int.from_bytes(raw_term, "big"), head, conf, encode_members(members))
    finally:
        backend.close()


def _text(exc: BaseException) -> str:
    if isinstance(exc, grpc.RpcError):
        return f"{exc.code().name}: {exc.details()}"
    return str(exc) or type(exc).__name__
