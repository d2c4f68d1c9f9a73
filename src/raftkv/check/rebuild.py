"""Rebuild a stopped member's state from raft snapshot + WAL and compare it with its backend.

Owns: the choice of the rebuild base, driving the real ``raftkv.server.applier.Applier`` over
the committed entries into a temporary directory, and the comparison of the rebuilt state with
a copy of the member's backend at the same applied index: the state hash parts
(``StateHash.diff``), the apply-digest chain head, the stored term, and the first Raft index
whose effects differ in the key history.

Contracts:
- the member's files are only read: its LMDB environment is copied (read-only, no lock) into
  the temporary directory and the copy is opened with the Applier, exactly as the member opens
  its backend at start-up; the rebuilt backend is created there too; both are deleted after;
  like the member's own, every copy is private (files 0600, directories 0700);
- the base is index 1 (the bootstrap raft snapshot's member list, ``write_initial_members``) or
  a ``*.snap.db`` backend copy whose consistent index ``c`` satisfies
  ``c >= first retained WAL index - 1``: the copy a restore keeps at index 1, or the backend
  a member received with a Raft snapshot, which it keeps once installed (its WAL starts after
  that snapshot); entries ``base+1 .. consistent index`` are applied, taken from the WAL's
  entries after its last received snapshot's marker (``WalContents``);
- the Applier needs no event loop: only proposals create waiters, and none are made here; its
  lessor is never promoted, so ``_now_if`` passes no clock and no lease expires while applying
  (expiry reaches the state only as revoke entries in the WAL);
- entries are applied one per ``apply_entries`` call (state does not depend on batching, as on
  every member), so the revision each entry left behind is known; pending compactions are run
  to completion on both sides before hashing, as the member's compaction loop would;
- failpoints configured in this process would change what the Applier does: the rebuild then
  refuses (could not tell) instead of producing a false divergence.
"""

from __future__ import annotations

import bisect
import os
import shutil
import tempfile
from dataclasses import dataclass, replace
from itertools import zip_longest
from typing import Any

import lmdb

from raftkv import failpoints
from raftkv.fileutil import PRIVATE_FILE_MODE, copy_file, mkdir_all
from raftkv.guard.check_files import BackendInfo, SnapFiles, WalContents
from raftkv.guard.check_report import CheckResult, Finding, Severity
from raftkv.guard.digest import META_APPLY_DIGEST
from raftkv.guard.state_hash import StateHash
from raftkv.mvcc.backend import BUCKET_KEY, DEFAULT_MAP_SIZE, Backend, BackendConfig
from raftkv.mvcc.revision import SUB_BITS, bytes_to_rev, decode_kv, rev_to_bytes
from raftkv.raft.types import Snapshot
from raftkv.server.applier import Applier
from raftkv.server.bootstrap import decode_members
from raftkv.server.data_dir import DataDir


@dataclass(frozen=True, slots=True)
class RebuildBase:
    """Where the rebuild starts: the state after entry ``index``."""

    index: int
    source: str  # "bootstrap snapshot" or the backend copy's path
    snapshot: Snapshot | None = None
    backend_path: str | None = None


def choose_base(wal: WalContents, files: SnapFiles, target: int) -> RebuildBase | str:
    """The base to rebuild entries up to ``target`` from, or why there is none."""
    first, last = wal.first_index, wal.last_index

    def covered(base: int) -> bool:
        if base >= target:
            return True
        return first is not None and last is not None and first <= base + 1 and last >= target

    copies = [
        b for b in files.backends if b.consistent_index is not None and b.consistent_index <= target
    ]
    # A backend copy at index 1 is the state a restore started the member from (the bootstrap
    # snapshot holds only the member list then): it is the base, never the empty state.
    restored = [b for b in copies if b.consistent_index == 1]
    if restored and covered(1):
        return RebuildBase(1, restored[0].path, backend_path=restored[0].path)
    boot = files.snapshots.get(1)
    if boot is not None and covered(1):
        return RebuildBase(1, "bootstrap snapshot", snapshot=boot)
    copies.sort(key=lambda b: b.consistent_index or 0, reverse=True)
    for b in copies:
        assert b.consistent_index is not None
        if covered(b.consistent_index):
            return RebuildBase(b.consistent_index, b.path, backend_path=b.path)
    if first is None:
        return f"cannot rebuild: the WAL holds no entry and no backend copy is at index {target}"
    if boot is None and first <= 2:
        return (
            "cannot rebuild: the bootstrap snapshot (index 1) is missing and no backend copy "
            "covers the WAL"
        )
    return f"cannot rebuild: WAL starts at index {first} and no backend copy covers it"


def _applier(root: str, min_lease_ttl: int, map_size: int) -> Applier:
    config = BackendConfig(map_size=map_size, sync_mode="nosync")
    return Applier.detached(root, config, min_lease_ttl)


def _state_hash(applier: Applier, index: int) -> StateHash:
    """The member's own state hash of ``applier`` (every part, cluster records included),
    labelled with ``index``."""
    if applier.store.compaction_pending():
        applier.store.run_compaction()
    return replace(applier.state_hash_deferred()(), applied_index=index)


def _copy_env(src_dir: str, dst_dir: str) -> None:
    mkdir_all(dst_dir)
    env: Any = lmdb.open(src_dir, readonly=True, lock=False, max_dbs=64, readahead=False)
    try:
        dst = os.path.join(dst_dir, "data.mdb")
        fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE_MODE)
        try:
            env.copyfd(fd, compact=True)
        finally:
            os.close(fd)
    finally:
        env.close()


def _first_key_difference(a: Backend, b: Backend) -> tuple[int, str] | None:
    """(packed revision, description) of the first key-bucket record that differs."""
    with a.read() as ta, b.read() as tb:
        for x, y in zip_longest(ta.iterate(BUCKET_KEY), tb.iterate(BUCKET_KEY)):
            if x == y:
                continue
            rev = min(bytes_to_rev(p[0]) for p in (x, y) if p is not None)
            return rev, f"stored {_describe(x)}, rebuilt {_describe(y)}"
    return None


def _describe(rec: tuple[bytes, bytes] | None) -> str:
    if rec is None:
        return "nothing"
    rev = bytes_to_rev(rec[0])
    kv = decode_kv(rec[1])
    what = "tombstone" if len(rec[0]) > 17 else f"value {kv.value[:40]!r}"
    return f"rev {rev >> SUB_BITS}.{rev & 0xFFFFFFFF} key {kv.key[:60]!r} {what}"


@dataclass
class _Rebuilt:
    applier: Applier
    base_revision: int  # store revision at the base
    revisions: list[int]  # store revision after each applied entry, base+1 first


class RebuildFailedError(Exception):
    """The Applier raised while applying ``index`` (the member would have stopped there too)."""

    def __init__(self, index: int, cause: BaseException) -> None:
        super().__init__(f"applying entry {index} raised {cause!r}")
        self.index = index


def _rebuild(
    root: str,
    base: RebuildBase,
    wal: WalContents,
    target: int,
    min_ttl: int,
    map_size: int,
    opened: list[Applier],
) -> _Rebuilt:
    """Apply entries ``base+1 .. target`` onto the base; the Applier is appended to ``opened``
    as soon as it exists (the caller closes it)."""
    if base.backend_path is not None:
        db = DataDir(root).db
        mkdir_all(db)
        copy_file(base.backend_path, os.path.join(db, "data.mdb"))
    applier = _applier(root, min_ttl, map_size)
    opened.append(applier)
    if base.snapshot is not None:
        applier.write_initial_members(decode_members(base.snapshot.data))
    base_revision = applier.store.current_revision
    revisions: list[int] = []
    for index in range(base.index + 1, target + 1):
        entry = wal.entry(index)
        assert entry is not None, f"entry {index} is missing although the base covers it"
        try:
            applier.apply_entries([entry])
            if applier.store.compaction_pending():
                applier.store.run_compaction()
        except Exception as exc:
            raise RebuildFailedError(index, exc) from exc
        revisions.append(applier.store.current_revision)
    return _Rebuilt(applier, base_revision, revisions)


def rebuild_and_compare(
    *,
    db_dir: str,
    wal: WalContents,
    files: SnapFiles,
    stored: BackendInfo,
    min_lease_ttl: int,
    work_dir: str | None = None,
) -> CheckResult:
    """Rebuild into a temporary directory under ``work_dir`` and compare with ``db_dir``."""
    result = CheckResult("rebuild")
    data_file = os.path.join(db_dir, "data.mdb")
    if wal.corrupt:
        result.skipped = True
        result.summary = "skipped: the WAL is corrupt"
        return result
    if not stored.readable or stored.consistent_index is None:
        result.skipped = True
        result.summary = "skipped: the backend has unreadable values or no consistent index"
        return result
    if failpoints.ENABLED:
        result.add(Finding(Severity.UNKNOWN, db_dir, "cannot rebuild: failpoints are configured"))
        return result
    target = stored.consistent_index
    if target == 0:
        result.skipped = True
        result.summary = "skipped: the backend has applied nothing (consistent index 0)"
        return result
    commit = wal.hard_state.commit
    # What the WAL knows of: its entries and its snapshot markers (a member stopped right
    # after installing a snapshot holds no entry after it).  A backend received with a
    # snapshot may be past both (the sender had applied more): a kept copy at exactly the
    # backend's index is then its base, and the comparison is with that copy.
    known = max([wal.last_index or 0, *(m.index for m in wal.markers)])
    at_copy = any(b.consistent_index == target for b in files.backends)
    if not at_copy and (target > commit or (target > 1 and known < target)):
        result.add(
            Finding(
                Severity.DIVERGENT,
                data_file,
                f"backend consistent index {target} is beyond what the WAL holds "
                f"(commit {commit}, last entry {wal.last_index})",
                index=target,
            )
        )
        return result
    base = choose_base(wal, files, target)
    if isinstance(base, str):
        result.add(Finding(Severity.UNKNOWN, db_dir, base))
        return result
    result.details = {"base_index": base.index, "base": base.source, "applied_index": target}
    map_size = max(DEFAULT_MAP_SIZE, 2 * os.path.getsize(data_file))
    tmp = tempfile.mkdtemp(prefix="raftkv-check-", dir=work_dir)
    opened: list[Applier] = []
    try:
        try:
            _copy_env(db_dir, DataDir(os.path.join(tmp, "stored")).db)
            stored_side = _applier(os.path.join(tmp, "stored"), min_lease_ttl, map_size)
        except Exception as exc:
            result.add(
                Finding(Severity.CORRUPT, data_file, f"the member cannot load this backend: {exc}")
            )
            return result
        opened.append(stored_side)
        try:
            rebuilt = _rebuild(
                os.path.join(tmp, "rebuilt"), base, wal, target, min_lease_ttl, map_size, opened
            )
        except RebuildFailedError as exc:
            result.add(
                Finding(Severity.UNKNOWN, data_file, f"rebuild failed: {exc}", index=exc.index)
            )
            return result
        _compare(result, data_file, stored, stored_side, rebuilt, base, wal, target)
    finally:
        for a in opened:
            a.close()
        shutil.rmtree(tmp, ignore_errors=True)
    return result


def _compare(
    result: CheckResult,
    data_file: str,
    stored: BackendInfo,
    stored_side: Applier,
    rebuilt: _Rebuilt,
    base: RebuildBase,
    wal: WalContents,
    target: int,
) -> None:
    mine = _state_hash(stored_side, target)
    theirs = _state_hash(rebuilt.applier, target)
    parts = mine.diff(theirs)
    rebuilt_head = rebuilt.applier.digest.latest()
    result.details.update(
        stored_state=mine.to_dict(),
        rebuilt_state=theirs.to_dict(),
        differing_parts=list(parts),
        rebuilt_apply_digest=rebuilt_head[1].hex(),
    )
    first_index: int | None = None
    keys_told = False
    if "keys" in parts or "revision" in parts:
        found = _locate_key_difference(stored_side, rebuilt, base)
        if found is not None:
            first_index, finding = found
            result.add(Finding(**{**finding, "path": data_file}))
            keys_told = True
    for part in parts:
        if part == "keys" and keys_told:
            continue
        result.add(
            Finding(
                Severity.DIVERGENT,
                data_file,
                f"{part}: stored {_part(mine, part)}, rebuilt {_part(theirs, part)}",
                index=first_index,
            )
        )
    digest_equal = _compare_digest(result, data_file, stored, rebuilt_head, target, first_index)
    entry = wal.entry(target)
    if entry is not None and stored.term is not None and stored.term != entry.term:
        result.add(
            Finding(
                Severity.DIVERGENT,
                data_file,
                f"stored term {stored.term}, the WAL's entry {target} has term {entry.term}",
                bucket="meta",
                index=target,
            )
        )
    result.details["first_divergent_index"] = first_index
    if parts and digest_equal:
        tail = "; the backend changed after the entries were applied (the apply digest matches)"
    elif not digest_equal:
        tail = "; the entries were applied differently (the apply digest differs)"
    else:
        tail = ""
    result.summary = (
        f"base index {base.index} ({base.source}), applied {base.index + 1}..{target}: "
        f"state hash {theirs.value.hex()} {'equal' if not parts else 'DIFFERENT'}, apply digest "
        f"{'equal' if digest_equal else 'DIFFERENT'}{tail}"
    )


def _locate_key_difference(
    stored_side: Applier, rebuilt: _Rebuilt, base: RebuildBase
) -> tuple[int | None, dict[str, Any]] | None:
    """(first diverging Raft index, Finding fields) from the first differing key record."""
    diff = _first_key_difference(stored_side.backend, rebuilt.applier.backend)
    if diff is None:
        return None
    rev, text = diff
    main = rev >> SUB_BITS
    index: int | None = None
    if main <= rebuilt.base_revision:
        where = f"at or before the base index {base.index}"
    else:
        index = _index_of_revision(rebuilt.revisions, base.index, main)
        where = f"written by entry {index}" if index is not None else "beyond the rebuilt history"
    return index, {
        "severity": Severity.DIVERGENT,
        "message": f"keys: first differing revision {main} ({where}): {text}",
        "bucket": BUCKET_KEY,
        "key": rev_to_bytes(rev),
        "index": index,
    }


def _compare_digest(
    result: CheckResult,
    data_file: str,
    stored: BackendInfo,
    rebuilt_head: tuple[int, bytes],
    target: int,
    first_index: int | None,
) -> bool:
    """Compare the stored apply-digest chain head with the rebuilt one; True when equal."""
    head = stored.digest_head
    if head is None or head[0] != target:
        result.add(
            Finding(
                Severity.CORRUPT,
                data_file,
                f"apply digest head is at index {head[0] if head else None}, the consistent "
                f"index is {target}",
                bucket="meta",
                key=META_APPLY_DIGEST,
            )
        )
        return False
    if head[1] == rebuilt_head[1]:
        return True
    located = (
        f"first diverging index {first_index} (from the key history)"
        if first_index is not None
        else "the first diverging index cannot be told from the chain head alone"
    )
    result.add(
        Finding(
            Severity.DIVERGENT,
            data_file,
            f"apply digest at index {target}: stored {head[1].hex()}, rebuilt "
            f"{rebuilt_head[1].hex()}; {located}",
            bucket="meta",
            key=META_APPLY_DIGEST,
            index=first_index,
        )
    )
    return False


def _index_of_revision(revisions: list[int], base: int, main_rev: int) -> int | None:
    """The first entry after ``base`` whose apply reached revision ``main_rev``."""
    pos = bisect.bisect_left(revisions, main_rev)
    return base + 1 + pos if pos < len(revisions) else None


def _part(h: StateHash, part: str) -> str:
    value = getattr(h, part)
    return value.hex() if isinstance(value, bytes) else str(value)
