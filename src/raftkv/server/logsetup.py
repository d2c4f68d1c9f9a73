"""Process-wide logging for a member: text lines, or one JSON object per line.

Contracts:
- ``configure`` is called once, before the member starts;
- every record is one line: a record carrying an exception (``log.exception``,
  ``exc_info=``) shows it as ``exception_line`` — appended to the text line after ``: ``, in
  the ``error`` field of a JSON object; the traceback is written only at ``--log-level
  debug`` (text: the lines after the record; JSON: the ``stacktrace`` field, as etcd's zap);
- JSON lines carry ``level`` (``debug``, ``info``, ``warn``, ``error``, ``fatal``: zap's names;
  CRITICAL is ``fatal``), ``ts`` (RFC 3339, UTC), ``logger``, ``msg`` and, for errors,
  ``error`` — the fields etcd's zap logger writes, so log pipelines built for etcd keep working.
"""

from __future__ import annotations

import json
import logging
import sys
import time

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warn": logging.WARNING}
_LEVELS["error"] = logging.ERROR
_JSON_LEVELS = {"warning": "warn", "critical": "fatal"}

_MESSAGE_ONLY = (RuntimeError, ValueError)
"""Builtin exception types whose message says it all (no type name in ``exception_line``)."""


def exception_line(exc: BaseException) -> str:
    """``exc`` as one line naming the cause: an ``OSError`` as ``<path>: <reason>`` (``<path>
    -> <path2>: <reason>`` for a rename), raftkv's own errors, ``RuntimeError`` and
    ``ValueError`` by their message, anything else as ``<Type>: <message>``.  Runs of
    whitespace (newlines included) become one space; never empty."""
    cls = type(exc)
    if isinstance(exc, OSError) and exc.strerror:
        text = str(exc.strerror)
        if exc.filename is not None:
            where = str(exc.filename)
            if exc.filename2 is not None:
                where += f" -> {exc.filename2}"
            text = f"{where}: {text}"
    else:
        text = str(exc)
        known = cls.__module__.startswith("raftkv.") or cls in _MESSAGE_ONLY
        if not known or not text:
            name = cls.__qualname__
            if cls.__module__ != "builtins":
                name = f"{cls.__module__}.{name}"
            text = f"{name}: {text}" if text else name
    return " ".join(text.split())


def _exception_of(record: logging.LogRecord) -> BaseException | None:
    info = record.exc_info
    return info[1] if info else None


class TextFormatter(logging.Formatter):
    """``<time> <LEVEL> <logger>: <message>[: <exception line>]``; the traceback follows only
    when ``tracebacks``."""

    def __init__(self, tracebacks: bool) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")
        self.tracebacks = tracebacks

    def format(self, record: logging.LogRecord) -> str:
        exc = _exception_of(record)
        if exc is None or self.tracebacks:
            return super().format(record)
        saved = record.exc_info, record.exc_text
        record.exc_info, record.exc_text = None, None
        try:
            line = super().format(record)
        finally:
            record.exc_info, record.exc_text = saved
        return f"{line}: {exception_line(exc)}"


class JsonFormatter(logging.Formatter):
    """One JSON object per record, zap's fields; ``stacktrace`` only when ``tracebacks``."""

    def __init__(self, tracebacks: bool = False) -> None:
        super().__init__()
        self.tracebacks = tracebacks

    def format(self, record: logging.LogRecord) -> str:
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        level = record.levelname.lower()
        obj: dict[str, object] = {
            "level": _JSON_LEVELS.get(level, level),
            "ts": f"{ts}.{int(record.msecs):03d}Z",
            "logger": record.name,
            "msg": record.getMessage(),
        }
        exc = _exception_of(record)
        if exc is not None:
            obj["error"] = exception_line(exc)
            if self.tracebacks and record.exc_info:
                obj["stacktrace"] = self.formatException(record.exc_info)
        return json.dumps(obj)


def configure(level: str, fmt: str) -> None:
    """Send every record to stderr in ``fmt`` (``text`` or ``json``) from ``level`` up
    (``debug``, ``info``, ``warn``, ``error``); tracebacks only at ``debug``."""
    handler = logging.StreamHandler(sys.stderr)
    tracebacks = _LEVELS[level] <= logging.DEBUG
    if fmt == "json":
        handler.setFormatter(JsonFormatter(tracebacks))
    else:
        handler.setFormatter(TextFormatter(tracebacks))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(_LEVELS[level])
