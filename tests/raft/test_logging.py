"""The core's logging: lazy formatting, etcd's hex node ids, the stdlib default."""

from __future__ import annotations

import logging

import pytest

from raftkv.raft import Config, RawNode
from raftkv.raft.config import LazyLogger, StdLogger
from tests.raft.raft_cluster import bootstrap_storage


class _Explodes:
    def __str__(self) -> str:
        raise AssertionError("formatted although the level is off")

    __repr__ = __str__


class _Recorder:
    def __init__(self, on: int | None) -> None:
        self.on = on
        self.lines: list[tuple[str, str]] = []

    def debug(self, msg: str) -> None:
        self.lines.append(("debug", msg))

    def info(self, msg: str) -> None:
        self.lines.append(("info", msg))

    def warning(self, msg: str) -> None:
        self.lines.append(("warning", msg))


class _Leveled(_Recorder):
    def is_enabled_for(self, level: int) -> bool:
        return self.on is not None and level >= self.on


def test_disabled_levels_are_never_formatted() -> None:
    sink = _Leveled(logging.INFO)
    log = LazyLogger(sink)
    log.debug("%x %s", 1, _Explodes())
    log.info("%x [term: %d] %s", 26, 3, "MsgApp")
    log.warning("%x literal %%", 255)
    assert sink.lines == [("info", "1a [term: 3] MsgApp"), ("warning", "ff literal %")]


def test_logger_without_level_hook_receives_every_line() -> None:
    sink = _Recorder(None)
    log = LazyLogger(sink)
    log.debug("%x no progress available for %x", 10, 11)
    log.info("no args: 100%")
    assert sink.lines == [("debug", "a no progress available for b"), ("info", "no args: 100%")]


def test_node_ids_are_printed_in_hex() -> None:
    sink = _Leveled(logging.INFO)
    s = bootstrap_storage([0x1A, 0x2B])
    n = RawNode(Config(id=0x1A, storage=s, logger=sink))
    n.campaign()
    msgs = [m for _, m in sink.lines]
    assert msgs[:2] == [
        "1a became follower at term 1",
        "newRaft 1a [peers: [1a,2b], term: 1, commit: 1, applied: 1, lastindex: 1, lastterm: 1]",
    ]
    assert "1a [logterm: 1, index: 1] sent MsgPreVote request to 2b at term 1" in msgs


def test_std_logger_follows_the_stdlib_level(caplog: pytest.LogCaptureFixture) -> None:
    log = LazyLogger(StdLogger())
    with caplog.at_level(logging.INFO, logger="raftkv.raft"):
        log.debug("%s", _Explodes())
        log.info("%x became leader at term %d", 0xABC, 7)
    assert [r.getMessage() for r in caplog.records] == ["abc became leader at term 7"]
