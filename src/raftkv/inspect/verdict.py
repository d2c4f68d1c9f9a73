"""What the inspector learned about each member, and the judgement over all of them.

Owns: ``MemberReport`` (one member's answers, or why it did not answer), ``CheckResult`` (all
members plus the verdict), and ``judge``, which compares the members and explains every
disagreement in one line.  ``judge`` is pure: it reads reports and writes no I/O.

Contract of the verdict:
- divergent (exit 1) when at least two members answered and their HashKV at the common revision,
  their key counts at that revision or their (replicated) alarm lists differ, or when a CORRUPT
  alarm is active; the member outside the majority is named when a majority exists;
- otherwise could not tell (exit 2) when a member did not answer, when no member answered, when
  the hashes could not be taken at one common revision (compaction), or when the endpoints
  belong to different clusters;
- otherwise consistent (exit 0).

Versions never decide the verdict: members running different releases (a rolling upgrade) or
reporting different cluster versions (one being applied) are notes.  What each member runs is
raftkv's release from the Status metadata, or ``etcd <version>`` for a plain etcd member.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

EXIT_CONSISTENT = 0
EXIT_DIVERGENT = 1
EXIT_UNKNOWN = 2

STATUS_NAMES = {EXIT_CONSISTENT: "consistent", EXIT_DIVERGENT: "divergent", EXIT_UNKNOWN: "unknown"}

# The Prometheus counters shown per member when --metrics-urls is given.
COUNTER_NAMES = ("etcd_mvcc_put_total", "etcd_mvcc_delete_total", "etcd_mvcc_txn_total")


@dataclass
class MemberReport:
    """One member as seen through one endpoint; ``error`` set means it did not answer."""

    endpoint: str
    name: str = ""
    member_id: int = 0
    cluster_id: int = 0
    error: str | None = None
    revision: int | None = None
    key_count: int | None = None
    hash: int | None = None
    hash_revision: int | None = None
    compact_revision: int | None = None
    raft_term: int | None = None
    raft_index: int | None = None
    raft_applied_index: int | None = None
    leader: int | None = None
    version: str | None = None  # StatusResponse.version: etcd's (for raftkv, its etcd API level)
    raftkv_version: str | None = None  # the raftkv release (Status metadata); None from etcd
    cluster_version: str | None = None  # the cluster version this member applied (metadata)
    storage_version: str | None = None  # StatusResponse.storageVersion
    db_size: int | None = None
    is_learner: bool = False
    # (member ID, alarm name) pairs; None when the alarm list could not be read.
    alarms: list[tuple[int, str]] | None = None
    alarm_error: str | None = None
    metrics_url: str | None = None
    metrics_error: str | None = None
    counters: dict[str, float] = field(default_factory=dict)
    # Set by ``judge``: this member is named by a divergence (outside the majority, or CORRUPT).
    divergent: bool = False

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def runs(self) -> str | None:
        """The release this member runs: raftkv's, or ``etcd 3.4.23`` for a plain etcd."""
        if self.raftkv_version:
            return self.raftkv_version
        return f"etcd {self.version}" if self.version else None

    @property
    def short_name(self) -> str:
        """``8e9e05c52164694d``: the member's ID in hex, else its name or endpoint."""
        return f"{self.member_id:x}" if self.member_id else (self.name or self.endpoint)

    @property
    def label(self) -> str:
        """``m3 (id 8e9e05c52164694d)``: how a line of explanation names this member."""
        name = self.name or self.endpoint
        return f"{name} (id {self.member_id:x})" if self.member_id else name

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "endpoint": self.endpoint,
            "member_id": f"{self.member_id:x}" if self.member_id else "",
            "cluster_id": f"{self.cluster_id:x}" if self.cluster_id else "",
            "reachable": self.ok,
            "error": self.error,
            "revision": self.revision,
            "key_count": self.key_count,
            "hash": self.hash,
            "hash_revision": self.hash_revision,
            "compact_revision": self.compact_revision,
            "raft_term": self.raft_term,
            "raft_index": self.raft_index,
            "raft_applied_index": self.raft_applied_index,
            "leader": f"{self.leader:x}" if self.leader else "",
            "is_leader": bool(self.leader) and self.leader == self.member_id,
            "version": self.version,
            "raftkv_version": self.raftkv_version,
            "cluster_version": self.cluster_version,
            "storage_version": self.storage_version,
            "db_size": self.db_size,
            "is_learner": self.is_learner,
            "alarms": None
            if self.alarms is None
            else [{"member_id": f"{m:x}", "alarm": a} for m, a in self.alarms],
            "alarm_error": self.alarm_error,
            "metrics_url": self.metrics_url,
            "metrics_error": self.metrics_error,
            "counters": {name: self.counters.get(name) for name in COUNTER_NAMES},
            "divergent": self.divergent,
        }


@dataclass
class VersionSummary:
    """Which release each answering member runs and the cluster version(s) they report."""

    cluster: list[str]  # the distinct cluster versions reported, sorted; empty: none said
    members: list[tuple[MemberReport, str]]  # (member, what it runs), members that said

    @property
    def mixed(self) -> bool:
        return len({v for _m, v in self.members}) > 1

    def to_json(self) -> dict[str, Any]:
        return {
            "cluster": self.cluster[0] if len(self.cluster) == 1 else None,
            "cluster_versions": list(self.cluster),
            "members": {m.short_name: v for m, v in self.members},
            "mixed": self.mixed,
        }


def version_summary(members: Sequence[MemberReport]) -> VersionSummary:
    answered = [m for m in members if m.ok]
    cluster = sorted({m.cluster_version for m in answered if m.cluster_version})
    return VersionSummary(
        cluster=cluster, members=[(m, v) for m in answered if (v := m.runs) is not None]
    )


@dataclass
class CheckResult:
    """One complete check: every member, the common revision, and the verdict."""

    members: list[MemberReport]
    common_revision: int | None = None
    compact_revision: int | None = None
    divergences: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    exit_code: int = EXIT_UNKNOWN

    @property
    def status(self) -> str:
        return STATUS_NAMES[self.exit_code]

    @property
    def versions(self) -> VersionSummary:
        return version_summary(self.members)

    def to_json(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "consistent": self.exit_code == EXIT_CONSISTENT,
            "exit_code": self.exit_code,
            "common_revision": self.common_revision,
            "compact_revision": self.compact_revision,
            "members": [m.to_json() for m in self.members],
            "versions": self.versions.to_json(),
            "divergences": list(self.divergences),
            "problems": list(self.problems),
            "notes": list(self.notes),
        }


def _others(n: int) -> str:
    return "the other member" if n == 1 else f"the {n} others"


def _compare(
    reports: Sequence[MemberReport],
    value: Callable[[MemberReport], int | None],
    what: str,
    line: Callable[[MemberReport, int, int, int], str],
    at: str,
) -> list[str]:
    """Lines naming every member whose ``value`` differs from the majority's value.

    ``line(member, its value, majority value, size of majority)`` renders one outlier.  Without
    a strict majority, one line lists every member's value.
    """
    present = [(r, v) for r in reports if (v := value(r)) is not None]
    counts = Counter(v for _r, v in present)
    if len(counts) <= 1:
        return []
    top, top_n = counts.most_common(1)[0]
    if top_n * 2 > len(present):
        outliers = [(r, v) for r, v in present if v != top]
        for r, _v in outliers:
            r.divergent = True
        return [line(r, v, top, top_n) for r, v in outliers]
    listing = ", ".join(f"{r.label} {v}" for r, v in present)
    return [f"{what} differ with no majority{at}: {listing}"]


def judge(result: CheckResult) -> CheckResult:
    """Fill ``result.divergences``, ``problems`` and ``exit_code`` from its member reports."""
    answered = [m for m in result.members if m.ok]
    for m in result.members:
        if not m.ok:
            result.problems.append(f"member {m.label} unreachable: {m.error}")
    if not answered:
        result.problems.append("no member answered")
    clusters = {m.cluster_id for m in answered if m.cluster_id}
    if len(clusters) > 1:
        listing = ", ".join(f"{m.label} in cluster {m.cluster_id:x}" for m in answered)
        result.problems.append(f"the endpoints belong to different clusters: {listing}")

    rev = result.common_revision
    at = f" at revision {rev}" if rev is not None else ""
    hashed = [m for m in answered if m.hash is not None]
    if len(hashed) < len(answered) and rev is not None:
        missing = ", ".join(m.label for m in answered if m.hash is None)
        result.problems.append(f"no hash at revision {rev} from {missing}")

    result.divergences += _compare(
        hashed,
        lambda m: m.hash,
        "hashes",
        lambda m, v, top, n: f"member {m.label} hash {v} differs from {_others(n)} ({top}){at}",
        at,
    )
    # Key counts are compared only where they were taken at the common revision.
    result.divergences += _compare(
        hashed,
        lambda m: m.key_count,
        "key counts",
        lambda m, v, top, n: (
            f"key counts differ: member {m.label} has {v} keys, {_others(n)} have {top}{at}"
        ),
        at,
    )
    _judge_alarms(answered, result)

    versions = result.versions
    if versions.mixed:
        result.notes.append(
            "mixed versions (a rolling upgrade in progress?): "
            + ", ".join(f"{m.label} {v}" for m, v in versions.members)
        )
    if len(versions.cluster) > 1:
        result.notes.append(
            "members report different cluster versions (a change being applied?): "
            + ", ".join(f"{m.label} {m.cluster_version}" for m in answered if m.cluster_version)
        )
    leaders = {m.leader for m in answered if m.leader}
    if len(leaders) > 1:
        result.notes.append(
            "members name different leaders: "
            + ", ".join(f"{m.label} -> {m.leader:x}" for m in answered if m.leader)
        )

    if result.divergences:
        result.exit_code = EXIT_DIVERGENT
    elif result.problems:
        result.exit_code = EXIT_UNKNOWN
    else:
        result.exit_code = EXIT_CONSISTENT
    return result


def _judge_alarms(answered: Sequence[MemberReport], result: CheckResult) -> None:
    """Alarms are replicated: every member must list the same ones; CORRUPT is a divergence."""
    listed = [m for m in answered if m.alarms is not None]
    names = {m.member_id: m.label for m in answered if m.member_id}
    by_id = {m.member_id: m for m in answered if m.member_id}
    seen: set[tuple[int, str]] = set()
    for m in listed:
        seen.update(m.alarms or [])
    for member_id, alarm in sorted(seen):
        who = names.get(member_id, f"id {member_id:x}")
        if alarm == "CORRUPT":
            if member_id in by_id:
                by_id[member_id].divergent = True
            result.divergences.append(f"alarm CORRUPT is active for member {who}")
        else:
            result.notes.append(f"alarm {alarm} is active for member {who}")

    def key(m: MemberReport) -> tuple[tuple[int, str], ...]:
        return tuple(sorted(m.alarms or []))

    if len({key(m) for m in listed}) > 1:
        listing = "; ".join(
            f"{m.label}: " + (",".join(f"{a}@{i:x}" for i, a in sorted(m.alarms or [])) or "none")
            for m in listed
        )
        result.divergences.append(f"alarm lists differ: {listing}")
    for m in answered:
        if m.alarm_error is not None:
            result.notes.append(f"alarms of member {m.label} not read: {m.alarm_error}")
