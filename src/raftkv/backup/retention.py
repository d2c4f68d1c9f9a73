"""Retention: which backups of a manifest to keep and which to delete, as a pure decision.

Owns ``plan_retention(manifest, now, policy) -> RetentionPlan``; the agent applies the plan
(deleting files first, then writing the manifest without them).  No I/O, no clock: ``now`` is
given, so the policy is tested on synthetic timestamps.

Rules, over verified full backups (ordered by cut time, newest first):

- ``keep_last = N`` keeps the N newest;
- ``exponential`` keeps, for every hour of the last day, every day of the last week and every
  week of the last month (31 days), the newest full whose cut time falls in that hour, day or
  week (counted back from ``now``);
- with both, a full is kept when either keeps it; with neither, everything is kept;
- **the newest verified full is always kept**, whatever the policy says, and with it every
  delta that depends on it;
- a delta is kept exactly when its full is kept;
- an unverified entry (its file in ``failed/``) is kept while it is newer than the oldest kept
  verified full, for the operator to look at, and pruned after that.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from raftkv.backup.manifest import KIND_DELTA, KIND_FULL, BackupEntry, Manifest

HOUR = 3600.0
DAY = 24 * HOUR
WEEK = 7 * DAY
MONTH = 31 * DAY

RETENTION_POLICIES = ("none", "exponential")


@dataclass(frozen=True)
class RetentionPolicy:
    keep_last: int = 0  # 0: no count-based rule
    exponential: bool = False

    @property
    def active(self) -> bool:
        return self.keep_last > 0 or self.exponential


@dataclass
class RetentionPlan:
    keep: list[BackupEntry] = field(default_factory=list)
    delete: list[BackupEntry] = field(default_factory=list)
    reasons: dict[str, str] = field(default_factory=dict)  # id -> why it is kept


def exponential_keep(fulls: list[BackupEntry], now: float) -> dict[str, str]:
    """IDs kept by the exponential rule (hourly for a day, daily for a week, weekly for a
    month), each with the bucket that kept it; ``fulls`` in any order."""
    kept: dict[str, str] = {}
    seen: set[tuple[str, int]] = set()
    for entry in sorted(fulls, key=lambda e: e.cut_ts, reverse=True):
        age = now - entry.cut_ts
        if age < 0:
            age = 0.0
        for name, span, horizon in (("hour", HOUR, DAY), ("day", DAY, WEEK), ("week", WEEK, MONTH)):
            if age >= horizon:
                continue
            bucket = (name, int(age // span))
            if bucket not in seen:
                seen.add(bucket)
                kept.setdefault(entry.id, f"newest of {name} {bucket[1]} back")
    return kept


def plan_retention(manifest: Manifest, now: float, policy: RetentionPolicy) -> RetentionPlan:
    """Which entries of ``manifest`` to keep and which to delete under ``policy``."""
    plan = RetentionPlan()
    fulls = sorted(manifest.fulls(), key=lambda e: e.cut_ts, reverse=True)
    newest = manifest.newest_verified_full()
    keep_fulls: dict[str, str] = {}
    if not policy.active:
        keep_fulls = {e.id: "no retention policy" for e in fulls}
    else:
        if policy.keep_last > 0:
            for entry in fulls[: policy.keep_last]:
                keep_fulls[entry.id] = f"among the {policy.keep_last} newest"
        if policy.exponential:
            for backup_id, bucket in exponential_keep(fulls, now).items():
                keep_fulls.setdefault(backup_id, bucket)
    if newest is not None:
        keep_fulls[newest.id] = "the newest verified full backup"
    oldest_kept = min(
        (e.cut_ts for e in fulls if e.id in keep_fulls),
        default=float("-inf"),
    )
    for entry in manifest.backups:
        why: str | None
        if entry.kind == KIND_FULL and entry.verified:
            why = keep_fulls.get(entry.id)
        elif entry.kind == KIND_DELTA and entry.verified:
            base = keep_fulls.get(entry.base)
            why = f"depends on kept full {entry.base}" if base is not None else None
        else:
            base_gone = entry.kind == KIND_DELTA and manifest.get(entry.base) is not None
            base_gone = base_gone and entry.base not in keep_fulls
            keep_failed = entry.cut_ts >= oldest_kept and not base_gone
            why = "failed verification; newer than the oldest kept full" if keep_failed else None
        if why is None:
            plan.delete.append(entry)
        else:
            plan.keep.append(entry)
            plan.reasons[entry.id] = why
    return plan
