"""An interaction environment for data-driven Raft tests (etcd-io/raft style).

Owns: ``InteractionEnv`` — N RawNodes over MemoryStorage driven by text
commands, with a message queue the test delivers explicitly, partitions, and
human-readable output (Readys, messages, log lines).  Each node's
"application" keeps the list of applied values so snapshots carry real data.

Commands (positional node ids; ``key=value`` options):
  add-nodes N [voters=(..)] [learners=(..)] [index=I] [prevote=B] [checkquorum=B]
            [max-inflight=N] [max-size=N] [read-only=lease] [seed=S]
  campaign ID | propose ID VALUE | propose-conf-change ID (vN|lN|rN|uN)
  deliver-msgs [drop=true] ID.. | process-ready [hold=true] ID.. | stabilize [ID..]
  apply-held ID  (applies and advances the Ready ``process-ready hold=true`` kept:
                  the node steps messages in between, as etcd's node loop does)
  tick-election ID | tick-heartbeat ID | tick ID [n=K]
  partition A B / C | isolate ID | heal
  read-index ID CTX | transfer-leadership from=A to=B | compact ID INDEX
  report-unreachable ID PEER | report-snapshot ID PEER [ok|fail] | restart ID
  status ID | raft-state | raft-log ID | applied ID | log-level (none|info|debug)
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from raftkv.raft import (
    ConfChange,
    ConfChangeType,
    Config,
    ConfState,
    Entry,
    EntryType,
    MemoryStorage,
    Message,
    ProposalDroppedError,
    RaftError,
    RawNode,
    ReadOnlyOption,
    Ready,
    Snapshot,
    SnapshotMetadata,
    StateType,
    decode_conf_change,
)
from raftkv.raft.election import MSG_NAMES
from tests.raft.datadriven import TestData

STATE_NAMES = {
    StateType.FOLLOWER: "StateFollower",
    StateType.CANDIDATE: "StateCandidate",
    StateType.LEADER: "StateLeader",
    StateType.PRE_CANDIDATE: "StatePreCandidate",
}
CC_CODES = {
    ConfChangeType.ADD_NODE: "v",
    ConfChangeType.ADD_LEARNER_NODE: "l",
    ConfChangeType.REMOVE_NODE: "r",
    ConfChangeType.UPDATE_NODE: "u",
}
CC_TYPES = {v: k for k, v in CC_CODES.items()}


def describe_entry(e: Entry) -> str:
    if e.type == EntryType.CONF_CHANGE:
        cc = decode_conf_change(e.data)
        return f"{e.term}/{e.index} EntryConfChange {CC_CODES[cc.type]}{cc.node_id}"
    return f'{e.term}/{e.index} EntryNormal "{e.data.decode()}"'


def describe_conf_state(cs: ConfState) -> str:
    s = f"Voters:[{' '.join(map(str, cs.voters))}]"
    if cs.learners:
        s += f" Learners:[{' '.join(map(str, cs.learners))}]"
    return s


def describe_snapshot(s: Snapshot) -> str:
    m = s.metadata
    return f"Index:{m.index} Term:{m.term} ConfState:{describe_conf_state(m.conf_state)}"


def describe_message(m: Message) -> str:
    s = f"{m.frm}->{m.to} {MSG_NAMES[m.type]} Term:{m.term} Log:{m.log_term}/{m.index}"
    if m.reject:
        s += f" Rejected (Hint: {m.reject_hint})"
    if m.commit:
        s += f" Commit:{m.commit}"
    if m.entries:
        s += " Entries:[" + ", ".join(describe_entry(e) for e in m.entries) + "]"
    if m.snapshot is not None:
        s += f" Snapshot:[{describe_snapshot(m.snapshot)}]"
    if m.context:
        s += f' Context:"{m.context.decode()}"'
    return s


def describe_ready(rd: Ready) -> list[str]:
    out = [f"Ready MustSync={str(rd.must_sync).lower()}:"]
    if rd.soft_state is not None:
        out.append(f"Lead:{rd.soft_state.lead} State:{STATE_NAMES[rd.soft_state.raft_state]}")
    if rd.hard_state is not None:
        hs = rd.hard_state
        out.append(f"HardState Term:{hs.term} Vote:{hs.vote} Commit:{hs.commit}")
    if rd.entries:
        out.append("Entries:")
        out.extend(describe_entry(e) for e in rd.entries)
    if not rd.snapshot.is_empty():
        out.append(f"Snapshot {describe_snapshot(rd.snapshot)}")
    if rd.committed_entries:
        out.append("CommittedEntries:")
        out.extend(describe_entry(e) for e in rd.committed_entries)
    if rd.messages:
        out.append("Messages:")
        out.extend(describe_message(m) for m in rd.messages)
    for rs in rd.read_states:
        out.append(f'ReadState Index:{rs.index} Ctx:"{rs.request_ctx.decode()}"')
    return out


class EnvLogger:
    """Routes the core's log lines into the environment's output."""

    LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warn": logging.WARNING}

    def __init__(self, env: InteractionEnv) -> None:
        self.env = env

    def is_enabled_for(self, level: int) -> bool:
        return level >= self.LEVELS.get(self.env.log_level, logging.CRITICAL)

    def debug(self, msg: str) -> None:
        if self.env.log_level == "debug":
            self.env.emit(f"DEBUG {msg}")

    def info(self, msg: str) -> None:
        if self.env.log_level in ("debug", "info"):
            self.env.emit(f"INFO {msg}")

    def warning(self, msg: str) -> None:
        if self.env.log_level != "none":
            self.env.emit(f"WARN {msg}")


@dataclass
class Node:
    raw: RawNode
    storage: MemoryStorage
    config: Config
    values: list[tuple[int, bytes]] = field(default_factory=list)
    confs: list[tuple[int, ConfState]] = field(default_factory=list)
    applied_index: int = 0
    held: Ready | None = None  # persisted and sent, not yet applied nor advanced


class InteractionEnv:
    def __init__(self) -> None:
        self.nodes: dict[int, Node] = {}
        self.messages: list[Message] = []
        self.out: list[str] = []
        self.indent = ""
        self.log_level = "info"
        self.groups: dict[int, int] = {}  # node -> partition group; empty = healed
        self.logger = EnvLogger(self)

    def emit(self, line: str) -> None:
        self.out.append(self.indent + line)

    def handle(self, td: TestData) -> str:
        self.out = []
        self.indent = ""
        fn: Callable[[TestData], None] | None = getattr(
            self, "cmd_" + td.cmd.replace("-", "_"), None
        )
        if fn is None:
            raise ValueError(f"{td.pos}: unknown command {td.cmd}")
        fn(td)
        return "\n".join(self.out)

    # -- helpers --------------------------------------------------------------------

    def _ids(self, td: TestData) -> list[int]:
        ids = [int(x) for x in td.positional() if x != "/"]
        return ids if ids else sorted(self.nodes)

    @staticmethod
    def _opt(td: TestData, key: str, default: str) -> str:
        a = td.arg(key)
        return a.vals[0] if a is not None and a.vals else default

    def _connected(self, a: int, b: int) -> bool:
        if not self.groups:
            return True
        return self.groups.get(a, -1) == self.groups.get(b, -1)

    # -- setup ----------------------------------------------------------------------

    def cmd_add_nodes(self, td: TestData) -> None:
        n = int(td.positional()[0])
        voters_arg = td.arg("voters")
        learners_arg = td.arg("learners")
        voters = tuple(int(x) for x in voters_arg.vals) if voters_arg else ()
        learners = tuple(int(x) for x in learners_arg.vals) if learners_arg else ()
        index = int(self._opt(td, "index", "1"))
        for _ in range(n):
            nid = len(self.nodes) + 1
            storage = MemoryStorage()
            node = Node(raw=None, storage=storage, config=None)  # type: ignore[arg-type]
            if voters or learners:
                cs = ConfState(voters=voters, learners=learners)
                storage.apply_snapshot(
                    Snapshot(SnapshotMetadata(index=index, term=1, conf_state=cs))
                )
                node.confs.append((index, cs))
                node.applied_index = index
            cfg = Config(
                id=nid,
                storage=storage,
                election_tick=int(self._opt(td, "election", "10")),
                heartbeat_tick=int(self._opt(td, "heartbeat", "1")),
                pre_vote=self._opt(td, "prevote", "true") == "true",
                check_quorum=self._opt(td, "checkquorum", "true") == "true",
                max_inflight_msgs=int(self._opt(td, "max-inflight", "256")),
                max_size_per_msg=int(self._opt(td, "max-size", str(1 << 20))),
                read_only_option=(
                    ReadOnlyOption.LEASE_BASED
                    if self._opt(td, "read-only", "safe") == "lease"
                    else ReadOnlyOption.SAFE
                ),
                seed=int(self._opt(td, "seed", "0")),
                logger=self.logger,
            )
            node.config = cfg
            node.raw = RawNode(cfg)
            self.nodes[nid] = node

    def cmd_restart(self, td: TestData) -> None:
        """Crash and restart: unpersisted state and queued messages to it are lost."""
        for nid in self._ids(td):
            node = self.nodes[nid]
            self.messages = [m for m in self.messages if m.to != nid]
            node.config = dataclasses.replace(node.config, applied=node.applied_index)
            node.raw = RawNode(node.config)

    def cmd_log_level(self, td: TestData) -> None:
        self.log_level = td.positional()[0]

    # -- driving ----------------------------------------------------------------------

    def cmd_campaign(self, td: TestData) -> None:
        self.nodes[self._ids(td)[0]].raw.campaign()

    def cmd_propose(self, td: TestData) -> None:
        pos = td.positional()
        try:
            self.nodes[int(pos[0])].raw.propose(pos[1].encode())
        except ProposalDroppedError as err:
            self.emit(f"error: {err}")

    def cmd_propose_conf_change(self, td: TestData) -> None:
        pos = td.positional()
        code = pos[1]
        cc = ConfChange(type=CC_TYPES[code[0]], node_id=int(code[1:]))
        try:
            self.nodes[int(pos[0])].raw.propose_conf_change(cc)
        except ProposalDroppedError as err:
            self.emit(f"error: {err}")

    def cmd_read_index(self, td: TestData) -> None:
        pos = td.positional()
        self.nodes[int(pos[0])].raw.read_index(pos[1].encode())

    def cmd_transfer_leadership(self, td: TestData) -> None:
        frm = int(self._opt(td, "from", "0"))
        to = int(self._opt(td, "to", "0"))
        self.nodes[frm].raw.transfer_leader(to)

    def cmd_report_unreachable(self, td: TestData) -> None:
        pos = td.positional()
        self.nodes[int(pos[0])].raw.report_unreachable(int(pos[1]))

    def cmd_report_snapshot(self, td: TestData) -> None:
        pos = td.positional()
        ok = len(pos) < 3 or pos[2] == "ok"
        self.nodes[int(pos[0])].raw.report_snapshot(int(pos[1]), ok)

    def _tick(self, nid: int, n: int) -> None:
        for _ in range(n):
            self.nodes[nid].raw.tick()

    def cmd_tick_election(self, td: TestData) -> None:
        for nid in self._ids(td):
            self._tick(nid, self.nodes[nid].config.election_tick)

    def cmd_tick_heartbeat(self, td: TestData) -> None:
        for nid in self._ids(td):
            self._tick(nid, self.nodes[nid].config.heartbeat_tick)

    def cmd_tick(self, td: TestData) -> None:
        n = int(self._opt(td, "n", "1"))
        for nid in self._ids(td):
            self._tick(nid, n)

    def cmd_partition(self, td: TestData) -> None:
        self.groups = {}
        group = 0
        for tok in td.positional():
            if tok == "/":
                group += 1
            else:
                self.groups[int(tok)] = group

    def cmd_isolate(self, td: TestData) -> None:
        nid = self._ids(td)[0]
        self.groups = {i: (1 if i == nid else 0) for i in self.nodes}

    def cmd_heal(self, td: TestData) -> None:
        self.groups = {}

    # -- the Ready loop --------------------------------------------------------------

    def process_ready(self, nid: int, hold: bool = False) -> None:
        """Persist the next Ready and queue its messages; apply and advance unless ``hold``."""
        node = self.nodes[nid]
        if node.held is not None:
            raise ValueError(f"node {nid} holds a Ready: apply-held it first")
        rd = node.raw.ready()
        for line in describe_ready(rd):
            self.emit(line)
        if not rd.snapshot.is_empty():
            snap = rd.snapshot
            node.storage.apply_snapshot(snap)
            vals = snap.data.split(b",") if snap.data else []
            node.values = [(snap.metadata.index, v) for v in vals]
            node.confs = [(snap.metadata.index, snap.metadata.conf_state)]
            node.applied_index = snap.metadata.index
        node.storage.append(rd.entries)
        if rd.hard_state is not None:
            node.storage.set_hard_state(rd.hard_state)
        self.messages.extend(rd.messages)
        if hold:
            node.held = rd
        else:
            self.apply_ready(nid, rd)

    def apply_ready(self, nid: int, rd: Ready) -> None:
        node = self.nodes[nid]
        raw = node.raw
        for e in rd.committed_entries:
            if e.type == EntryType.CONF_CHANGE:
                cs = raw.apply_conf_change(decode_conf_change(e.data))
                node.confs.append((e.index, cs))
            elif e.data:
                node.values.append((e.index, e.data))
            node.applied_index = e.index
        raw.advance(rd)

    def cmd_process_ready(self, td: TestData) -> None:
        hold = self._opt(td, "hold", "false") == "true"
        for nid in self._ids(td):
            self.emit(f"> {nid} handling Ready")
            self.indent = "  "
            self.process_ready(nid, hold)
            self.indent = ""

    def cmd_apply_held(self, td: TestData) -> None:
        for nid in self._ids(td):
            node = self.nodes[nid]
            rd, node.held = node.held, None
            if rd is None:
                raise ValueError(f"node {nid} holds no Ready")
            self.emit(f"> {nid} applying held Ready")
            self.indent = "  "
            self.apply_ready(nid, rd)
            self.indent = ""

    def deliver(self, nid: int, drop: bool) -> int:
        mine = [m for m in self.messages if m.to == nid]
        self.messages = [m for m in self.messages if m.to != nid]
        for m in mine:
            if drop or not self._connected(m.frm, m.to):
                self.emit(f"dropped: {describe_message(m)}")
                continue
            self.emit(describe_message(m))
            try:
                self.nodes[nid].raw.step(m)
            except RaftError as err:
                self.emit(f"error: {err}")
        return len(mine)

    def cmd_deliver_msgs(self, td: TestData) -> None:
        drop = self._opt(td, "drop", "false") == "true"
        for nid in self._ids(td):
            self.deliver(nid, drop)

    def cmd_stabilize(self, td: TestData) -> None:
        ids = self._ids(td)
        while True:
            done = True
            for nid in ids:
                # A node holding a Ready only steps messages until apply-held.
                if self.nodes[nid].held is None and self.nodes[nid].raw.has_ready():
                    done = False
                    self.emit(f"> {nid} handling Ready")
                    self.indent = "  "
                    self.process_ready(nid)
                    self.indent = ""
            for nid in ids:
                if any(m.to == nid for m in self.messages):
                    done = False
                    self.emit(f"> {nid} receiving messages")
                    self.indent = "  "
                    self.deliver(nid, False)
                    self.indent = ""
            if done:
                return

    # -- storage ----------------------------------------------------------------------

    def cmd_compact(self, td: TestData) -> None:
        pos = td.positional()
        node = self.nodes[int(pos[0])]
        index = int(pos[1])
        assert index <= node.applied_index, "can only compact applied entries"
        cs = next(c for i, c in reversed(node.confs) if i <= index)
        data = b",".join(v for i, v in node.values if i <= index)
        node.storage.create_snapshot(index, cs, data)
        node.storage.compact(index)
        self._print_log(node)

    # -- inspection --------------------------------------------------------------------

    def _print_log(self, node: Node) -> None:
        s = node.storage
        fi, li = s.first_index(), s.last_index()
        if li < fi:
            self.emit(f"log is empty: first index={fi}, last index={li}")
            return
        for e in s.entries(fi, li + 1):
            self.emit(describe_entry(e))

    def cmd_raft_log(self, td: TestData) -> None:
        self._print_log(self.nodes[self._ids(td)[0]])

    def cmd_applied(self, td: TestData) -> None:
        for nid in self._ids(td):
            node = self.nodes[nid]
            vals = " ".join(v.decode() for _, v in node.values)
            self.emit(f"{nid}: applied={node.applied_index} values=[{vals}]")

    def cmd_raft_state(self, td: TestData) -> None:
        for nid in sorted(self.nodes):
            r = self.nodes[nid].raw.raft
            if nid in r.trk.voters:
                kind = "Voter"
            elif nid in r.trk.learners:
                kind = "Learner"
            else:
                kind = "Not member"
            self.emit(f"{nid}: {STATE_NAMES[r.state]} ({kind}) Term:{r.term} Lead:{r.lead}")

    def cmd_status(self, td: TestData) -> None:
        st = self.nodes[self._ids(td)[0]].raw.status()
        if not st.progress:
            self.emit(f"{st.id} is not leader")
            return
        for pid in sorted(st.progress):
            p = st.progress[pid]
            line = f"{pid}: State{p.state.name.capitalize()} match={p.match} next={p.next}"
            if p.is_learner:
                line += " learner"
            if p.paused:
                line += " paused"
            if p.pending_snapshot:
                line += f" pendingSnap={p.pending_snapshot}"
            if p.inflight:
                line += f" inflight={p.inflight}"
            self.emit(line)
