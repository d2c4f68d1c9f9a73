"""One seeded simulation of a raftkv cluster running the members' own server code.

Owns: ``SimParams`` (what a run is made of), ``Simulation`` (members, network, clients, the
fault schedule, healing and the checks) and ``SeedResult``.

Contracts:
- the seed decides everything: ``random.Random`` instances derived from it drive the faults,
  the network, each member's entropy and fsync latency, the disk's crash losses and the
  clients; the loop's virtual time is the only clock, so a seed replays exactly
  (``SeedResult.trace`` digests the run: equal seeds give equal digests);
- the fault phase lasts ``duration`` virtual seconds: partitions (symmetric and one-way),
  message loss and duplication, crashes (losing or tearing the WAL's unsynced tail and the
  backend's uncommitted batch) and restarts, clock jumps, failing fsyncs; then everything
  heals: links, loss, every member restarted;
- checked: a member whose fsync failed stops (never carries on); no other member stops by
  itself or fails to restart; after healing every client gets ``final_ops`` answers and every
  member reaches the same applied index with the same state hash within ``heal_timeout``;
  no CORRUPT alarm is raised (none of these faults touches apply); no task of a live member
  leaves an exception nobody retrieved; the clients' history is linearizable.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import random
import shutil
import tempfile
import time
import traceback
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import grpc
import grpc.aio
import lmdb
from grpc.aio import Metadata

from raftkv.api.gateway import GatewayAbort, GatewayContext
from raftkv.app.services import build_services
from raftkv.backup.snapshot_file import SNAPSHOT_FORMAT_LMDB, SNAPSHOT_FORMAT_METADATA, StreamCheck
from raftkv.mvcc.backend import BUCKET_META, META_CONSISTENT_INDEX, unseal
from raftkv.mvcc.errors import BackendCorruptionError
from raftkv.proto import rpc_pb2 as pb
from raftkv.raft.rawnode import RawNode
from raftkv.raft.storage import MemoryStorage
from raftkv.raft.types import Ready, StateType
from raftkv.server.config import ServerConfig
from raftkv.wal import wal as wal_module
from tests.linearizability import check_history
from tests.simserver.apply_faults import AT_REST, ApplyFault, scoped_failpoints
from tests.simserver.apply_faults import KINDS as APPLY_FAULT_KINDS
from tests.simserver.clients import SimClient, call_member, consume_outcome
from tests.simserver.invariants import SafetyMonitor, Violation
from tests.simserver.leases import SimLeaseHolder, check_leases
from tests.simserver.loop import CURRENT_PROCESS, VirtualLoop
from tests.simserver.members import SimMember
from tests.simserver.membership import MembershipChanges
from tests.simserver.network import SimNetwork
from tests.simserver.watchers import SimWatcher, check_watches, store_reference

FAULT_KINDS = (
    "isolate the leader",
    "partition",
    "one-way cut",
    "heal network",
    "lossy network",
    "crash",
    "restart",
    "clock jump",
    "fsync fails",
)
MEMBERSHIP_KINDS = ("add a learner", "promote the learner", "remove a voter")
SMALL_APPENDS_KINDS = ("move the leader",)
"""Added to the draw with ``small_appends`` (a mode of its own, so the older modes' seeds keep
their faults): the operator moves leadership (``Maintenance.MoveLeader``) to another voter."""
MOVE_LEADER_TIMEOUT = 5.0
REPAIR_DEADLINE = 120.0  # virtual seconds the operator keeps asking for a repair
REPAIR_CALL_TIMEOUT = 30.0
APPLY_FAULT_MODE_KINDS = (
    "isolate the leader",
    "partition",
    "one-way cut",
    "heal network",
    "lossy network",
    "crash",
    "restart",
    "clock jump",
)
"""With an apply fault, the other faults are the network's, crashes and clock jumps: a crash
before the fault's batch reached the disk undoes it (``ApplyFault.undone``); after, the
restarted member must still be named at the fault's entry (its digest history survives)."""


@dataclass
class SimParams:
    members: int = 3
    duration: float = 20.0
    faults: bool = True
    clients: int = 3
    watchers: int = 2
    lease_holders: int = 3
    apply_fault: bool = False
    membership: bool = False  # also add learners, promote them, remove voters (--membership)
    # Raft's appends carry few entries (down to one) with few in flight (--small-appends): a
    # new leader repairs a follower's log one round per entry, which opens the windows the
    # core's commit and read-index rules guard (an old term's entry counted on its own).
    small_appends: bool = False
    wal_segment_size: int = 4096  # small: segments are cut and released in every run
    keys: int = 4
    fault_gap: tuple[float, float] = (0.2, 1.5)
    heal_timeout: float = 60.0
    final_ops: int = 2
    snapshot_count: int = 50
    snapshot_catchup_entries: int = 10


@dataclass
class SeedResult:
    seed: int
    failure: str | None = None
    faults: Counter[str] = field(default_factory=Counter)
    operations: int = 0
    answered: int = 0
    network: Counter[str] = field(default_factory=Counter)  # messages lost, duplicated, cut
    wal_bytes_lost: int = 0  # unsynced WAL bytes the crashes took away
    virtual_seconds: float = 0.0
    cpu_seconds: float = 0.0
    trace: str = ""


def _peer_url(i: int) -> str:
    return f"http://127.0.0.1:{23800 + i}"


@contextlib.contextmanager
def _wal_segment_size(params: SimParams) -> Iterator[None]:
    saved = wal_module.DEFAULT_SEGMENT_SIZE
    wal_module.DEFAULT_SEGMENT_SIZE = params.wal_segment_size
    try:
        yield
    finally:
        wal_module.DEFAULT_SEGMENT_SIZE = saved


def raft_limits(seed: int, params: SimParams) -> tuple[int, int]:
    """The members' (max_size_per_msg, max_inflight_msgs) in seed ``seed``: production's, or
    with ``small_appends`` drawn from the seed's own stream."""
    if not params.small_appends:
        return (1 << 20, 512)
    limits = random.Random(f"{seed}-raft-limits")
    return (limits.choice((1, 64, 256)), limits.choice((1, 4, 512)))


class SimulationFailedError(Exception):
    """A check failed; the message says which and how."""


class Simulation:
    def __init__(self, seed: int, params: SimParams | None = None) -> None:
        self.seed = seed
        self.params = params or SimParams()
        self.rng = random.Random(f"{seed}-faults")
        self.loop = VirtualLoop()
        self.network = SimNetwork(self.loop, random.Random(f"{seed}-network"))
        self.network.on_snapshot_arrived = self._snapshot_arrived
        self.members: list[SimMember] = []
        self.clients: list[SimClient] = []
        self.watchers: list[SimWatcher] = []
        self.lease_holders: list[SimLeaseHolder] = []
        self.clock_jumps: list[float] = []  # when the leader's clock jumped
        self._restart_at: dict[int, float] = {}  # member index -> when it comes back
        self.result = SeedResult(seed)
        self.reference: list[Any] = []
        self.apply_faults: list[ApplyFault] = []  # at most one, armed in the fault phase
        # (member incarnation, member ID, first index) each crashed member's guard located
        self.located_earlier: list[tuple[str, int, int]] = []
        self.infected: set[str] = set()  # members a backend copy carried the fault to
        self._holding: set[str] | None = None  # see ``holding``
        # (receiver, snapshot index) -> (sender, index of the state the copy holds)
        self._copies: dict[tuple[int, int], tuple[int, int]] = {}
        self.raft_limits = raft_limits(seed, self.params)
        self.monitor = SafetyMonitor()  # Raft's safety properties, on every member's Readies
        self.safety_violation: str | None = None
        self.verbose = False
        self._trace = hashlib.sha256()
        self.workdir = ""  # the run's temporary directory, once ``_main`` has it

    # -- running ----------------------------------------------------------------------------

    def run(self) -> SeedResult:
        root = "/dev/shm" if os.path.isdir("/dev/shm") else None
        workdir = tempfile.mkdtemp(prefix=f"raftkv-sim-{self.seed}-", dir=root)
        cpu = time.process_time()
        logging.disable(logging.NOTSET if self.verbose else logging.CRITICAL)
        try:
            with (
                scoped_failpoints(self.apply_faults, self._disk_full_now),
                _wal_segment_size(self.params),
            ):
                self.loop.run_until_complete(self._main(workdir))
        except SimulationFailedError as exc:
            self.result.failure = str(exc)
        except Exception as exc:
            frames = traceback.extract_tb(exc.__traceback__)
            ours = [f for f in frames if "raftkv" in f.filename or "tests" in f.filename]
            where = (ours or frames)[-1]
            self.result.failure = (
                f"the simulation raised {exc!r} at {os.path.basename(where.filename)}:"
                f"{where.lineno} ({where.name})"
            )
        finally:
            logging.disable(logging.CRITICAL)  # what closing the killed processes logs
            self.result.virtual_seconds = self.loop.time()
            self.result.network = self.network.faults
            self.result.wal_bytes_lost = sum(m.lost_bytes for m in self.members)
            self.result.trace = self._trace.hexdigest()[:16]
            self._shutdown()
            self.result.cpu_seconds = time.process_time() - cpu
            logging.disable(logging.NOTSET)
            shutil.rmtree(workdir, ignore_errors=True)
        history = [op for c in self.clients for op in c.full_history()]
        self.result.operations = len(history)
        self.result.answered = sum(1 for op in history if op.ret is not None)
        return self.result

    def _shutdown(self) -> None:
        for m in self.members:
            m.crash()
        self.loop.close()

    def note(self, what: str) -> None:
        line = f"{self.loop.time():9.3f} {what}"
        # The run's temporary directory (in a stopped member's error) is not the seed's.
        traced = line.replace(self.workdir, "<workdir>") if self.workdir else line
        self._trace.update(traced.encode())
        if self.verbose:
            print(line)

    async def _main(self, workdir: str) -> None:
        p = self.params
        self.workdir = workdir
        names = [f"m{i}" for i in range(p.members)]
        initial = ",".join(f"{n}={_peer_url(i)}" for i, n in enumerate(names))
        if p.small_appends:
            size, inflight = self.raft_limits
            self.note(
                f"raft appends: at most {size} bytes (one entry at least), {inflight} in flight"
            )
        for i in range(p.members):
            self.members.append(self._sim_member(i, initial, "new"))
        await self._start_all()
        self.membership = MembershipChanges(
            loop=self.loop,
            members=self.members,
            rng=random.Random(f"{self.seed}-operator"),
            new_member=lambda i, initial: self._sim_member(i, initial, "existing"),
            peer_url=_peer_url,
            note=self.note,
        )
        for i in range(p.clients):
            client = SimClient(
                index=i,
                loop=self.loop,
                members=self.members,
                rng=random.Random(f"{self.seed}-client-{i}"),
                keys=p.keys,
            )
            self.clients.append(client)
            client.start()
        for i in range(p.watchers):
            watcher = SimWatcher(
                index=i,
                loop=self.loop,
                members=self.members,
                rng=random.Random(f"{self.seed}-watcher-{i}"),
            )
            self.watchers.append(watcher)
            watcher.start()
        for i in range(p.lease_holders):
            holder = SimLeaseHolder(
                index=i,
                loop=self.loop,
                members=self.members,
                rng=random.Random(f"{self.seed}-lease-holder-{i}"),
            )
            self.lease_holders.append(holder)
            holder.start()
        end = self.loop.time() + p.duration
        arm_at = self.loop.time() + self.rng.uniform(1.0, p.duration / 2)
        kinds: tuple[str, ...] = APPLY_FAULT_MODE_KINDS if p.apply_fault else FAULT_KINDS
        if p.membership:
            kinds = kinds + MEMBERSHIP_KINDS
        if p.small_appends:
            kinds = kinds + SMALL_APPENDS_KINDS
        while self.loop.time() < end:
            await asyncio.sleep(self.rng.uniform(*p.fault_gap))
            self._check_stops()
            self._restart_due()
            if p.apply_fault and self.loop.time() >= arm_at and not self.apply_faults:
                self._arm_apply_fault()
            if p.faults:
                self._inject(self.rng.choice(kinds))
        await self._heal()
        self._check_final()

    def _arm_apply_fault(self) -> None:
        """Arm the seed's one apply fault on a running member (none running: at the next
        fault step)."""
        running = [m for m in self.members if m.up]
        if not running:
            return
        m = self.rng.choice(running)
        assert m.process is not None and m.member is not None
        applier = m.member.applier
        fault = ApplyFault(
            self.rng.choice(APPLY_FAULT_KINDS), m.name, m.process, lambda: applier.applying
        )
        self.apply_faults.append(fault)
        self.result.faults[fault.kind] += 1
        self.note(f"apply fault {fault.kind} armed on {m.name}")

    @property
    def diverged(self) -> SimMember | None:
        """The member an apply fault hit (once it fired), unless a crash undid the fault."""
        for f in self.apply_faults:
            if f.fired and not f.undone:
                return next(m for m in self.members if m.name == f.member)
        return None

    @property
    def faulted(self) -> SimMember | None:
        """The member an apply fault hit, even if a crash undid it later: until then it may
        have answered, watched and alarmed from the faulty state, so none of that is evidence
        against the cluster."""
        for f in self.apply_faults:
            if f.fired:
                return next(m for m in self.members if m.name == f.member)
        return None

    @property
    def tainted(self) -> set[str]:
        """The members whose answers, watches and alarms are not evidence against the
        cluster: the member the fault hit (even if a crash undid it: it may have answered from
        it) and every member a backend copy ever carried the fault to."""
        bad = self.faulted
        return set() if bad is None else {bad.name, *self.infected}

    def holding(self) -> set[str]:
        """The members whose state holds the fault now: the member it hit (unless a crash
        undid it) and those a backend copy carried it to, until a clean copy (a snapshot, a
        repair) replaced their state."""
        fault = next((f for f in self.apply_faults if f.fired), None)
        if fault is None or fault.undone:
            return set()
        if self._holding is None:
            self._holding = {fault.member}
        return self._holding

    def _snapshot_arrived(self, sender: int, receiver: int, index: int, path: str) -> None:
        """A backend copy for the Raft snapshot at ``index`` reached ``receiver``: remember
        its sender and the index of the state it holds until the receiver installs it (Raft
        may ignore it)."""
        self._copies[(receiver, index)] = (sender, _copy_index(path))

    def _snapshot_installed(self, receiver: int, index: int) -> None:
        """``receiver`` installs the Raft snapshot at ``index``: its state is now the copy's,
        with the fault if the sender held it when it made the copy (a copy sent unconfirmed,
        when no majority of voters could vouch for it), clean otherwise (also a repair's, from
        a healthy voter; or a copy of a state from before the faulted entry)."""
        sender, copied = self._copies.pop((receiver, index), (None, 0))
        holding = self.holding()
        names = {m.known_id: m.name for m in self.members}
        src, dst = names.get(sender), names.get(receiver)
        if not holding or dst is None:
            return
        fault = next(f for f in self.apply_faults if f.fired)
        if src in holding and (fault.index is None or copied >= fault.index):
            holding.add(dst)
            self.infected.add(dst)
            self.note(f"{src}'s copy at index {index} carries the fault to {dst}")
        else:
            holding.discard(dst)

    def _on_crash(self, m: SimMember) -> None:
        """A member is crashing: what its guard located is kept (a later check still sees it);
        a fault of its whose entry's batch is not on disk is undone (the restarted member
        applies that entry again, without a fault)."""
        guard = getattr(m.member, "guard", None)
        if guard is not None:
            for member_id, index in guard.counters.last_divergence.items():
                self.located_earlier.append((f"{m.name}#{m.incarnation}", member_id, index))
        for f in self.apply_faults:
            if not f.fired or f.undone or f.durable or f.member != m.name:
                continue
            assert f.index is not None
            member = m.member
            if member is None or not hasattr(member, "applier"):
                continue
            stored = member.applier.backend.get_durable(BUCKET_META, META_CONSISTENT_INDEX)
            if stored is not None and int.from_bytes(stored, "big") >= f.index:
                f.durable = True
                continue
            f.undone = True
            self.result.faults["apply fault undone by a crash"] += 1
            self.note(f"{f.kind} at entry {f.index} undone: {m.name} crashed before its batch")

    def _sim_member(self, i: int, initial_cluster: str, state: str) -> SimMember:
        """Member ``m<i>`` (peer URL ``_peer_url(i)``), not started."""
        p = self.params
        cfg = ServerConfig(
            name=f"m{i}",
            data_dir=os.path.join(self.workdir, f"m{i}"),
            listen_peer_urls=(_peer_url(i),),
            initial_advertise_peer_urls=(_peer_url(i),),
            listen_client_urls=(f"http://127.0.0.1:{23790 + i}",),
            advertise_client_urls=(f"http://127.0.0.1:{23790 + i}",),
            initial_cluster=initial_cluster,
            initial_cluster_state=state,
            snapshot_count=p.snapshot_count,
            snapshot_catchup_entries=p.snapshot_catchup_entries,
            corrupt_check_time_s=5.0,
            initial_corrupt_check=False,
            raft_max_size_per_msg=self.raft_limits[0],
            raft_max_inflight_msgs=self.raft_limits[1],
        )
        m = SimMember(index=i, config=cfg, loop=self.loop, network=self.network, seed=self.seed)
        m.on_crash = self._on_crash
        m.ready_observer = self._observe_ready
        m.fetch_backend = self._fetch_backend
        return m

    def _observe_ready(
        self, member_id: int, rd: Ready, node: RawNode, storage: MemoryStorage
    ) -> None:
        """Feed the safety monitor what a member made durable, committed and led: election
        safety, log matching, committed entries never changing, leader completeness.  The
        first violation fails the seed at the next check (it is not raised into the member)."""
        if self.safety_violation is not None:
            return
        mon, raft = self.monitor, node.raft
        if not rd.snapshot.is_empty():
            self._snapshot_installed(member_id, rd.snapshot.metadata.index)
        try:
            if not rd.snapshot.is_empty():
                mon.on_snapshot(member_id, rd.snapshot)
            if rd.entries:
                mon.on_durable_entries(member_id, rd.entries, storage)
            if rd.hard_state is not None:
                mon.on_durable_commit(member_id, rd.hard_state.commit, storage)
            if rd.soft_state is not None and rd.soft_state.raft_state == StateType.LEADER:
                # The term of this Ready (just persisted), not the node's: messages stepped
                # while the Ready was being persisted may have moved it on already.
                mon.on_leader(member_id, storage.hard_state().term)
            if raft.state == StateType.LEADER:
                mon.on_leader_persisted(member_id, raft.term, storage)
            if rd.committed_entries:
                mon.on_committed_entries(member_id, rd.committed_entries)
        except Violation as exc:
            self.safety_violation = f"safety: {exc} (member {member_id:x})"
            self.note(self.safety_violation)

    async def _start_all(self) -> None:
        """Start every member that is not running (and was not removed or broken); each must
        start."""
        for m in self.members:
            if m.removed:
                m.crash()  # out of the cluster: whatever it still runs ends here
            elif not m.up and not m.broken:
                m.crash()
                task = m.start()
                done, _ = await asyncio.wait([task], timeout=30.0)
                if done and not m.started and self._refused_corrupt_start(m):
                    continue
                if not done or not m.started:
                    why = "timed out" if not done else m.stopped_because
                    raise SimulationFailedError(f"{m.name} did not start: {why}")
                self.note(f"started {m.name}#{m.incarnation}")

    # -- faults -----------------------------------------------------------------------------

    def _inject(self, kind: str) -> None:
        rng = self.rng
        net = self.network
        up = [m for m in self.members if m.up]
        down = [m for m in self.members if not m.up and not m.removed and not m.broken]
        ids = [m.member_id for m in up]
        leaders = [m for m in up if m.member is not None and m.member.raft.is_leader]
        if kind in MEMBERSHIP_KINDS:
            if not self.membership.start(kind):
                return
            what = f"operator: {kind}"
        elif kind == "isolate the leader" and leaders and len(ids) >= 2:
            lead = leaders[0].member_id
            net.partition([lead], [i for i in ids if i != lead])
            what = f"isolate the leader {leaders[0].name}"
        elif kind == "partition" and len(ids) >= 2:
            side = rng.sample(ids, rng.randint(1, len(ids) // 2))
            net.partition(side, [i for i in ids if i not in side])
            what = f"partition {sorted(side)}"
        elif kind == "one-way cut" and len(ids) >= 2:
            a, b = rng.sample(ids, 2)
            net.cut(a, b)
            what = f"cut {a:x} -> {b:x}"
        elif kind == "heal network":
            net.heal()
            what = "network healed"
        elif kind == "lossy network":
            net.params.loss = rng.choice((0.0, 0.05, 0.2))
            net.params.duplicate = rng.choice((0.0, 0.05))
            what = f"loss {net.params.loss} duplicate {net.params.duplicate}"
        elif kind == "crash" and up:
            m = rng.choice(up)
            m.crash()
            self._restart_later(m)
            what = f"crash {m.name}"
        elif kind == "restart" and down:
            m = rng.choice(down)
            m.crash()
            m.start()
            what = f"restart {m.name}#{m.incarnation}"
        elif kind == "move the leader" and leaders and len(up) >= 2:
            leader = leaders[0]
            target = rng.choice([m for m in up if m is not leader and not m.learner])
            self.loop.create_task(self._move_leader(leader, target))
            what = f"operator: move the leader {leader.name} -> {target.name}"
        elif kind == "clock jump" and up:
            m = rng.choice(up)
            jump = rng.uniform(0.5, 5.0)
            m.clock.jump(jump)
            if m.member is not None and m.member.raft.is_leader:
                # The leader's lessor keeps the expiries: leases may now expire early.
                self.clock_jumps.append(self.loop.time())
            what = f"clock of {m.name} +{jump:.2f}s"
        elif kind == "fsync fails" and up:
            m = rng.choice(up)
            assert m.worker is not None
            # Which disk failure, from the member's own disk stream: the main stream (and so
            # every other fault of the seed) is the same whichever it is.
            if m.disk_rng.random() < 0.5:
                m.worker.fail_next = True
                what = f"next fsync of {m.name} fails"
            else:
                kind = "disk full"
                m.worker.no_space_next = True
                what = f"next WAL write of {m.name} finds the disk full"
        else:
            return
        self.result.faults[kind] += 1
        self.note(what)

    def _refused_corrupt_start(self, m: SimMember) -> bool:
        """Whether ``m`` failed to start because a value flipped at rest is on its disk: it
        names the value itself (bucket and key) and refuses to run on it, as etcd refuses a
        damaged backend; it is ``broken`` from then on."""
        flipped = any(
            f.fired and not f.undone and f.kind == AT_REST and f.member == m.name
            for f in self.apply_faults
        )
        if not flipped or not isinstance(m.start_error, BackendCorruptionError):
            return False
        m.crash()
        m.broken = True
        self.result.faults["bit flip named at start-up"] += 1
        self.note(f"{m.name} refused to start: {m.start_error}")
        return True

    async def _move_leader(self, leader: SimMember, target: SimMember) -> None:
        """The operator's ``MoveLeader`` to ``leader``; a transfer that completed is counted."""
        req = pb.MoveLeaderRequest(targetID=target.member_id)
        answer, outcome = await call_member(
            self.loop,
            leader,
            lambda svc, ctx: svc.maintenance.MoveLeader(req, ctx),
            MOVE_LEADER_TIMEOUT,
            "operator",
        )
        self.note(f"  move the leader to {target.name}: {outcome}")
        if answer is not None:
            self.result.faults["leader moved"] += 1

    def _check_stops(self) -> None:
        """A member whose fsync failed must stop within a second; no other stops by itself.
        (And no Raft safety property was broken.)"""
        if self.safety_violation is not None:
            raise SimulationFailedError(self.safety_violation)
        now = self.loop.time()
        for m in self.members:
            member = m.member
            if member is None:
                continue
            failed_at = m.worker.failed_at if m.worker is not None else None
            if m.stopped_because is not None and not m.started:
                if self._refused_corrupt_start(m):
                    continue
                why = m.stopped_because  # a join that could not reach the cluster yet
                m.crash()
                self._restart_later(m)
                self.note(f"{m.name} {why}")
                if m.config.initial_cluster_state != "existing":
                    raise SimulationFailedError(f"{m.name} {why}")
            elif member.stopped.is_set():
                why = str(member.fatal_error)
                m.crash()
                self.note(f"{m.name} stopped: {why}")
                if (m.removed or m.removal_asked) and "removed from the cluster" in why:
                    m.removed = True  # also when the answer to the removal was lost
                    continue
                self._restart_later(m)
                if failed_at is None:
                    raise SimulationFailedError(f"{m.name} stopped by itself: {why}")
            elif failed_at is not None and now - failed_at > 1.0:
                raise SimulationFailedError(
                    f"{m.name} carried on after its fsync failed at {failed_at:.3f}s"
                )

    def _restart_later(self, m: SimMember) -> None:
        """As a supervisor would: a crashed or stopped member comes back a while later."""
        self._restart_at[m.index] = self.loop.time() + self.rng.uniform(0.5, 4.0)

    def _restart_due(self) -> None:
        now = self.loop.time()
        for m in self.members:
            due = self._restart_at.get(m.index)
            if due is not None and due <= now:
                del self._restart_at[m.index]
                if not m.up and not m.removed and not m.broken:
                    m.crash()
                    m.start()
                    self.note(f"supervisor restarts {m.name}#{m.incarnation}")

    # -- healing and the checks ---------------------------------------------------------------

    async def _heal(self) -> None:
        p = self.params
        self.network.heal()
        self.note("heal: network healed, every member restarted")
        self._check_stops()
        for m in self.members:
            if m.worker is not None:
                m.worker.fail_next = m.worker.no_space_next = False
        await self.membership.settle()
        await self._start_all()
        for c in self.clients:
            c.stopping = True
        for w in self.watchers:
            w.stopping = True
        for h in self.lease_holders:
            h.stopping = True
        deadline = self.loop.time() + p.heal_timeout
        finals = [
            c.process.spawn(self.loop, c.final_ops(p.final_ops, deadline)) for c in self.clients
        ]
        results = await asyncio.gather(*finals)
        self._check_stops()
        if not all(results):
            raise SimulationFailedError(
                f"liveness: clients got no answers {p.heal_timeout}s after healing "
                f"({[c.outcomes.most_common(3) for c in self.clients]})"
            )
        while True:
            parked = self._parked()
            applied = {
                m.name: m.member.applier.applied_index()
                for m in self.members
                if m.member and not m.removed and m is not parked
            }
            if len(set(applied.values())) == 1 and any(
                m.member is not None and m.member.raft.is_leader for m in self.members
            ):
                break
            if self.loop.time() > deadline:
                if self._undecidable(applied):
                    return
                raise SimulationFailedError(f"liveness: applied indexes never met: {applied}")
            await asyncio.sleep(0.05)
            self._check_stops()
        bad = self.diverged
        holding = self.holding()
        healthy = [m for m in self.members if m.name not in holding and not m.removed]
        tied = bad is not None and bool(healthy) and self._tied_by_copies(holding)
        if not healthy or (len(holding) > len(self.members) // 2 and not tied):
            raise SimulationFailedError(
                f"the fault reached a majority through unconfirmed backend copies: "
                f"{sorted(holding)} hold it"
            )
        self.reference = store_reference(healthy[0])
        hashes = {}
        for m in self.members:
            if m.removed or m.broken:
                continue
            assert m.member is not None
            try:
                sh = m.member.applier.state_hash_deferred()()
            except BackendCorruptionError:
                hashes[m.name] = (m.member.applier.applied_index(), "unreadable")
                continue
            hashes[m.name] = (sh.applied_index, sh.value.hex())
        self.note(f"converged at index {hashes[healthy[0].name][0]}")
        if len({hashes[m.name] for m in healthy}) != 1:
            raise SimulationFailedError(f"state hashes differ after healing: {hashes}")
        if tied:
            self.result.faults["apply fault undecidable, unconfirmed copies"] += 1
            self.note(f"undecidable: {sorted(holding)} hold the fault; unconfirmed copies tie")
        elif bad is not None:
            await self._check_named(bad, hashes, deadline)
        await self._repair_fenced()

    def _tied_by_copies(self, holding: set[str]) -> bool:
        """The outcome of an apply fault when a member's state went to another unconfirmed
        (no other voter answered in time): its receiver keeps the copy's vouch
        (``raftkv.guard.vouch``) and speaks with its origin's voice, so when neither the
        members holding the fault nor the others are a majority of distinct voices, the guard
        names nobody (the healthy voters included).  With more voters one side keeps a
        majority of voices and the faulty members are named (``_check_named``)."""
        voters = [m for m in self.members if not m.removed and m.member is not None]
        quorum = len(voters) // 2 + 1
        faulty = [m for m in voters if m.name in holding]
        others = [m for m in voters if m.name not in holding]
        if max(len(faulty), len(others)) < quorum:
            return False  # no side is a majority even counting members
        return all(len({_voice(m) for m in side}) < quorum for side in (faulty, others))

    def _disk_full_now(self) -> bool:
        """The ``walNoSpace`` failpoint: fires once for a member armed with ``no_space_next``,
        in that member's process."""
        process = CURRENT_PROCESS.get()
        for m in self.members:
            w = m.worker
            if m.process is process and w is not None and w.no_space_next:
                w.no_space_next = False
                w.failed_at = self.loop.time()
                return True
        return False

    def _parked(self) -> SimMember | None:
        """The member whose apply stopped on a corrupt stored value (a disk bit flip): by
        design it applies nothing more until it is repaired, or a Raft snapshot replaces its
        state."""
        bad = self.diverged
        if bad is not None and bad.member is not None and bad.member.raft.apply_parked:
            return bad
        return None

    def _undecidable(self, applied: dict[str, int]) -> bool:
        """The outcomes of an apply fault where members may stay apart: of three voters, one
        lags and needs a snapshot while no majority of independent voices can tell which state
        is right, so no snapshot is shipped (it could spread the fault, or overwrite the one
        witness against it) and nobody is named; the lagging member waits for an operator.
        Either the two at the head disagree (one of them the faulty member), or the faulty
        member lags and neither the members holding the fault nor the others are a majority
        of voices (the two at the head are one voice, one holding an unconfirmed copy of the
        other's state, ``raftkv.guard.vouch``; or one of them holds a copy of the faulty
        member's state).  Anything else that keeps members apart is a liveness failure."""
        bad = self.diverged
        if bad is None:
            return False
        head = max(applied.values())
        lagging = [name for name, index in applied.items() if index < head]
        if len(lagging) != 1 or len(applied) != 3:
            return False
        if bad.name not in lagging:
            self.result.faults["apply fault undecidable, a voter lagging"] += 1
            self.note(f"undecidable: {bad.name} diverged while {lagging[0]} lags; nothing shipped")
            healthy = next(m for m in self.members if m.name not in (bad.name, lagging[0]))
        else:
            # The faulty member lags; the members holding the fault (it and the receivers of
            # its unconfirmed copies) and the others are no majority of voices either way.
            holding = self.holding()
            if not self._tied_by_copies(holding):
                return False
            at_head = [m for m in self.members if m.name in applied and m.name not in lagging]
            self.result.faults["apply fault undecidable, unconfirmed copies"] += 1
            self.note(f"undecidable: {bad.name} lags, no side is a majority of voices")
            healthy = next(m for m in at_head if m.name not in holding)
        self.reference = store_reference(healthy)
        return True

    async def _check_named(
        self, bad: SimMember, hashes: dict[str, tuple[int, str]], deadline: float
    ) -> None:
        """The guard names the member the apply fault hit, and the entry it hit first (unless a
        snapshot from a healthy peer replaced that member's state before anyone could compare:
        then its state hash is the others' again)."""
        fault = self.apply_faults[0]
        if bad.broken:
            return  # it named the flipped value itself, refusing to start on it
        wanted = (bad.member_id, pb.CORRUPT)

        def located() -> dict[str, int]:
            found = {
                who: index
                for who, member_id, index in self.located_earlier
                if member_id == bad.member_id
            }
            found.update(
                (
                    f"{m.name}#{m.incarnation}",
                    m.member.guard.counters.last_divergence[bad.member_id],
                )
                for m in self.members
                if m.member is not None and bad.member_id in m.member.guard.counters.last_divergence
            )
            return found

        def alarmed() -> bool:
            parked = self._parked()  # it cannot apply the alarm: it fenced itself
            return all(
                m.member is not None and wanted in m.member.applier.alarms
                for m in self.members
                if m is not parked
            )

        at_rest = fault.kind == AT_REST  # no apply digest shows it: nothing to locate
        while not (alarmed() and (at_rest or located())):
            if self.loop.time() > deadline:
                break
            await asyncio.sleep(0.05)
        holding = self.holding()
        healthy = next(
            m for m in self.members if m.name not in holding and m is not bad and not m.removed
        )
        if at_rest:
            if alarmed():
                self.result.faults["bit flip named"] += 1
                self.note(f"the guard named {bad.name} for a value corrupted at rest")
                return
            if hashes[bad.name] == hashes[healthy.name]:
                self.result.faults["bit flip erased by a snapshot"] += 1
                self.note("the flipped value was replaced by a snapshot before it was read")
                return
            raise SimulationFailedError(f"{fault.kind} on {bad.name}: the guard never named it")
        if not alarmed():
            if hashes[bad.name] == hashes[healthy.name] and not located():
                self.result.faults["apply fault erased by a snapshot"] += 1
                self.note(f"{fault.kind} at entry {fault.index} was erased by a snapshot")
                return
            raise SimulationFailedError(
                f"{fault.kind} hit {bad.name} at entry {fault.index}; the guard never named it"
            )
        firsts = located()
        if set(firsts.values()) != {fault.index}:
            raise SimulationFailedError(
                f"{fault.kind} hit {bad.name} at entry {fault.index}; the guard found {firsts}"
            )
        self.result.faults["apply fault named at its entry"] += 1
        self.note(f"the guard named {bad.name}, first divergent entry {fault.index}")

    async def _repair_fenced(self) -> None:
        """Every member named diverged (under a CORRUPT alarm, fenced by a verdict, or parked
        on a corrupt value) must be tainted by the fault, and is repaired as an operator would."""
        running = [m for m in self.members if m.member is not None and not m.removed]
        alarmed = {
            mid
            for m in running
            if m.member
            for mid, a in m.member.applier.alarms
            if a == pb.CORRUPT
        }
        fenced = [
            m
            for m in running
            if m.member is not None
            and (m.member.fence.self_alarmed() or m.member.member_id in alarmed)
        ]
        innocent = [m.name for m in fenced if m.name not in self.tainted]
        if innocent:
            raise SimulationFailedError(f"false CORRUPT alarm: {innocent} named, no fault reached")
        for m in fenced:
            await self._repair(m)

    async def _repair(self, bad: SimMember) -> None:
        """The operator runs ``raftkv member repair <ID>`` (the RepairMember call, on the
        leader) until it succeeds; then the member must be unfenced, its CORRUPT alarm gone from
        every member, and its state hash the others' at the same applied index."""
        deadline = self.loop.time() + REPAIR_DEADLINE
        while True:
            outcome = await self._ask_repair(bad)
            self.note(f"  repair of {bad.name}: {outcome}")
            if outcome == "ok":
                break
            if self.loop.time() > deadline:
                raise SimulationFailedError(f"repair of {bad.name} never succeeded: {outcome}")
            await asyncio.sleep(1.0)
            self._check_stops()
        wanted = (bad.member_id, pb.CORRUPT)
        while True:
            running = [m for m in self.members if m.member is not None and not m.removed]
            applied = {m.member.applier.applied_index() for m in running if m.member}
            if (
                len(applied) == 1
                and bad.member is not None
                and not bad.member.fence.is_fenced()
                and all(wanted not in m.member.applier.alarms for m in running if m.member)
            ):
                break
            if self.loop.time() > deadline:
                raise SimulationFailedError(
                    f"{bad.name} repaired but not back: applied {applied}, fenced "
                    f"{bad.member is not None and bad.member.fence.is_fenced()}"
                )
            await asyncio.sleep(0.05)
            self._check_stops()
        hashes = {
            m.name: m.member.applier.state_hash_deferred()().value.hex()
            for m in self.members
            if m.member is not None and not m.removed
        }
        if len(set(hashes.values())) != 1:
            raise SimulationFailedError(f"state hashes differ after the repair: {hashes}")
        self.holding().discard(bad.name)
        self.result.faults["repaired"] += 1
        self.note(f"{bad.name} repaired: unfenced, no alarm, the others' state hash")

    async def _ask_repair(self, bad: SimMember) -> str:
        """One ``member repair`` request to the leader; "ok" or what went wrong."""
        leader = next(
            (m for m in self.members if m.up and m.member is not None and m.member.raft.is_leader),
            None,
        )
        if leader is None or leader.member is None or leader.process is None:
            return "no leader"
        task = leader.process.spawn(self.loop, leader.member.repairer.repair(bad.member_id))
        done, _ = await asyncio.wait([task], timeout=REPAIR_CALL_TIMEOUT)
        if not done:
            task.cancel()
            task.add_done_callback(consume_outcome)
            return "no answer"
        exc = task.exception()
        return "ok" if exc is None else f"{type(exc).__name__}: {exc}"

    async def _fetch_backend(
        self, url: str, path: str, *, config: ServerConfig, token: str | None, timeout: float
    ) -> None:
        """Repair's fetch (``MemberEnvironment.fetch_backend``): the source member's own
        Maintenance.Snapshot stream in the LMDB format, run in its process as a gRPC call
        would, checked against its SHA-256 trailer.  A call the source ends with a status is
        the RpcError gRPC would raise; a source that is down refuses the connection."""
        await asyncio.sleep(self.network.delay())
        source = next(
            (m for m in self.members if m.up and url in m.config.advertise_client_urls), None
        )
        if source is None or source.member is None or source.process is None:
            raise OSError(f"connect to {url}: connection refused")
        metadata = [(SNAPSHOT_FORMAT_METADATA, SNAPSHOT_FORMAT_LMDB)]
        if token:
            metadata.append(("token", token))
        services = build_services(source.member)

        async def stream() -> list[bytes]:
            ctx: Any = GatewayContext(metadata, {}, "repair")  # a servicer context
            return [r.blob async for r in services.maintenance.Snapshot(pb.SnapshotRequest(), ctx)]

        task = source.process.spawn(self.loop, stream())
        done, _ = await asyncio.wait([task], timeout=timeout)
        if not done:
            task.cancel()
            task.add_done_callback(consume_outcome)
            raise TimeoutError(f"snapshot from {url}: no answer in {timeout}s")
        exc = task.exception()
        if isinstance(exc, GatewayAbort):
            raise grpc.aio.AioRpcError(exc.code, Metadata(), Metadata(), details=exc.message)
        if exc is not None:
            raise OSError(f"snapshot from {url}: {exc!r}")
        await asyncio.sleep(self.network.delay())
        check = StreamCheck()
        with open(path, "wb") as f:
            for blob in task.result():
                f.write(check.feed(blob))
        check.finish()

    def _check_final(self) -> None:
        tainted = self.tainted
        tainted_ids = {m.known_id for m in self.members if m.name in tainted}
        for m in self.members:
            if m.removed or m.broken:
                continue
            assert m.member is not None
            corrupt = [
                a for a in m.member.applier.alarms if a[1] == pb.CORRUPT and a[0] not in tainted_ids
            ]
            if corrupt:
                raise SimulationFailedError(
                    f"false CORRUPT alarm on {m.name}: {[f'{mid:x}' for mid, _ in corrupt]}"
                )
        if self.loop.unhandled:
            ctx = self.loop.unhandled[0]
            raise SimulationFailedError(
                f"{len(self.loop.unhandled)} exception(s) nobody retrieved, first: "
                f"{ctx.get('message')} {ctx.get('exception')!r} in {ctx.get('task') or ctx.get('future')}"
            )
        problems = check_watches(
            [s for w in self.watchers for s in w.streams], self.reference, tainted
        )
        if problems:
            raise SimulationFailedError(
                f"watch guarantees broken ({len(problems)}): " + "; ".join(problems[:3])
            )
        problems = check_leases(self.lease_holders, self.clock_jumps, tainted)
        if problems:
            raise SimulationFailedError(
                f"leases expired early ({len(problems)}): " + "; ".join(problems[:3])
            )
        leases = sum(len(h.leases) for h in self.lease_holders)
        probes = sum(len(lease.probes) for h in self.lease_holders for lease in h.leases)
        self.note(f"leases: {leases} granted, {probes} reads of their keys, none early")
        streams = sum(len(w.streams) for w in self.watchers)
        events = sum(len(s.events) for w in self.watchers for s in w.streams)
        self.note(f"watches: {streams} streams, {events} events, as the store's history")
        history = [op for c in self.clients for op in c.full_history(tainted)]
        check = check_history(history)
        if not check.ok:
            raise SimulationFailedError(f"not linearizable: {check.explanation}")
        self.note(f"linearizable: {len(history)} operations")


def _copy_index(path: str) -> int:
    """The consistent index of a backend copy (the Raft index whose state it holds)."""
    env = lmdb.open(path, subdir=False, readonly=True, lock=False, max_dbs=64)
    try:
        db = env.open_db(BUCKET_META.encode(), create=False)
        with env.begin(db=db) as txn:
            stored = txn.get(META_CONSISTENT_INDEX)
    finally:
        env.close()
    if stored is None:
        return 0
    return int.from_bytes(unseal(BUCKET_META, META_CONSISTENT_INDEX, stored), "big")


def _voice(m: SimMember) -> int:
    """Whose applies a running member's state stands for: its own, or the origin of the
    unconfirmed copy it holds (``raftkv.guard.vouch``)."""
    assert m.member is not None
    vouch = m.member.applier.copy_vouch
    return vouch.origin if vouch is not None else m.member.member_id
