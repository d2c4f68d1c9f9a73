"""Printing a check: an etcdctl-style table followed by one line per finding, or one JSON object.

Owns: the ``-w table`` layout (one row per member, ``-`` for what a member did not say) and the
``-w json`` document (``CheckResult.to_json``, one object per line so that ``--watch`` output is
JSON Lines).  The finding lines are, in order: the common revision, the versions (the cluster
version and what each member runs), each divergence, each reason the check could not tell, each
note, and a closing verdict line.
"""

from __future__ import annotations

import json

from raftkv.client.output import humanize_bytes, render_table
from raftkv.inspect.verdict import (
    COUNTER_NAMES,
    EXIT_DIVERGENT,
    CheckResult,
    MemberReport,
    VersionSummary,
)

TABLE_HEADER = [
    "Name",
    "ID",
    "Endpoint",
    "Revision",
    "Keys",
    "Hash",
    "Raft Term",
    "Raft Index",
    "Raft Applied Index",
    "Leader",
    "Version",
    "DB Size",
    "Alarms",
    "Puts",
    "Deletes",
    "Txns",
    "Error",
]


def _cell(value: object) -> str:
    return "-" if value is None else str(value)


def _counter(m: MemberReport, name: str) -> str:
    value = m.counters.get(name)
    if value is None:
        return "-"
    return str(int(value)) if value == int(value) else repr(value)


def _row(m: MemberReport) -> list[str]:
    if m.alarms is None:
        alarms = "-"
    else:
        alarms = ",".join(f"{a}@{i:x}" for i, a in m.alarms) or "none"
    return [
        m.name or "-",
        f"{m.member_id:x}" if m.member_id else "-",
        m.endpoint or "-",
        _cell(m.revision),
        _cell(m.key_count if m.hash is not None else None),
        _cell(m.hash),
        _cell(m.raft_term),
        _cell(m.raft_index),
        _cell(m.raft_applied_index),
        f"{m.leader:x}" if m.leader else "-",
        m.version or "-",
        humanize_bytes(m.db_size) if m.db_size is not None else "-",
        alarms,
        *(_counter(m, name) for name in COUNTER_NAMES),
        m.error or "",
    ]


def version_line(versions: VersionSummary) -> str | None:
    """``versions: cluster 0.2; members: 8e9e05c52164694d=0.2.0, ...`` (None: nobody said)."""
    if not versions.members and not versions.cluster:
        return None
    if not versions.cluster:
        cluster = "unknown"
    elif len(versions.cluster) == 1:
        cluster = versions.cluster[0]
    else:
        cluster = " and ".join(versions.cluster) + " (the members differ)"
    members = ", ".join(f"{m.short_name}={v}" for m, v in versions.members)
    return f"versions: cluster {cluster}; members: {members or '-'}"


def finding_lines(result: CheckResult) -> list[str]:
    lines = []
    if result.common_revision is not None:
        lines.append(
            f"compared at revision {result.common_revision} "
            f"(compact revision {result.compact_revision or 0})"
        )
    versions = version_line(result.versions)
    if versions is not None:
        lines.append(versions)
    lines += result.divergences
    lines += result.problems
    lines += [f"note: {n}" for n in result.notes]
    answered = sum(1 for m in result.members if m.ok)
    if result.exit_code == 0:
        lines.append(f"consistent: {answered} of {len(result.members)} members agree")
    elif result.exit_code == EXIT_DIVERGENT:
        n = len(result.divergences)
        lines.append(f"DIVERGENT: {n} divergence{'s' if n != 1 else ''} found")
    else:
        lines.append(
            f"UNKNOWN: could not tell whether the members agree "
            f"({answered} of {len(result.members)} answered)"
        )
    return lines


def render(result: CheckResult, write_out: str) -> str:
    """The full text printed for one check (no trailing newline)."""
    if write_out == "json":
        return json.dumps(result.to_json(), sort_keys=True)
    table = render_table(TABLE_HEADER, [_row(m) for m in result.members])
    return "\n".join(table + finding_lines(result))
