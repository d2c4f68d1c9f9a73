"""Where a member's CPU goes, by component, from the py-spy profiles ``cpu_per_request.py``
records (``--py-spy DIR --native``).

Owns: reading py-spy's ``raw`` (collapsed stack) files, dropping the samples of threads that
wait (epoll, condition variables, the GIL, fdatasync: py-spy samples every thread, idle or not)
and attributing each remaining sample to one component: the innermost frame of raftkv's own
code decides (``COMPONENTS``, first matching path prefix), else the library it is in (gRPC,
protobuf, the event loop, LMDB, the garbage collector).  With ``--ms-per-request`` (the
member's figure from ``cpu_per_request.py``) the shares become microseconds per request.

    python bench/cpu_per_request.py --total 30000 --py-spy /tmp/prof --native --rate 200
    python bench/profile_table.py /tmp/prof/leader.txt /tmp/prof/follower.txt \\
        --ms-per-request 0.165,0.145

The attribution is by sample counts, so it is as exact as the sampling: a component under
1 % is noise.
"""

from __future__ import annotations

import argparse
import collections
import re
from collections.abc import Iterable
from pathlib import Path

# Path fragments of raftkv's modules -> component, the first match wins.
COMPONENTS: tuple[tuple[str, str], ...] = (
    ("raftkv/raft/", "Raft core (raftkv.raft)"),
    ("raftkv/wal/", "WAL"),
    ("raftkv/peer/", "peer transport"),
    ("raftkv/server/raft_node.py", "Ready loop"),
    ("raftkv/server/worker.py", "Ready loop"),
    ("raftkv/server/applier.py", "apply (applier, MVCC, digest)"),
    ("raftkv/mvcc/", "apply (applier, MVCC, digest)"),
    ("raftkv/guard/digest.py", "apply (applier, MVCC, digest)"),
    ("raftkv/server/leases.py", "apply (applier, MVCC, digest)"),
    ("raftkv/lease/", "apply (applier, MVCC, digest)"),
    ("raftkv/watch/", "watches"),
    ("raftkv/server/guard.py", "guard and hash checks"),
    ("raftkv/server/hash_check.py", "guard and hash checks"),
    ("raftkv/app/front", "front link (the member's end)"),
    ("raftkv/api/", "request path (API, proposals, reads)"),
    ("raftkv/server/kv.py", "request path (API, proposals, reads)"),
    ("raftkv/server/proposals.py", "request path (API, proposals, reads)"),
    ("raftkv/server/reads.py", "request path (API, proposals, reads)"),
    ("raftkv/server/requests.py", "request path (API, proposals, reads)"),
    ("raftkv/server/convert.py", "request path (API, proposals, reads)"),
    ("raftkv/", "other raftkv"),
)
OTHER_RAFTKV = COMPONENTS[-1][1]
# Library markers (any frame of the stack, innermost first) when no raftkv frame owns it.
LIBRARIES: tuple[tuple[str, str], ...] = (
    ("cygrpc", "gRPC (grpc.aio, C-core)"),
    ("grpc/", "gRPC (grpc.aio, C-core)"),
    ("libgrpc", "gRPC (grpc.aio, C-core)"),
    ("_message.abi3", "protobuf"),
    ("google/protobuf", "protobuf"),
    ("lmdb", "LMDB"),
    ("gc_collect", "garbage collector"),
    ("uvloop", "event loop (uvloop, asyncio)"),
    ("loop.c", "event loop (uvloop, asyncio)"),
    ("asyncio/", "event loop (uvloop, asyncio)"),
    ("_asynciomodule", "event loop (uvloop, asyncio)"),
)
# A sample whose innermost frame is one of these is a thread waiting, not running.
WAITING = (
    "epoll_wait",
    "epoll_pwait",
    "pthread_cond_wait",
    "pthread_cond_timedwait",
    "sem_wait",
    "sem_timedwait",
    "fdatasync",
    "fsync",
    "nanosleep",
    "clock_nanosleep",
    "poll (",
    "select (",
)


def parse(path: Path) -> Iterable[tuple[list[str], int]]:
    """(frames root first, sample count) of each line of a py-spy raw profile."""
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            yield stack.split(";"), int(count)


def waiting(frames: list[str]) -> bool:
    """Whether the innermost frames are a wait: a known blocking call, or libc code without a
    symbol called from one (py-spy cannot name futex waits inside libc)."""
    leaf = frames[-1]
    if leaf.startswith(WAITING):
        return True
    caller = frames[-2] if len(frames) > 1 else ""
    unnamed = leaf.startswith("0x") and "libc.so" in leaf
    return unnamed and (
        "acquire_lock" in caller or "cond" in caller or "take_gil" in caller or "libc.so" in caller
    )


def _raftkv_basenames() -> dict[str, str]:
    """py-spy prints some frames' files by their bare name (``proposals.py``): those of
    raftkv's module names that are unique -> the path under the repository."""
    src = Path(__file__).resolve().parents[1] / "src"
    seen: dict[str, list[str]] = collections.defaultdict(list)
    for path in (src / "raftkv").rglob("*.py"):
        seen[path.name].append(path.relative_to(src).as_posix())
    return {name: paths[0] for name, paths in seen.items() if len(paths) == 1}


BASENAMES = _raftkv_basenames()


def _compiled_prefixes() -> list[tuple[str, str]]:
    """mypyc names a compiled function ``CPyDef_<module>___<name>`` (also ``CPyPy_``), where
    <module> is the shortest unique suffix of the module's dotted name with the dots written
    ``___``: every suffix of raftkv's module names so spelled -> the module's path under the
    repository, longest first, so a compiled frame is attributed to its module and not to
    the Python frame that called it."""
    src = Path(__file__).resolve().parents[1] / "src"
    prefixes: list[tuple[str, str]] = []
    for path in (src / "raftkv").rglob("*.py"):
        parts = path.relative_to(src).with_suffix("").parts
        for i in range(len(parts)):
            prefixes.append(("___".join(parts[i:]) + "___", path.relative_to(src).as_posix()))
    return sorted(prefixes, key=lambda p: -len(p[0]))


COMPILED_PREFIXES = _compiled_prefixes()


def raftkv_path(frame: str) -> str | None:
    """The raftkv module path of a frame (``func (path:line)``, or a function compiled by
    mypyc), None if not raftkv's."""
    if "raftkv/" in frame:
        return frame
    match = re.match(r"CPy(?:Def|Py)_(\w+) \(__native_raftkv", frame)
    if match:
        name = match.group(1)
        return next((path for prefix, path in COMPILED_PREFIXES if name.startswith(prefix)), None)
    path = frame.rpartition(" (")[2].partition(":")[0]
    return BASENAMES.get(path)


def component(frames: list[str]) -> str:
    """The innermost frame that names a component decides: a raftkv module of ``COMPONENTS``
    or a library of ``LIBRARIES`` (so protobuf parsing called from the applier is protobuf's,
    the applier called from gRPC's callback is the applier's); a raftkv frame of no listed
    component (the member's main loop) only when nothing inside it names one."""
    generic = False
    for frame in reversed(frames):
        path = raftkv_path(frame)
        if path is not None:
            name = next(name for prefix, name in COMPONENTS if prefix in path)
            if name != OTHER_RAFTKV:
                return name
            generic = True
            continue
        for marker, name in LIBRARIES:
            if marker in frame:
                return name
    return OTHER_RAFTKV if generic else "other (interpreter, libc, threads)"


def table(path: Path) -> tuple[collections.Counter[str], int, int]:
    """(samples per component, running samples, waiting samples)."""
    shares: collections.Counter[str] = collections.Counter()
    idle = 0
    for frames, count in parse(path):
        if waiting(frames):
            idle += count
        else:
            shares[component(frames)] += count
    return shares, sum(shares.values()), idle


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("profiles", nargs="+", type=Path, help="py-spy raw profiles")
    ap.add_argument(
        "--ms-per-request",
        default="",
        help="comma separated, one per profile: the member's CPU ms per request",
    )
    args = ap.parse_args(argv)
    ms = [float(x) for x in args.ms_per_request.split(",") if x]
    if ms and len(ms) != len(args.profiles):
        ap.error("--ms-per-request needs one figure per profile")
    tables = [table(p) for p in args.profiles]
    names = sorted(
        {n for shares, _, _ in tables for n in shares},
        key=lambda n: -sum(shares[n] / max(1, running) for shares, running, _ in tables),
    )
    unit = "µs/request" if ms else "%"
    print("| component | " + " | ".join(f"{p.stem} ({unit})" for p in args.profiles) + " |")
    print("|---|" + "---|" * len(args.profiles))
    for name in names:
        cells = []
        for i, (shares, running, _idle) in enumerate(tables):
            share = shares[name] / max(1, running)
            cells.append(f"{share * ms[i] * 1e3:.1f}" if ms else f"{share * 100:.1f}")
        print(f"| {name} | " + " | ".join(cells) + " |")
    totals = [f"{m * 1e3:.1f}" if ms else "100" for m in (ms or [0.0] * len(tables))]
    print("| **total** | " + " | ".join(totals) + " |")
    for p, (_shares, running, idle) in zip(args.profiles, tables, strict=True):
        print(f"{p.name}: {running} running samples, {idle} waiting samples dropped")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
