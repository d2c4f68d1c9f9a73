"""The member's log lines: one line per record, the traceback only at debug, zap's JSON."""

from __future__ import annotations

import json
import logging
import sys

import pytest

from raftkv.server.logsetup import JsonFormatter, TextFormatter, exception_line
from raftkv.wal.errors import WALCorruptionError


def _record(exc: BaseException, level: int = logging.CRITICAL) -> logging.LogRecord:
    try:
        raise exc
    except BaseException:
        info = sys.exc_info()
    return logging.LogRecord("raftkv.run", level, __file__, 1, "failed: %s", ("x",), info)


@pytest.mark.parametrize(
    ("exc", "line"),
    [
        (
            FileNotFoundError(2, "No such file or directory", "/d/snap/x.tmp"),
            "/d/snap/x.tmp: No such file or directory",
        ),
        (
            OSError(18, "Invalid cross-device link", "/a", None, "/b"),
            "/a -> /b: Invalid cross-device link",
        ),
        (OSError(98, "address already in use"), "address already in use"),
        (
            WALCorruptionError("/w/0.wal", 112, "crc mismatch"),
            "wal: corrupt segment /w/0.wal at offset 112: crc mismatch",
        ),
        (RuntimeError("backend is\nbehind"), "backend is behind"),
        (KeyError("k"), "KeyError: 'k'"),
        (AssertionError(), "AssertionError"),
        (
            json.JSONDecodeError("Expecting value", "x", 0),
            "json.decoder.JSONDecodeError: Expecting value: line 1 column 1 (char 0)",
        ),
    ],
)
def test_exception_line(exc: BaseException, line: str) -> None:
    assert exception_line(exc) == line


class InvalidError(Exception):
    """Stands for a third-party library's error (lmdb's)."""


InvalidError.__module__ = "lmdb"


def test_a_third_party_error_names_its_type() -> None:
    line = exception_line(InvalidError("/d/db: MDB_INVALID"))
    assert line == "lmdb.InvalidError: /d/db: MDB_INVALID"


def test_text_line_without_traceback_unless_debug() -> None:
    record = _record(FileNotFoundError(2, "No such file or directory", "/x"))
    line = TextFormatter(tracebacks=False).format(record)
    assert "\n" not in line
    assert line.endswith("CRITICAL raftkv.run: failed: x: /x: No such file or directory")
    full = TextFormatter(tracebacks=True).format(record)
    assert "Traceback (most recent call last)" in full
    assert record.exc_info is not None  # the record is left as it was


def test_json_object_is_zaps() -> None:
    record = _record(FileNotFoundError(2, "No such file or directory", "/x"))
    obj = json.loads(JsonFormatter().format(record))
    assert (obj["level"], obj["logger"], obj["msg"]) == ("fatal", "raftkv.run", "failed: x")
    assert obj["error"] == "/x: No such file or directory"
    assert "stacktrace" not in obj
    debug = json.loads(JsonFormatter(tracebacks=True).format(record))
    assert "Traceback (most recent call last)" in debug["stacktrace"]
    warn = logging.LogRecord("raftkv.x", logging.WARNING, __file__, 1, "w", (), None)
    assert json.loads(JsonFormatter().format(warn))["level"] == "warn"
