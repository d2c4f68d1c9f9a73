"""Repair of a fenced member: its whole state rebuilt from a healthy member's, verified, unfenced.

Owns: ``raftkv member repair <ID>`` on the server side — routing the request to the member
being repaired, fetching a healthy member's backend, checking it, installing it in place of the
diverged state, re-applying what this member had applied beyond it, verifying the result by a
state hash check against the quorum, and clearing this member's CORRUPT alarm.

Contracts:
- only a member under a CORRUPT alarm, or whose apply stopped on a corrupt stored value, is
  repaired; the source is a voter under no alarm, the leader first;
- the fetched file is the source's Maintenance.Snapshot stream (an LMDB copy ending with its
  SHA-256, the one ``etcdctl snapshot save`` checks); it is accepted only when the checksum
  matches, every stored value passes its CRC, and the apply digest it carries at its consistent
  index is the one a majority of ALL voters holds at that index;
- the install happens between two apply batches, in one step on the event loop: the file
  replaces the backend and the committed entries this member had applied above the file's index
  are applied again from the local Raft log, so no committed entry is skipped or applied twice;
- the alarm is cleared (through Raft) only after a new checkpoint shows this member's state hash
  equal to the quorum's; otherwise the member stays fenced and the request fails saying why.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
import shutil
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import grpc.aio

from raftkv.backup.snapshot_file import (
    SNAPSHOT_FORMAT_LMDB,
    SNAPSHOT_FORMAT_METADATA,
    SnapshotFileError,
    StreamCheck,
)
from raftkv.guard.digest import META_APPLY_DIGEST, ApplyDigest
from raftkv.mvcc.backend import BUCKET_META, META_CONSISTENT_INDEX, Backend, BackendConfig
from raftkv.mvcc.errors import BackendCorruptionError
from raftkv.peer.transport import PeerRequestError
from raftkv.proto import rpc_pb2 as pb
from raftkv.proto import rpc_pb2_grpc as pb_grpc
from raftkv.raft.types import EntryType
from raftkv.server.requests import RequestKind

if TYPE_CHECKING:
    from raftkv.server.member import Member

log = logging.getLogger("raftkv.repair")

REPAIR_TIMEOUT = 120.0
FETCH_ATTEMPTS = 3


class RepairError(Exception):
    """The repair could not be done; the message says why (the member stays fenced)."""


class Repairer:
    def __init__(self, member: Member) -> None:
        self.member = member
        self._lock = asyncio.Lock()
        member.transport.register_handler("repair", self._handle_repair)

    async def repair(self, target: int) -> dict[str, Any]:
        """Repair member ``target`` (this one or a peer); returns what was done."""
        if target == self.member.member_id:
            return await self._repair_self()
        if target not in self.member.applier.members:
            raise RepairError(f"member {target:x} is not in the member list")
        try:
            raw = await self.member.transport.request(
                target, "repair", json.dumps({"member_id": target}).encode(), REPAIR_TIMEOUT
            )
        except PeerRequestError as exc:
            raise RepairError(f"member {target:x} could not be reached: {exc}") from None
        answer: dict[str, Any] = json.loads(raw)
        if "error" in answer:
            raise RepairError(str(answer["error"]))
        return answer

    async def _handle_repair(self, peer: int, payload: bytes) -> bytes:
        try:
            result = await self._repair_self()
        except RepairError as exc:
            result = {"error": str(exc)}
        return json.dumps(result).encode()

    # -- the repair of this member -----------------------------------------------------------

    async def _repair_self(self) -> dict[str, Any]:
        if self._lock.locked():
            raise RepairError(f"member {self.member.member_id:x} is already being repaired")
        async with self._lock:
            return await self._repair_locked()

    async def _repair_locked(self) -> dict[str, Any]:
        m = self.member
        me = m.member_id
        if (me, int(pb.CORRUPT)) not in m.applier.alarms and not m.state_broken:
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

    async def _fetch_and_install(self, source: int) -> tuple[int, int] | None:
        """Fetch ``source``'s backend, check it and install it; (index, entries re-applied),
        or None when this member has moved past what it can re-apply (try again)."""
        m = self.member
        workdir = os.path.join(m.data_dir.snap, f"repair-{secrets.token_hex(4)}")
        os.makedirs(workdir)
        try:
            path = os.path.join(workdir, "data.mdb")
            await self._fetch(source, path)
            index, head = await asyncio.to_thread(
                _inspect_backend, workdir, m.applier.backend_config
            )
            await self._check_quorum_digest(index, head)
            await self._wait_log_holds(index)
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
        return index, len(redo)

    async def _fetch(self, source: int, path: str) -> None:
        info = self.member.applier.members.get(source)
        if info is None or not info.client_urls:
            raise RepairError(f"member {source:x} has published no client URL")
        target = _grpc_target(info.client_urls[0])
        check = StreamCheck()
        async with grpc.aio.insecure_channel(
            target, options=[("grpc.max_receive_message_length", 2**31 - 1)]
        ) as channel:
            stub = pb_grpc.MaintenanceStub(channel)
            with open(path, "wb") as f:
                async with asyncio.timeout(REPAIR_TIMEOUT):
                    async for resp in stub.Snapshot(
                        pb.SnapshotRequest(),
                        metadata=((SNAPSHOT_FORMAT_METADATA, SNAPSHOT_FORMAT_LMDB),),
                    ):
                        await asyncio.to_thread(f.write, check.feed(resp.blob))
                await asyncio.to_thread(os.fsync, f.fileno())
        try:
            check.finish()
        except SnapshotFileError as exc:
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

    async def _wait_log_holds(self, index: int) -> None:
        async with asyncio.timeout(self.member.request_timeout):
            while self.member.raft.storage.last_index() < index:
                await asyncio.sleep(0.05)

    async def _verify_and_unfence(self, source: int, index: int, redone: int) -> dict[str, Any]:
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
        m.state_broken = False
        body = pb.AlarmRequest(
            action=pb.AlarmRequest.DEACTIVATE, memberID=m.member_id, alarm=pb.CORRUPT
        ).SerializeToString()
        await m.propose_internal(RequestKind.ALARM, body)
        log.warning(
            "member %x repaired from member %x; state hash %s at raft index %d matches the "
            "quorum; CORRUPT alarm cleared",
            m.member_id,
            source,
            mine.value.hex(),
            at,
        )
        return {
            "member_id": m.member_id,
            "source_id": source,
            "installed_index": index,
            "reapplied_entries": redone,
            "verified_index": at,
            "state_hash": mine.value.hex(),
            "alarm_cleared": True,
        }


def _inspect_backend(workdir: str, config: BackendConfig) -> tuple[int, bytes]:
    """(consistent index, apply digest at it) of a fetched backend, every value CRC-checked."""
    backend = Backend(workdir, config)
    try:
        try:
            for bucket in backend.buckets:
                backend.items(bucket)  # unseals (checks) every value
        except BackendCorruptionError as exc:
            raise RepairError(f"fetched backend is corrupt: {exc}") from None
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
        return index, head
    finally:
        backend.close()


def _grpc_target(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.hostname}:{parts.port}"


def _text(exc: BaseException) -> str:
    if isinstance(exc, grpc.RpcError):
        return f"{exc.code().name}: {exc.details()}"
    return str(exc) or type(exc).__name__
