"""Plain, immutable records exchanged with the Raft core.

Owns: entries, hard state, configuration state, snapshots, messages, conf
changes, read states and the ``Ready`` batch.  These are the only values that
cross the boundary between the pure core and the I/O around it; their binary
encoding lives in ``raftkv.raft.codec``.

Contracts:
- every record is a frozen, slotted dataclass: safe to share between the core,
  the persistence layer and the transport without copying;
- sequences are tuples, never lists, so a record can never be mutated after it
  left the core;
- node IDs are positive 64-bit integers; ``NONE`` (0) means "no node".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum

NONE = 0
"""The node ID meaning "nobody" (no leader, no vote)."""


class MessageType(IntEnum):
    """Message kinds, numbered as etcd-io/raft's raftpb.MessageType."""

    MSG_HUP = 0  # local: start an election
    MSG_BEAT = 1  # local: leader sends heartbeats
    MSG_PROP = 2  # proposal (local, or forwarded by a follower)
    MSG_APP = 3
    MSG_APP_RESP = 4
    MSG_VOTE = 5
    MSG_VOTE_RESP = 6
    MSG_SNAP = 7
    MSG_HEARTBEAT = 8
    MSG_HEARTBEAT_RESP = 9
    MSG_UNREACHABLE = 10  # local: transport reports a peer unreachable
    MSG_SNAP_STATUS = 11  # local: transport reports snapshot delivery result
    MSG_CHECK_QUORUM = 12  # local: leader checks it still hears from a quorum
    MSG_TRANSFER_LEADER = 13
    MSG_TIMEOUT_NOW = 14
    MSG_READ_INDEX = 15
    MSG_READ_INDEX_RESP = 16
    MSG_PRE_VOTE = 17
    MSG_PRE_VOTE_RESP = 18


LOCAL_MESSAGES = frozenset(
    {
        MessageType.MSG_HUP,
        MessageType.MSG_BEAT,
        MessageType.MSG_UNREACHABLE,
        MessageType.MSG_SNAP_STATUS,
        MessageType.MSG_CHECK_QUORUM,
    }
)
"""Message kinds that never travel on the wire."""

RESPONSE_MESSAGES = frozenset(
    {
        MessageType.MSG_APP_RESP,
        MessageType.MSG_VOTE_RESP,
        MessageType.MSG_HEARTBEAT_RESP,
        MessageType.MSG_UNREACHABLE,
        MessageType.MSG_READ_INDEX_RESP,
        MessageType.MSG_PRE_VOTE_RESP,
    }
)


class EntryType(IntEnum):
    NORMAL = 0
    CONF_CHANGE = 1


class ConfChangeType(IntEnum):
    """One-member-at-a-time membership changes.

    ``ADD_NODE`` on an existing learner promotes it to voter.
    """

    ADD_NODE = 0
    REMOVE_NODE = 1
    UPDATE_NODE = 2
    ADD_LEARNER_NODE = 3


class StateType(IntEnum):
    FOLLOWER = 0
    CANDIDATE = 1
    LEADER = 2
    PRE_CANDIDATE = 3


@dataclass(frozen=True, slots=True)
class Entry:
    term: int
    index: int
    type: EntryType = EntryType.NORMAL
    data: bytes = b""


@dataclass(frozen=True, slots=True)
class HardState:
    """What must be durable before any message of the same Ready is sent."""

    term: int = 0
    vote: int = NONE
    commit: int = 0

    def is_empty(self) -> bool:
        return self.term == 0 and self.vote == NONE and self.commit == 0


EMPTY_HARD_STATE = HardState()


@dataclass(frozen=True, slots=True)
class ConfState:
    """Cluster membership: voters and learners, each sorted ascending, disjoint."""

    voters: tuple[int, ...] = ()
    learners: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class SnapshotMetadata:
    index: int = 0
    term: int = 0
    conf_state: ConfState = field(default_factory=ConfState)


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Application state as of ``metadata.index``; ``data`` is opaque to Raft."""

    metadata: SnapshotMetadata = field(default_factory=SnapshotMetadata)
    data: bytes = b""

    def is_empty(self) -> bool:
        return self.metadata.index == 0


EMPTY_SNAPSHOT = Snapshot()


@dataclass(frozen=True, slots=True)
class ConfChange:
    type: ConfChangeType
    node_id: int
    context: bytes = b""


@dataclass(frozen=True, slots=True)
class Message:
    """One Raft message.  Field meanings follow etcd-io/raft's raftpb.Message.

    ``frm`` is the sender (``from`` is a Python keyword).  ``context`` carries
    the read-index request context and the election kind for transfers
    (``b"CampaignTransfer"``).
    """

    type: MessageType
    to: int = NONE
    frm: int = NONE
    term: int = 0
    log_term: int = 0
    index: int = 0
    entries: tuple[Entry, ...] = ()
    commit: int = 0
    snapshot: Snapshot | None = None
    reject: bool = False
    reject_hint: int = 0
    context: bytes = b""


@dataclass(frozen=True, slots=True)
class ReadState:
    """A linearizable read may be served once the applied index reaches ``index``."""

    index: int
    request_ctx: bytes


@dataclass(frozen=True, slots=True)
class SoftState:
    """Volatile state that is useful to the application but never persisted."""

    lead: int = NONE
    raft_state: StateType = StateType.FOLLOWER


@dataclass(frozen=True, slots=True)
class Ready:
    """Work the caller must do, in this order, before calling ``advance()``.

    1. Persist ``snapshot`` (if not empty), then ``entries`` and ``hard_state``
       (if not None), durably when ``must_sync`` is true.
    2. Send ``messages``.  The leader may send its MsgApp messages before its own
       persistence completes; every other message must wait for step 1.
    3. Apply ``snapshot`` and then ``committed_entries`` to the state machine.
    4. Serve ``read_states`` once the applied index reaches each one's index.
    5. Call ``advance()``.
    """

    soft_state: SoftState | None = None
    hard_state: HardState | None = None
    read_states: tuple[ReadState, ...] = ()
    entries: tuple[Entry, ...] = ()
    snapshot: Snapshot = EMPTY_SNAPSHOT
    committed_entries: tuple[Entry, ...] = ()
    messages: tuple[Message, ...] = ()
    must_sync: bool = False

    def contains_updates(self) -> bool:
        return bool(
            self.soft_state is not None
            or self.hard_state is not None
            or self.read_states
            or self.entries
            or not self.snapshot.is_empty()
            or self.committed_entries
            or self.messages
        )
