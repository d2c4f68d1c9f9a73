"""The typed report of ``raftkv check data``: findings, one result per check, the verdict.

Owns: ``Severity``, ``Finding`` (one problem, located by file path and byte offset for WAL and
snapshot files, or by bucket and key for LMDB), ``CheckResult`` (one check: ``member``, ``wal``,
``snap``, ``backend``, ``rebuild``), ``DataReport`` and the exit status rule.  No I/O.

Exit status contract (as ``raftkv check consistency``):
- 1 when any finding is corruption (bytes damaged at rest) or divergence (the state rebuilt
  from snapshot + WAL differs from the member's backend);
- otherwise 2 when anything could not be told (member running, no rebuild base, unreadable
  directory);
- otherwise 0; warnings (a torn WAL tail, repaired when the member starts) do not change it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

EXIT_OK = 0
EXIT_FOUND = 1
EXIT_UNKNOWN = 2

VERDICTS = {EXIT_OK: "consistent", EXIT_FOUND: "corrupt or divergent", EXIT_UNKNOWN: "unknown"}


class Severity(StrEnum):
    """How bad a finding is; ``CORRUPT`` and ``DIVERGENT`` make the exit status 1."""

    INFO = "info"
    WARNING = "warning"
    UNKNOWN = "unknown"
    CORRUPT = "corrupt"
    DIVERGENT = "divergent"


_FOUND = (Severity.CORRUPT, Severity.DIVERGENT)


@dataclass(frozen=True, slots=True)
class Finding:
    """One problem.  ``offset`` locates it in a WAL segment or snapshot file; ``bucket`` and
    ``key`` in an LMDB environment; ``index`` is a Raft index when one is known."""

    severity: Severity
    path: str
    message: str
    offset: int | None = None
    bucket: str | None = None
    key: bytes | None = None
    index: int | None = None

    def where(self) -> str:
        """``path`` then ``offset=N``, ``bucket=B key=HEX``, ``index=I`` where known."""
        parts = [self.path]
        if self.offset is not None:
            parts.append(f"offset={self.offset}")
        if self.bucket is not None:
            parts.append(f"bucket={self.bucket}")
        if self.key is not None:
            parts.append(f"key={self.key.hex()}")
        if self.index is not None:
            parts.append(f"index={self.index}")
        return " ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return {
            "severity": str(self.severity),
            "path": self.path,
            "offset": self.offset,
            "bucket": self.bucket,
            "key": self.key.hex() if self.key is not None else None,
            "index": self.index,
            "message": self.message,
        }


@dataclass
class CheckResult:
    """One check's outcome; ``skipped`` means it did not run (the reason is in ``summary``)."""

    name: str
    summary: str = ""
    findings: list[Finding] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    skipped: bool = False

    def add(self, finding: Finding) -> None:
        self.findings.append(finding)

    @property
    def status(self) -> str:
        """``skipped``, ``ok``, or the worst severity among the findings."""
        if self.skipped and not self.findings:
            return "skipped"
        worst = "ok"
        for rank in (Severity.WARNING, Severity.UNKNOWN, Severity.CORRUPT, Severity.DIVERGENT):
            if any(f.severity == rank for f in self.findings):
                worst = str(rank)
        return worst

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "status": self.status,
            "summary": self.summary,
            "details": self.details,
            "findings": [f.to_dict() for f in self.findings],
        }


@dataclass
class DataReport:
    """Every check run on one member's data directory."""

    data_dir: str
    checks: list[CheckResult] = field(default_factory=list)

    def check(self, name: str) -> CheckResult | None:
        return next((c for c in self.checks if c.name == name), None)

    @property
    def findings(self) -> list[tuple[str, Finding]]:
        return [(c.name, f) for c in self.checks for f in c.findings]

    @property
    def exit_code(self) -> int:
        severities = {f.severity for _name, f in self.findings}
        if severities.intersection(_FOUND):
            return EXIT_FOUND
        if Severity.UNKNOWN in severities:
            return EXIT_UNKNOWN
        return EXIT_OK

    @property
    def verdict(self) -> str:
        return VERDICTS[self.exit_code]

    def to_dict(self) -> dict[str, Any]:
        return {
            "data_dir": self.data_dir,
            "verdict": self.verdict,
            "exit_code": self.exit_code,
            "checks": [c.to_dict() for c in self.checks],
        }
