"""Deliberate bugs in the server layer, injected at run time, to prove the server simulator
catches them.

Owns: ``MUTATIONS`` (name -> what it breaks and its patch) and ``mutation(name)``, a context
manager that monkeypatches this process only and restores everything on exit.  Nothing under
``src/`` is edited.

- ``apply-ignores-consistent-index``: apply does not skip entries at or below the backend's
  consistent index, so entries replayed from the WAL after a crash are applied twice;
- ``read-without-read-index``: a linearizable read is served from the local state without a
  ReadIndex round (stale reads from a partitioned or lagging member);
- ``watch-drops-event``: the watchable store drops the events of some revisions (a watcher
  misses them);
- ``lessor-expires-on-follower``: every member's lessor, not only the leader's, proposes the
  revocation of leases it thinks expired (a follower never sees keepalives: it revokes live
  leases);
- ``lease-revoke-unconfirmed``: the leader proposes the revokes of expired leases without a
  read-index round confirming it still leads (etcd issue 15247: a cut-off leader revokes
  leases its successor kept alive);
- ``leader-renews-unchecked`` (with ``--apply-faults``): the leader renews a lease for a
  follower without checking its fence or catching its applied state up (a fenced leader whose
  apply stopped renews a lease committed entries revoked);
- ``digest-history-forgotten`` (with ``--apply-faults``): a restarted member keeps only its
  apply digest's head, not the persisted history before it (the guard's first version: a
  member that diverged and restarted before it was compared is named at the wrong entry);
- ``wal-skips-fdatasync``: the WAL acknowledges a sync without calling fdatasync (entries a
  member acknowledged are gone after its crash);
- ``fsync-error-ignored``: the Ready loop carries on after the WAL's fdatasync failed (the
  fsyncgate bug);
- and the Raft core's (``tests.simserver.core_mutations``: an old term's entry committed by counting, votes
  without the up-to-date check, a minority's commit, ReadIndex without a heartbeat round or
  before the leader's first commit), run through the members' real core.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable
from typing import Any

from raftkv import errors
from raftkv.guard.digest import DEFAULT_HISTORY, ApplyDigest
from raftkv.mvcc.watchable import WatchableStore
from raftkv.mvcc.write_batch import WriteBatch
from raftkv.proto import rpc_pb2 as pb
from raftkv.raft.types import Ready
from raftkv.server.leases import LEASE_EXPIRY_CHECK_INTERVAL, Leases
from raftkv.server.raft_node import RaftNode
from raftkv.server.reads import ReadBarrier
from raftkv.server.requests import RequestKind
from raftkv.wal import WAL
from tests.simserver.core_mutations import MUTATIONS as CORE_MUTATIONS
from tests.simserver.core_mutations import Mutation, Patch, named_mutation


def _apply_ignores_consistent_index() -> Patch:
    def begin_entry(self: WriteBatch, index: int, term: int) -> bool:
        self._ci = (index, term)
        return True

    return [(WriteBatch, "begin_entry", begin_entry)]


def _read_without_read_index() -> Patch:
    async def wait(self: ReadBarrier) -> None:
        return None

    return [(ReadBarrier, "wait", wait)]


def _watch_drops_event() -> Patch:
    send = WatchableStore._send

    def dropping(self: WatchableStore, w: Any, evs: list[Any], rev: int) -> bool:
        if rev % 11 == 0:
            return True  # as if delivered
        return send(self, w, evs, rev)

    return [(WatchableStore, "_send", dropping)]


def _lessor_expires_on_follower() -> Patch:
    async def run(self: Leases) -> None:
        while True:  # Leases.run without its "only the leader" condition
            await asyncio.sleep(LEASE_EXPIRY_CHECK_INTERVAL)
            lessor = self.applier.lessor
            now = self.applier.clock.monotonic()
            if not lessor.is_primary:
                lessor.promote(self.election_timeout, now)  # keepalives never reach it
            for lease_id in lessor.expired_leases(now):
                body = pb.LeaseRevokeRequest(ID=lease_id).SerializeToString()
                self._spawn(self.proposer.propose_quietly(RequestKind.LEASE_REVOKE, body))

    return [(Leases, "run", run)]


def _lease_revoke_unconfirmed() -> Patch:
    async def run(self: Leases) -> None:
        while True:  # Leases.run proposing at once what the lessor believes expired
            await asyncio.sleep(LEASE_EXPIRY_CHECK_INTERVAL)
            lessor = self.applier.lessor
            if not (self.raft.is_leader and lessor.is_primary):
                continue
            for lease_id in lessor.expired_leases(self.applier.clock.monotonic()):
                body = pb.LeaseRevokeRequest(ID=lease_id).SerializeToString()
                self._spawn(self.proposer.propose_quietly(RequestKind.LEASE_REVOKE, body))

    return [(Leases, "run", run)]


def _leader_renews_unchecked() -> Patch:
    async def renew(self: Leases, peer: int, payload: bytes) -> bytes:
        # A follower's forwarded keepalive renewed at once: no fence, no catching up.
        req = pb.LeaseKeepAliveRequest.FromString(payload)
        try:
            ttl = self._renew_local(req.ID)
        except errors.ERR_LEASE_NOT_FOUND:
            ttl = -1
        return pb.LeaseKeepAliveResponse(ID=req.ID, TTL=ttl).SerializeToString()

    return [(Leases, "_handle_remote_renew", renew)]


def _digest_history_forgotten() -> Patch:
    def load(
        cls: type[ApplyDigest],
        record: bytes | None,
        history: Iterable[tuple[bytes, bytes]],
        *,
        fallback_index: int = 0,
        capacity: int = DEFAULT_HISTORY,
    ) -> ApplyDigest:
        return cls.from_record(record, fallback_index=fallback_index, capacity=capacity)

    return [(ApplyDigest, "load", classmethod(load))]


def _wal_skips_fdatasync() -> Patch:
    def sync(self: WAL) -> None:
        self._dirty = False  # as if synced: nothing is
        if self._offset >= self._segment_size:
            self._cut()

    return [(WAL, "sync", sync)]


def _fsync_error_ignored() -> Patch:
    persist = RaftNode._persist

    async def ignoring(self: RaftNode, rd: Ready) -> None:
        with contextlib.suppress(OSError):
            await persist(self, rd)

    return [(RaftNode, "_persist", ignoring)]


MUTATIONS: dict[str, Mutation] = {
    "apply-ignores-consistent-index": Mutation(
        "entries at or below the consistent index are applied again",
        _apply_ignores_consistent_index,
    ),
    "read-without-read-index": Mutation(
        "linearizable reads served locally, without ReadIndex", _read_without_read_index
    ),
    "watch-drops-event": Mutation(
        "the watchable store drops the events of every eleventh revision", _watch_drops_event
    ),
    "lessor-expires-on-follower": Mutation(
        "followers' lessors expire leases too (they never see keepalives)",
        _lessor_expires_on_follower,
    ),
    "lease-revoke-unconfirmed": Mutation(
        "expired leases revoked by a leader that did not confirm it still leads",
        _lease_revoke_unconfirmed,
    ),
    "leader-renews-unchecked": Mutation(
        "the leader renews a lease a follower forwards without its fence checked or its "
        "applied state caught up",
        _leader_renews_unchecked,
    ),
    "digest-history-forgotten": Mutation(
        "a restarted member keeps only its apply digest's head", _digest_history_forgotten
    ),
    "wal-skips-fdatasync": Mutation("the WAL never calls fdatasync", _wal_skips_fdatasync),
    "fsync-error-ignored": Mutation(
        "the Ready loop carries on after a failed fdatasync", _fsync_error_ignored
    ),
}


SERVER_MUTATIONS = dict(MUTATIONS)
MUTATIONS.update(CORE_MUTATIONS)
"""The server layer's mutations above and the Raft core's (``tests.simserver.core_mutations``): the server
simulator runs the real core, so the core's deliberate bugs are run through it too."""


def mutation(name: str | None) -> contextlib.AbstractContextManager[None]:
    """Apply the server mutation ``name`` (None: nothing) for the duration of the block."""
    return named_mutation(MUTATIONS, name)
