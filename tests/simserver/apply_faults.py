"""One apply or disk fault on one simulated member, through the member's own failpoints.

Owns: ``ApplyFault`` (which failpoint, on which member incarnation, the entry it hit) and
``scoped_failpoints``, which routes ``raftkv.failpoints`` to the armed faults for as long as a
simulation runs.

Contracts:
- a fault fires once, in the process of the incarnation it was armed on, on a put: the
  ``applyCorruptValue`` failpoint (the member stores a changed value) or ``applySkipEntry``
  (the member skips the entry's effects); ``ApplyFault.index`` is then the entry's Raft index,
  read from the member's applier (``Applier.applying``: the failpoint does not pass it);
- or ``backendBitFlip``: a bit of a stored value flips at rest, after its checksum was
  computed (the disk's fault, not apply's: the apply digests agree, the value's checksum and
  the state hash tell); ``index`` is the entry whose put wrote the value;
- a fault reaches the disk with the batch holding its entry: a crash before that batch
  committed undoes it (the restarted member applies the entry again, without a fault); the
  simulation sets ``undone`` then;
- ``walNoSpace`` fires where the simulation says (``disk_full``); every other failpoint stays
  off, and the module is restored on exit.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from raftkv import failpoints
from raftkv.raft.types import Entry, EntryType
from raftkv.server.requests import RequestKind, request_kind
from tests.simserver.loop import CURRENT_PROCESS, Process

KINDS = ("applyCorruptValue", "applySkipEntry", "backendBitFlip")
AT_REST = "backendBitFlip"  # the kind whose fault no apply digest shows


@dataclass
class ApplyFault:
    kind: str
    member: str
    process: Process
    applying: Callable[[], Entry | None]  # the entry that incarnation's applier is applying
    fired: bool = False
    index: int | None = None  # the Raft index of the entry it hit
    undone: bool = False  # a crash came before the entry's batch reached the disk
    durable: bool = False  # the entry's batch reached the disk: no crash undoes it now


def _is_put(e: Entry) -> bool:
    return e.type is EntryType.NORMAL and request_kind(e.data) == RequestKind.PUT


@contextmanager
def scoped_failpoints(
    faults: list[ApplyFault], disk_full: Callable[[], bool] = lambda: False
) -> Iterator[None]:
    """``disk_full()``: whether the calling process's next WAL write fails with ENOSPC (the
    ``walNoSpace`` failpoint, a disk fault the simulation arms outside apply-fault mode)."""
    saved = failpoints.ENABLED, failpoints.hit

    def hit(name: str) -> bool:
        if name == "walNoSpace":
            return disk_full()
        for f in faults:
            if f.fired or f.kind != name or CURRENT_PROCESS.get() is not f.process:
                continue
            e = f.applying()
            if e is None:
                raise AssertionError(f"the apply fault {name} fired outside the applier's batch")
            if name == "applySkipEntry" and not _is_put(e):
                return False
            f.fired = True
            f.index = e.index
            return True
        return False

    failpoints.ENABLED, failpoints.hit = True, hit
    try:
        yield
    finally:
        failpoints.ENABLED, failpoints.hit = saved
