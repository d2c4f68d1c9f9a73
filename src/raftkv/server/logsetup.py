"""Process-wide logging for a member: text lines, or one JSON object per line.

Contract: ``configure`` is called once, before the member starts; JSON lines carry ``level``,
``ts`` (RFC 3339, UTC), ``logger``, ``msg`` and, for errors, ``error`` — the fields etcd's zap
logger writes, so log pipelines built for etcd keep working.
"""

from __future__ import annotations

import json
import logging
import sys
import time

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warn": logging.WARNING}
_LEVELS["error"] = logging.ERROR


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        obj: dict[str, object] = {
            "level": record.levelname.lower().replace("warning", "warn"),
            "ts": f"{ts}.{int(record.msecs):03d}Z",
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            obj["error"] = self.formatException(record.exc_info)
        return json.dumps(obj)


def configure(level: str, fmt: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(_LEVELS[level])
