"""Separating raftkv's version columns from etcd's in ``raftkv endpoint status`` output.

``split_status(fmt, stdout)`` returns what etcdctl 3.4 would print (raftkv's extras removed,
byte for byte otherwise) and, per endpoint, the extras ``[raftkv version, cluster version,
storage version]``, so a test compares the first with etcdctl's output and checks the second.
"""

from __future__ import annotations

import re

EXTRA_FIELDS = ("RaftkvVersion", "ClusterVersion", "StorageVersion")
N_EXTRA = len(EXTRA_FIELDS)
_JSON_EXTRAS = re.compile(
    rb',"RaftkvVersion":"([^"]*)","ClusterVersion":"([^"]*)","StorageVersion":"([^"]*)"'
)
_FIELD_LINE = re.compile(rb'^"(RaftkvVersion|ClusterVersion|StorageVersion)" : "([^"]*)"$')


def _table_cells(line: bytes, sep: bytes) -> list[bytes]:
    return line.split(sep)[1:-1]


def split_status(fmt: str, data: bytes) -> tuple[bytes, list[list[str]]]:
    """(etcd's part of the output, the extras of each endpoint in order)."""
    extras: list[list[str]] = []
    if fmt == "json":
        extras = [[v.decode() for v in m.groups()] for m in _JSON_EXTRAS.finditer(data)]
        return _JSON_EXTRAS.sub(b"", data), extras
    lines = data.split(b"\n")
    kept: list[bytes] = []
    if fmt == "fields":
        current: list[str] = []
        for line in lines:
            m = _FIELD_LINE.match(line)
            if m is None:
                kept.append(line)
                continue
            current.append(m.group(2).decode())
            if len(current) == N_EXTRA:
                extras.append(current)
                current = []
        return b"\n".join(kept), extras
    if fmt == "table":
        seen_header = False
        for line in lines:
            sep = line[:1]
            if sep not in (b"+", b"|"):
                kept.append(line)
                continue
            cells = _table_cells(line, sep)
            if sep == b"|":
                if seen_header:
                    extras.append([c.strip().decode() for c in cells[-N_EXTRA:]])
                seen_header = True
            kept.append(sep + sep.join(cells[:-N_EXTRA]) + sep)
        return b"\n".join(kept), extras
    if fmt == "simple":
        for line in lines:
            if not line:
                kept.append(line)
                continue
            head, *tail = line.rsplit(b", ", N_EXTRA)
            kept.append(head)
            extras.append([t.decode() for t in tail])
        return b"\n".join(kept), extras
    return data, extras
