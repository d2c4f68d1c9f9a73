"""Configuration of one Raft node.

Owns: ``Config`` (timeouts, flow-control limits, feature switches, the seed of
the election-timeout randomness) and its validation.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum
from typing import Protocol

from raftkv.raft.storage import LogStorage
from raftkv.raft.types import NONE


class ReadOnlyOption(IntEnum):
    """How the leader confirms it is still leader before serving a read index.

    SAFE: a heartbeat round acknowledged by a quorum.  LEASE_BASED: trust the
    election timeout as a lease (needs ``check_quorum``; depends on bounded
    clock drift).
    """

    SAFE = 0
    LEASE_BASED = 1


class RaftLogger(Protocol):
    """Where the core reports state changes (``info``) and dropped input (``debug``).

    A logger may also define ``is_enabled_for(level: int) -> bool`` (stdlib
    level numbers): the core then builds only the lines it will record.  A
    logger without it receives every line.
    """

    def debug(self, msg: str) -> None: ...

    def info(self, msg: str) -> None: ...

    def warning(self, msg: str) -> None: ...


class StdLogger:
    """``RaftLogger`` writing to the stdlib logger ``raftkv.raft``."""

    def __init__(self) -> None:
        self._log = logging.getLogger("raftkv.raft")

    def is_enabled_for(self, level: int) -> bool:
        return self._log.isEnabledFor(level)

    def debug(self, msg: str) -> None:
        self._log.debug(msg)

    def info(self, msg: str) -> None:
        self._log.info(msg)

    def warning(self, msg: str) -> None:
        self._log.warning(msg)


class LazyLogger:
    """The core's handle on a ``RaftLogger``: ``fmt % args`` is built only for
    a level the logger records, so silent levels cost one call and no string
    formatting.  ``fmt`` uses %-style placeholders (node ids as ``%x``, as etcd
    prints them)."""

    __slots__ = ("_enabled", "sink")

    def __init__(self, sink: RaftLogger) -> None:
        self.sink = sink
        self._enabled: Callable[[int], bool] | None = getattr(sink, "is_enabled_for", None)

    def debug(self, fmt: str, *args: object) -> None:
        en = self._enabled
        if en is None or en(logging.DEBUG):
            self.sink.debug(fmt % args if args else fmt)

    def info(self, fmt: str, *args: object) -> None:
        en = self._enabled
        if en is None or en(logging.INFO):
            self.sink.info(fmt % args if args else fmt)

    def warning(self, fmt: str, *args: object) -> None:
        en = self._enabled
        if en is None or en(logging.WARNING):
            self.sink.warning(fmt % args if args else fmt)


@dataclass(frozen=True)
class Config:
    """Parameters of one node; ``storage`` is the durable view it restores from."""

    id: int
    storage: LogStorage
    election_tick: int = 10
    heartbeat_tick: int = 1
    applied: int = 0  # on restart: entries up to here are not handed out again
    max_size_per_msg: int = 1 << 20
    max_committed_size_per_ready: int = 1 << 26
    max_inflight_msgs: int = 256
    max_uncommitted_entries_size: int = 0
    check_quorum: bool = True
    pre_vote: bool = True
    read_only_option: ReadOnlyOption = ReadOnlyOption.SAFE
    disable_proposal_forwarding: bool = False
    seed: int = 0
    logger: RaftLogger | None = None  # None: StdLogger()

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first invalid field."""
        if self.id == NONE or self.id < 0:
            raise ValueError("cannot use none (0) or a negative number as id")
        if self.heartbeat_tick <= 0:
            raise ValueError("heartbeat tick must be greater than 0")
        if self.election_tick <= self.heartbeat_tick:
            raise ValueError("election tick must be greater than heartbeat tick")
        if self.applied < 0:
            raise ValueError("applied must not be negative")
        if self.max_size_per_msg <= 0:
            raise ValueError("max size per message must be greater than 0")
        if self.max_committed_size_per_ready <= 0:
            raise ValueError("max committed size per ready must be greater than 0")
        if self.max_inflight_msgs <= 0:
            raise ValueError("max inflight messages must be greater than 0")
        if self.max_uncommitted_entries_size < 0:
            raise ValueError("max uncommitted entries size must not be negative")
        if self.read_only_option == ReadOnlyOption.LEASE_BASED and not self.check_quorum:
            raise ValueError("check_quorum must be enabled when read_only_option is LEASE_BASED")
