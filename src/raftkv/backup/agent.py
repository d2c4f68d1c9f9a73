"""The backup agent (``raftkv backup run``): scheduled full backups, deltas between them from
one watch stream, every backup verified, a manifest, retention and metrics.

Owns the loop and the order of durable steps.  A backup is

1. written to ``staging(name)`` (``DIR/<name>.part``), fsynced;
2. published under its name (rename + directory fsync, or an S3 PUT);
3. verified from what was stored (``verify``: restored with the real restore code, compared
   with a live member's HashKV); a failure moves the file to ``failed/``;
4. recorded in the manifest (atomic replace), then retention runs (manifest first, files
   after: a crash between leaves unreferenced files, never references to missing ones).

Members are read through ``raftkv.backup.source.Source`` with the TLS and auth settings of
``AgentOptions.security`` (etcdctl's flags on ``raftkv backup run``).

At start the agent removes everything incomplete: ``*.part``, temporary manifests and stored
files the manifest does not reference (a crash between 2 and 4).  A killed agent therefore
never leaves a file that looks complete, and the next run starts clean.

Fulls run every ``full_interval`` or on the cron ``schedule``; between them a ``WatchFeed``
from the chain's covered revision + 1 is cut every ``delta_interval`` into a delta (skipped
when nothing changed).  A compacted watch, a failed delta verification or a compaction seen
by the verification forces the next full at once.  On restart the chain of the newest
verified full continues from its last verified delta when the watch can still start there.

Metrics (``prometheus_client``, on ``--listen-metrics-urls``): ``raftkv_backup_last_success_
timestamp_seconds{kind}``, ``raftkv_backup_duration_seconds{kind}``, ``raftkv_backup_bytes
{kind}``, ``raftkv_backup_failures_total{kind,stage}``, ``raftkv_backup_last_verified_
revision``, ``raftkv_backup_recovery_point_lag_seconds`` (now less the moment the newest
verified backup was known to cover the whole cluster state).
"""

from __future__ import annotations

import importlib
import json
import os
import re
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from raftkv.backup.delta import Delta, DeltaFormatError, read_delta_file, write_delta_file
from raftkv.backup.destination import DestinationError, DirDestination, open_destination
from raftkv.backup.manifest import (
    FAILED_DIR,
    KIND_DELTA,
    KIND_FULL,
    BackupEntry,
    Manifest,
    format_time,
    microsecond_at_or_after,
)
from raftkv.backup.retention import RetentionPolicy, plan_retention
from raftkv.backup.snapshot_file import sha256_file
from raftkv.backup.source import Source, SourceError, WatchCompactedError, WatchFeed
from raftkv.backup.verify import (
    Verification,
    verify_chain,
    verify_full,
)
from raftkv.client.security import ClientSecurity
from raftkv.metrics_http import MetricsHTTPServer, listen_address

FULL_SUFFIX = ".snap.zst"
DELTA_SUFFIX = ".delta.zst"
_NAME = re.compile(r"^(full|delta)-[0-9TZ.\-r]+\.(snap|delta)\.zst$")


@dataclass(frozen=True)
class AgentOptions:
    endpoints: list[str]
    dest: str
    s3_endpoint_url: str = ""
    full_interval: float = 1800.0
    schedule: str = ""  # a cron expression; replaces full_interval
    delta_interval: float = 10.0  # 0: no deltas
    keep_last: int = 0
    exponential: bool = False
    once: bool = False
    dial_timeout: float = 2.0
    command_timeout: float = 30.0
    metrics_url: str = ""
    work_dir: str = ""
    log_format: str = "text"
    attempts: int = 5  # rounds over the healthy members before a full backup gives up
    security: ClientSecurity = field(default_factory=ClientSecurity)  # TLS and auth


class Logger:
    """One line per event on stderr: ``text`` or one JSON object a line (``json``)."""

    def __init__(self, fmt: str = "text", stream: Any = None) -> None:
        self.fmt = fmt
        self.stream = stream or sys.stderr
        self.lock = threading.Lock()

    def __call__(self, msg: str, level: str = "info", **fields: Any) -> None:
        now = time.time()
        if self.fmt == "json":
            line = json.dumps({"ts": format_time(now), "level": level, "msg": msg, **fields})
        else:
            extra = " ".join(f"{k}={v}" for k, v in fields.items())
            line = f"{format_time(now)} {level} {msg}" + (f" {extra}" if extra else "")
        with self.lock:
            self.stream.write(line + "\n")
            self.stream.flush()


class Metrics:
    def __init__(self) -> None:
        prom: Any = importlib.import_module("prometheus_client")
        self.prom = prom
        self.registry = prom.CollectorRegistry()
        r = self.registry
        self.last_success = prom.Gauge(
            "raftkv_backup_last_success_timestamp_seconds",
            "Unix time of the last verified backup",
            ["kind"],
            registry=r,
        )
        self.duration = prom.Histogram(
            "raftkv_backup_duration_seconds",
            "Time to take, store and verify one backup",
            ["kind"],
            buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800),
            registry=r,
        )
        self.bytes = prom.Gauge(
            "raftkv_backup_bytes",
            "Stored (compressed) size of the last backup",
            ["kind"],
            registry=r,
        )
        self.failures = prom.Counter(
            "raftkv_backup_failures_total",
            "Backups that failed, by stage (fetch, watch, store, verify)",
            ["kind", "stage"],
            registry=r,
        )
        self.last_verified_revision = prom.Gauge(
            "raftkv_backup_last_verified_revision",
            "Revision covered by the newest verified backup",
            registry=r,
        )
        self.lag = prom.Gauge(
            "raftkv_backup_recovery_point_lag_seconds",
            "Seconds since the newest verified backup was known to cover the cluster's state",
            registry=r,
        )
        self.covered_at = 0.0
        self.lag.set_function(lambda: time.time() - self.covered_at if self.covered_at else 0.0)
        self.server: MetricsHTTPServer | None = None

    def serve(self, url: str) -> str:
        """Serve the registry at ``url`` (``host:port`` or a URL; no port: any free one);
        the URL scraped."""
        host, port = listen_address(url, default_port=0)
        self.server = MetricsHTTPServer(host, port, self.registry)
        self.server.start()
        return self.server.url

    def close(self) -> None:
        if self.server is not None:
            self.server.close()


@dataclass
class Chain:
    """The newest verified full and the verified deltas after it, ready to be continued."""

    full: BackupEntry
    full_db: str  # the decompressed full, local
    deltas: list[tuple[BackupEntry, Delta]] = field(default_factory=list)

    @property
    def covered(self) -> int:
        return self.deltas[-1][1].to_revision if self.deltas else self.full.to_revision

    @property
    def last_id(self) -> str:
        return self.deltas[-1][0].id if self.deltas else self.full.id

    @property
    def leases(self) -> tuple[tuple[int, int], ...] | None:
        return self.deltas[-1][1].leases if self.deltas else None


def stamp(ts: float) -> str:
    return format_time(ts).replace(":", "").replace("-", "")


class Agent:
    def __init__(self, opts: AgentOptions, log: Logger, stop: threading.Event | None = None):
        self.opts = opts
        self.log = log
        self.stop = stop or threading.Event()
        self.metrics = Metrics()
        self.source = Source(opts.endpoints, opts.dial_timeout, opts.command_timeout, opts.security)
        self.dest = open_destination(
            opts.dest, s3_endpoint_url=opts.s3_endpoint_url, work_dir=opts.work_dir
        )
        self.policy = RetentionPolicy(opts.keep_last, opts.exponential)
        self.work = ""  # scratch space, made by ``startup`` once old leftovers are gone
        self.manifest = Manifest()
        self.chain: Chain | None = None
        self.feed: WatchFeed | None = None
        self.force_full = False

    # -- the loop -----------------------------------------------------------------------

    def run(self) -> int:
        try:
            if self.opts.metrics_url:
                url = self.metrics.serve(self.opts.metrics_url)
                self.log("serving metrics", url=url)
            self.startup()
            if self.opts.once:
                entry = self.take_full()
                self.prune()
                return 0 if entry is not None and entry.verified else 1
            return self.loop()
        finally:
            self.shutdown()

    def startup(self) -> None:
        removed = self.dest.cleanup_incomplete()
        if self.opts.work_dir:
            os.makedirs(self.opts.work_dir, exist_ok=True)
        base = self.opts.work_dir or (
            self.dest.root if isinstance(self.dest, DirDestination) else tempfile.gettempdir()
        )
        # a ``.part`` directory: removed as incomplete by the next start if this run is killed
        self.work = tempfile.mkdtemp(prefix=".work-", suffix=".part", dir=base)
        self.manifest = self.dest.read_manifest()
        removed += self._remove_unreferenced()
        if removed:
            self.log("removed incomplete files of an earlier run", files=",".join(removed))
        self.log(
            "backup agent started", dest=self.dest.describe(), backups=len(self.manifest.backups)
        )

    def _remove_unreferenced(self) -> list[str]:
        """Backup files no manifest entry names: published by a run killed before it wrote
        the manifest, or pruned from the manifest by one killed before deleting them."""
        referenced = {e.file for e in self.manifest.backups}
        removed = []
        for name in self.dest.names():
            if _NAME.match(name.rsplit("/", 1)[-1]) and name not in referenced:
                self.dest.delete(name)
                removed.append(name)
        return removed

    def loop(self) -> int:
        self.resume_chain()
        next_full = self._first_full_time()
        next_delta = time.monotonic() + self.opts.delta_interval
        backoff = 1.0
        while not self.stop.is_set():
            if self.force_full or time.time() >= next_full:
                self.force_full = False
                self.cut_delta()  # the old chain reaches as far as it can
                entry = self.take_full()
                if entry is not None and entry.verified:
                    backoff = 1.0
                    next_full = self._next_full_time(time.time())
                    self.prune()
                else:
                    next_full = time.time() + backoff
                    backoff = min(backoff * 2, 60.0)
                next_delta = time.monotonic() + self.opts.delta_interval
            elif self.opts.delta_interval > 0 and time.monotonic() >= next_delta:
                # cuts start every interval; one whose verification took longer starts at once
                next_delta = time.monotonic() + self.opts.delta_interval
                self.cut_delta()
            wait = next_full - time.time()
            if self.opts.delta_interval > 0:
                wait = min(wait, next_delta - time.monotonic())
            if not self.force_full and wait > 0:
                self.stop.wait(min(wait, 1.0))
        self.cut_delta()
        return 0

    def shutdown(self) -> None:
        if self.feed is not None:
            self.feed.close()
        self.source.close()
        self.dest.close()
        self.metrics.close()
        if self.work:
            shutil.rmtree(self.work, ignore_errors=True)

    def _first_full_time(self) -> float:
        if self.chain is None:
            return time.time()
        return self._next_full_time(self.chain.full.cut_ts)

    def _next_full_time(self, after: float) -> float:
        if self.opts.schedule:
            croniter: Any = importlib.import_module("croniter")
            return float(croniter.croniter(self.opts.schedule, after).get_next(float))
        return after + self.opts.full_interval

    # -- full backups ---------------------------------------------------------------------

    def take_full(self) -> BackupEntry | None:
        """Fetch, store, verify and record one full backup; None when no member could give
        one after ``attempts`` rounds with exponential backoff."""
        started = time.time()
        name = f"full-{stamp(started)}{FULL_SUFFIX}"
        staged = self.dest.staging(name)
        fetched = None
        delay = 0.5
        for _round in range(self.opts.attempts):
            endpoints, why = self.source.candidates()
            if why:
                self.log("members skipped", reason=why)
            for endpoint in endpoints:
                try:
                    with open(staged, "wb") as f:
                        fetched = self.source.fetch_snapshot(endpoint, f)
                        f.flush()
                        os.fsync(f.fileno())
                    break
                except (SourceError, OSError) as exc:
                    self.metrics.failures.labels(KIND_FULL, "fetch").inc()
                    self.log("snapshot failed; trying the next member", "warn", error=str(exc))
            if fetched is not None or self.stop.is_set():
                break
            self.stop.wait(delay)
            delay = min(delay * 2, 10.0)
        if fetched is None:
            self.dest.discard(staged)
            self.log("no healthy member gave a snapshot", "error")
            return None
        db = os.path.join(self.work, f"{name}.db")
        stored = self._store(
            KIND_FULL,
            name,
            staged,
            lambda p: verify_full(p, self.work, self.source.live_hash, None, keep_db=db),
        )
        if stored is None:
            return None
        file, sha, check = stored
        state = check.state
        revision = state.revision if state is not None else 0
        entry = BackupEntry(
            id=name.removesuffix(FULL_SUFFIX),
            kind=KIND_FULL,
            file=file,
            from_revision=0,
            to_revision=revision,
            sha256=sha,
            size_raw=fetched.raw_size,
            size_compressed=fetched.compressed_size,
            started=format_time(started),
            finished=format_time(time.time()),
            cut_time=format_time(started),
            state=state,
            verified=check.ok,
            verify_method=check.method,
            verify_error=check.error,
            duration_seconds=round(time.time() - started, 3),
            verify_seconds=round(check.seconds, 3),
            source=fetched.endpoint,
        )
        entry = self._record(entry, check)
        if entry.verified:
            self._start_chain(Chain(entry, db))
        return entry

    def _store(
        self, kind: str, name: str, staged: str, run: Callable[[str], Verification]
    ) -> tuple[str, str, Verification] | None:
        """Verify the staged file, then publish it under ``name`` (or ``failed/<name>``);
        (stored name, SHA-256, verification), or None when it could not be stored."""
        try:
            sha = sha256_file(staged)
            check = run(staged)
            file = name if check.ok else f"{FAILED_DIR}/{name}"
            self.dest.publish(file, staged, sha)
        except (DestinationError, OSError) as exc:
            self.dest.discard(staged)
            self.metrics.failures.labels(kind, "store").inc()
            self.log(f"storing the {kind} backup failed", "error", error=str(exc))
            return None
        return file, sha, check

    def _verify_stored(
        self, name: str, sha: str, run: Callable[[str], Verification]
    ) -> Verification:
        """Verify what the destination holds under ``name`` (downloaded for S3)."""
        scratch = tempfile.mkdtemp(prefix="dl-", dir=self.work)
        try:
            local = self.dest.local_copy(name, scratch)
            if sha256_file(local) != sha:
                return Verification(False, "", f"{name}: stored SHA-256 differs", None, 0.0)
            return run(local)
        except (DestinationError, OSError) as exc:
            return Verification(False, "", f"{name}: {exc}", None, 0.0)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)

    def _record(self, entry: BackupEntry, check: Verification) -> BackupEntry:
        """Write the manifest with ``entry``, update metrics and log."""
        kind = entry.kind
        if not check.ok:
            self.metrics.failures.labels(kind, "verify").inc()
            self.log(
                "backup failed verification",
                "error",
                id=entry.id,
                file=entry.file,
                error=check.error,
            )
        self.manifest.put(entry)
        self.dest.write_manifest(self.manifest)
        if check.ok:
            self.metrics.last_success.labels(kind).set(time.time())
            self.metrics.duration.labels(kind).observe(entry.duration_seconds)
            self.metrics.bytes.labels(kind).set(entry.size_compressed)
            self.metrics.last_verified_revision.set(entry.to_revision)
            self.metrics.covered_at = entry.cut_ts
            self.log(
                f"{kind} backup verified",
                id=entry.id,
                revision=entry.to_revision,
                bytes=entry.size_compressed,
                how=check.method,
            )
        return entry

    # -- deltas ---------------------------------------------------------------------------

    def _start_chain(self, chain: Chain) -> None:
        old = self.chain
        if old is not None and old.full_db != chain.full_db and os.path.exists(old.full_db):
            os.unlink(old.full_db)
        if self.feed is not None:
            self.feed.close()
            self.feed = None
        self.chain = chain
        if self.opts.delta_interval > 0 and not self.opts.once:
            self.feed = WatchFeed(self.source, chain.covered + 1, lambda m: self.log(m))

    def resume_chain(self) -> None:
        """Continue the newest verified full's chain from the manifest, if its files read."""
        full = self.manifest.newest_verified_full()
        if full is None:
            return
        deltas = self.manifest.chain(full.id)
        db = os.path.join(self.work, f"{full.file}.db")
        check = self._verify_stored(
            full.file,
            full.sha256,
            lambda p: verify_full(p, self.work, None, full.state, keep_db=db),
        )
        if not check.ok:
            self.log("cannot continue the newest full backup", "warn", error=check.error)
            return
        chain = Chain(full, db)
        scratch = tempfile.mkdtemp(prefix="dl-", dir=self.work)
        try:
            for entry in deltas:
                chain.deltas.append(
                    (entry, read_delta_file(self.dest.local_copy(entry.file, scratch)))
                )
        except (DeltaFormatError, DestinationError, OSError) as exc:  # the chain ends there
            self.log("stopped reading the chain", "warn", error=str(exc))
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        self._start_chain(chain)
        self.metrics.covered_at = (chain.deltas[-1][0] if chain.deltas else full).cut_ts
        self.log(
            "continuing the chain", full=full.id, deltas=len(chain.deltas), revision=chain.covered
        )

    def cut_delta(self) -> BackupEntry | None:
        chain, feed = self.chain, self.feed
        if chain is None or feed is None:
            return None
        started = time.time()
        try:
            groups, covered = feed.cut(timeout=max(10.0, 3 * self.opts.delta_interval))
            leases = tuple(self.source.lease_table())
            # the moment the progress response confirmed ``covered``: after every event
            # taken, in the microseconds the manifest keeps, so that ``--to-time`` of the
            # manifest's cut_time restores exactly to_revision
            cut = microsecond_at_or_after(time.time())
        except WatchCompactedError as exc:
            self.log("the watch cannot continue; taking a full backup", "warn", error=str(exc))
            self.metrics.failures.labels(KIND_DELTA, "watch").inc()
            self.force_full = True
            return None
        except SourceError as exc:
            self.metrics.failures.labels(KIND_DELTA, "watch").inc()
            self.log("delta cut failed; retrying at the next interval", "warn", error=str(exc))
            return None
        if not groups and leases == chain.leases:
            if covered == chain.covered:
                self.metrics.covered_at = cut  # nothing changed since the newest backup
            return None
        delta = Delta(
            base=chain.full.id,
            prev=chain.last_id,
            from_revision=chain.covered,
            to_revision=max(covered, chain.covered),
            created=started,
            cut_time=cut,
            groups=tuple(groups),
            leases=leases,
        )
        name = (
            f"delta-{stamp(started)}-r{delta.from_revision + 1}-r{delta.to_revision}{DELTA_SUFFIX}"
        )
        staged = self.dest.staging(name)
        try:
            with open(staged, "wb") as f:
                raw = write_delta_file(f, delta)
                f.flush()
                os.fsync(f.fileno())
            size = os.path.getsize(staged)
        except OSError as exc:
            self.dest.discard(staged)
            self.metrics.failures.labels(KIND_DELTA, "store").inc()
            self.log("writing a delta failed; taking a full backup", "error", error=str(exc))
            self.force_full = True
            return None
        deltas = [d for _e, d in chain.deltas] + [delta]
        stored = self._store(
            KIND_DELTA, name, staged, lambda p: self._verify_delta(p, chain, deltas)
        )
        if stored is None:
            self.force_full = True
            return None
        file, sha, check = stored
        entry = BackupEntry(
            id=name.removesuffix(DELTA_SUFFIX),
            kind=KIND_DELTA,
            file=file,
            base=chain.full.id,
            prev=chain.last_id,
            from_revision=delta.from_revision,
            to_revision=delta.to_revision,
            sha256=sha,
            size_raw=raw,
            size_compressed=size,
            started=format_time(started),
            finished=format_time(time.time()),
            cut_time=format_time(cut),
            state=check.state,
            verified=check.ok,
            verify_method=check.method,
            verify_error=check.error,
            duration_seconds=round(time.time() - started, 3),
            verify_seconds=round(check.seconds, 3),
            events=delta.event_count,
            source=feed.endpoint,
        )
        entry = self._record(entry, check)
        if entry.verified:
            chain.deltas.append((entry, delta))
            if "compacted at" in check.method:
                self.force_full = True  # later deltas could not be compared either
        else:
            self.force_full = True
        return entry

    def _verify_delta(self, stored: str, chain: Chain, deltas: list[Delta]) -> Verification:
        try:
            read_delta_file(stored)  # what was stored decodes
        except DeltaFormatError as exc:
            return Verification(False, "", str(exc), None, 0.0)
        return verify_chain(
            chain.full_db,
            chain.full.to_revision,
            deltas,
            deltas[-1].leases,
            self.work,
            self.source.live_hash,
            None,
        )

    # -- retention ------------------------------------------------------------------------

    def prune(self) -> None:
        plan = plan_retention(self.manifest, time.time(), self.policy)
        if not plan.delete:
            return
        self.manifest.remove(e.id for e in plan.delete)
        self.dest.write_manifest(self.manifest)
        for entry in plan.delete:
            try:
                self.dest.delete(entry.file)
            except (DestinationError, OSError) as exc:
                self.log(
                    "could not delete a pruned backup", "warn", file=entry.file, error=str(exc)
                )
        self.log("retention pruned backups", deleted=",".join(e.id for e in plan.delete))
