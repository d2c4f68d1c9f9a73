"""Named errors of the Raft core.

Owns: the conditions a caller of the core must handle.  Broken invariants
(a bug in the core or a caller violating the Ready/advance contract) are not
listed here: they raise ``AssertionError`` and must crash the process.
"""

from __future__ import annotations


class RaftError(Exception):
    """Base of every condition the core reports to its caller."""


class CompactedError(RaftError):
    """The requested index is below the first available index (compacted)."""

    def __init__(self, msg: str = "requested index is unavailable due to compaction") -> None:
        super().__init__(msg)


class UnavailableError(RaftError):
    """The requested index is beyond the last available index."""

    def __init__(self, msg: str = "requested entry at index is unavailable") -> None:
        super().__init__(msg)


class SnapOutOfDateError(RaftError):
    """The snapshot is older than the one the storage already holds."""

    def __init__(self, msg: str = "requested index is older than the existing snapshot") -> None:
        super().__init__(msg)


class SnapshotTemporarilyUnavailableError(RaftError):
    """The storage cannot produce a snapshot right now; the core retries later."""

    def __init__(self, msg: str = "snapshot is temporarily unavailable") -> None:
        super().__init__(msg)


class ProposalDroppedError(RaftError):
    """The proposal was not accepted (no leader, transfer in progress, ...)."""

    def __init__(self, msg: str = "raft proposal dropped") -> None:
        super().__init__(msg)


class StepLocalMsgError(RaftError):
    """A local-only message type was passed to ``step()``."""

    def __init__(self, msg: str = "raft: cannot step raft local message") -> None:
        super().__init__(msg)


class StepPeerNotFoundError(RaftError):
    """A response arrived from a peer that is not in the configuration."""

    def __init__(self, msg: str = "raft: cannot step as peer not found") -> None:
        super().__init__(msg)
