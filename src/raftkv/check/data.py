"""``raftkv check data``: offline verification of one stopped member's data directory.

Owns: the order of the checks and the refusal to check a running member.  The checks are
``member`` (is the member stopped?), ``wal``, ``snap`` and ``backend`` (every record of the
member's files, ``raftkv.guard.check_files``) and ``rebuild`` (state rebuilt from snapshot +
WAL with the real Applier, compared with the backend, ``raftkv.check.rebuild``).

Contracts:
- read-only: nothing under the data directory is created, modified or locked for longer than a
  non-blocking probe; the rebuild works in a temporary directory (``work_dir``);
- a member is running when the LMDB lock file of its backend is locked by another process
  (LMDB holds a shared lock on its first byte while an environment is open) or its WAL
  directory is ``flock``-ed (the WAL holds it while open); then nothing else is checked and
  the report says "could not tell" (exit 2);
- returns a ``DataReport``; printing is the caller's.
"""

from __future__ import annotations

import fcntl
import os
import struct

from raftkv.check.rebuild import rebuild_and_compare
from raftkv.guard.check_files import check_snapshots, check_wal, read_lmdb
from raftkv.guard.check_report import CheckResult, DataReport, Finding, Severity
from raftkv.lease.lessor import min_lease_ttl
from raftkv.server.data_dir import DataDir

DEFAULT_HEARTBEAT_MS = 100
DEFAULT_ELECTION_MS = 1000

# Linux ``struct flock``: l_type, l_whence, l_start, l_len, l_pid (padded to 32 bytes).
_FLOCK = struct.Struct("@hhqqi4x")


def lease_floor(heartbeat_ms: int, election_ms: int) -> int:
    """The minimum lease TTL a member started with these flags uses (as ``raftkv serve``)."""
    return min_lease_ttl(max(1, election_ms // heartbeat_ms), heartbeat_ms)


def lmdb_lock_holder(db_dir: str) -> int | None:
    """PID of another process holding the LMDB lock file of ``db_dir``, or None.

    Asks with ``F_GETLK`` (which never takes a lock) whether byte 0 of ``lock.mdb`` could be
    write-locked.  A lock held by this process itself is not reported (POSIX lock semantics).
    """
    path = os.path.join(db_dir, "lock.mdb")
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        query = _FLOCK.pack(fcntl.F_WRLCK, os.SEEK_SET, 0, 1, 0)
        answer = fcntl.fcntl(fd, fcntl.F_GETLK, query)
        l_type, _whence, _start, _len, pid = _FLOCK.unpack(answer)
    finally:
        os.close(fd)
    return int(pid) if l_type != fcntl.F_UNLCK else None


def wal_locked(wal_dir: str) -> bool:
    """True when another open WAL holds the ``flock`` of ``wal_dir``."""
    try:
        fd = os.open(wal_dir, os.O_RDONLY | os.O_DIRECTORY)
    except (FileNotFoundError, NotADirectoryError):
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # releases the probe's shared lock
    return False


def running_reason(dd: DataDir) -> str | None:
    """Why the member of ``dd`` looks alive, or None when it is stopped."""
    pid = lmdb_lock_holder(dd.db)
    if pid is not None:
        return f"the LMDB lock {os.path.join(dd.db, 'lock.mdb')} is held by process {pid}"
    if wal_locked(dd.wal):
        return f"the WAL directory {dd.wal} is locked by another process"
    return None


def check_data(
    data_dir: str,
    *,
    lease_min_ttl: int | None = None,
    work_dir: str | None = None,
    rebuild: bool = True,
    wal_dir: str = "",
) -> DataReport:
    """Verify the member data directory ``data_dir`` (the ``--data-dir`` it ran with).

    ``lease_min_ttl`` is the member's minimum lease TTL (default: that of the default
    ``--heartbeat-interval`` and ``--election-timeout``); ``rebuild=False`` skips the rebuild.
    """
    dd = DataDir(os.path.abspath(data_dir), os.path.abspath(wal_dir) if wal_dir else "")
    report = DataReport(dd.root)
    member = CheckResult("member")
    report.checks.append(member)
    if not os.path.isdir(dd.member):
        member.summary = "not a member data directory"
        member.add(
            Finding(Severity.UNKNOWN, dd.root, "not a member data directory (no member/ in it)")
        )
        return report
    try:
        _run_checks(dd, report, member, lease_min_ttl, work_dir, rebuild)
    except OSError as exc:
        member.add(Finding(Severity.UNKNOWN, str(exc.filename or dd.root), f"unreadable: {exc}"))
    return report


def _run_checks(
    dd: DataDir,
    report: DataReport,
    member: CheckResult,
    lease_min_ttl: int | None,
    work_dir: str | None,
    rebuild: bool,
) -> None:
    reason = running_reason(dd)
    if reason is not None:
        member.summary = "running"
        member.add(
            Finding(Severity.UNKNOWN, dd.root, f"member is running: {reason}; stop it first")
        )
        return
    member.summary = "stopped"

    wal_result, wal = check_wal(dd.wal)
    snap_result, files = check_snapshots(dd.snap)
    backend_result, stored = read_lmdb(dd.db)
    report.checks += [wal_result, snap_result, backend_result]
    if not rebuild:
        report.checks.append(CheckResult("rebuild", "skipped: not asked for", skipped=True))
        return
    floor = (
        lease_min_ttl
        if lease_min_ttl is not None
        else lease_floor(DEFAULT_HEARTBEAT_MS, DEFAULT_ELECTION_MS)
    )
    report.checks.append(
        rebuild_and_compare(
            db_dir=dd.db,
            wal=wal,
            files=files,
            stored=stored,
            min_lease_ttl=floor,
            work_dir=work_dir,
        )
    )
