"""raftkv.raft: a pure (sans-I/O) Raft consensus core in the style of etcd-io/raft.

Re-exports the public API: ``RawNode``, ``Config``, ``MemoryStorage``, the
``LogStorage`` protocol, the named errors, the record types and the conf
change codec.  Nothing in this package performs I/O or reads a clock.
"""

from __future__ import annotations

from raftkv.raft.codec import decode_conf_change, encode_conf_change
from raftkv.raft.config import Config, RaftLogger, ReadOnlyOption, StdLogger
from raftkv.raft.errors import (
    CompactedError,
    ProposalDroppedError,
    RaftError,
    SnapOutOfDateError,
    SnapshotTemporarilyUnavailableError,
    StepLocalMsgError,
    StepPeerNotFoundError,
    UnavailableError,
)
from raftkv.raft.progress import ProgressState, ProgressStatus
from raftkv.raft.rawnode import RawNode, Status
from raftkv.raft.storage import LogStorage, MemoryStorage
from raftkv.raft.types import (
    EMPTY_HARD_STATE,
    EMPTY_SNAPSHOT,
    NONE,
    ConfChange,
    ConfChangeType,
    ConfState,
    Entry,
    EntryType,
    HardState,
    Message,
    MessageType,
    ReadState,
    Ready,
    Snapshot,
    SnapshotMetadata,
    SoftState,
    StateType,
)

__all__ = [
    "EMPTY_HARD_STATE",
    "EMPTY_SNAPSHOT",
    "NONE",
    "CompactedError",
    "ConfChange",
    "ConfChangeType",
    "ConfState",
    "Config",
    "Entry",
    "EntryType",
    "HardState",
    "LogStorage",
    "MemoryStorage",
    "Message",
    "MessageType",
    "ProgressState",
    "ProgressStatus",
    "ProposalDroppedError",
    "RaftError",
    "RaftLogger",
    "RawNode",
    "ReadOnlyOption",
    "ReadState",
    "Ready",
    "SnapOutOfDateError",
    "Snapshot",
    "SnapshotMetadata",
    "SnapshotTemporarilyUnavailableError",
    "SoftState",
    "StateType",
    "Status",
    "StdLogger",
    "StepLocalMsgError",
    "StepPeerNotFoundError",
    "UnavailableError",
    "decode_conf_change",
    "encode_conf_change",
]
