"""watch: replayed and live events, prev-kv, prefix and range watches, cancellation."""

from __future__ import annotations

import base64
import subprocess
import time
from pathlib import Path

import pytest

from tests.ctl.harness import Ctl, Result, assert_same, rev_masks

SENTINEL = b"end-of-watch"


def _writes(ctl: Ctl) -> int:
    """Reset w/ and write a fixed history; returns the revision of its first write."""
    ctl.reset("w/")
    out = ctl.must("put", "w/a", "1", "-w", "fields").text()
    first = int(out.split('"Revision" : ')[1].split()[0])
    ctl.must("put", "w/a", "2")
    ctl.must("put", "w/b", "x y")
    ctl.must("del", "w/a")
    ctl.must("put", "w/c", "é")
    ctl.must("put", "w/zz", SENTINEL.decode())
    return first


def _watch_until_sentinel(ctl: Ctl, tool: str, args: list[str], tmp: Path) -> Result:
    out_path, err_path = tmp / f"{tool}.out", tmp / f"{tool}.err"
    markers = (
        SENTINEL,
        base64.b64encode(SENTINEL),
        "".join(f"\\x{b:02x}" for b in SENTINEL).encode(),
    )
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        proc = subprocess.Popen(
            ctl.argv(tool, args),
            stdout=out,
            stderr=err,
            stdin=subprocess.DEVNULL,
            env=ctl._env(tool),
        )
        try:
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                data = out_path.read_bytes()
                if any(m in data for m in markers) or proc.poll() is not None:
                    break
                time.sleep(0.05)
            time.sleep(0.2)  # let any trailing bytes of the final response land
        finally:
            proc.terminate()
            proc.wait(timeout=10)
    return Result(0, out_path.read_bytes(), err_path.read_bytes())


@pytest.mark.parametrize(
    ("fmt", "extra"),
    [
        ("simple", ["w/", "--prefix", "--prev-kv"]),
        ("json", ["w/", "--prefix", "--prev-kv"]),
        ("fields", ["w/", "--prefix", "--prev-kv"]),
        ("protobuf", ["w/", "--prefix", "--prev-kv"]),
        ("simple", ["w/", "--prefix"]),
        ("json", ["w/a", "w/zzz"]),
        ("simple", ["w/zz"]),
    ],
)
def test_watch_replay_matches(ctl: Ctl, fmt: str, extra: list[str], tmp_path: Path) -> None:
    results = []
    for tool in ("etcdctl", "raftkv"):
        first = _writes(ctl)
        args = ["watch", *extra, f"--rev={first}", "-w", fmt]
        results.append(_watch_until_sentinel(ctl, tool, args, tmp_path))
    a, b = results
    assert SENTINEL in a.stdout or base64.b64encode(SENTINEL) in a.stdout
    assert_same(a, b, rev_masks(fmt, "WatchResponse"), what=(fmt, extra))


def test_watch_hex(ctl: Ctl, tmp_path: Path) -> None:
    results = []
    for tool in ("etcdctl", "raftkv"):
        first = _writes(ctl)
        args = ["watch", "w/", "--prefix", f"--rev={first}", "--hex"]
        results.append(_watch_until_sentinel(ctl, tool, args, tmp_path))
    assert b"\\x65\\x6e\\x64" in results[0].stdout
    assert_same(*results)


def test_watch_live_events(ctl: Ctl, tmp_path: Path) -> None:
    """A watch started before the writes sees them as they happen."""
    ctl.reset("live/")
    out_path = tmp_path / "live.out"
    with open(out_path, "wb") as out:
        proc = subprocess.Popen(
            ctl.argv("raftkv", ["watch", "live/", "--prefix"]),
            stdout=out,
            stderr=subprocess.DEVNULL,
            env=ctl._env("raftkv"),
        )
        try:
            deadline = time.monotonic() + 20
            n = 0
            while time.monotonic() < deadline and b"v9" not in out_path.read_bytes():
                ctl.must("put", f"live/k{n}", f"v{n}")  # repeated until the watch is up
                n += 1
                time.sleep(0.3)
        finally:
            proc.terminate()
            proc.wait(timeout=10)
    lines = out_path.read_bytes().split(b"\n")
    assert lines[0] == b"PUT"
    assert lines[1].startswith(b"live/k") and lines[2] == b"v" + lines[1][len(b"live/k") :]


@pytest.mark.parametrize("fmt", ["simple", "json"])
def test_watch_compacted_revision(ctl: Ctl, fmt: str) -> None:
    ctl.must("put", "wc/k", "1")
    rev = int(
        ctl.must("put", "wc/k", "2", "-w", "fields").text().split('"Revision" : ')[1].split()[0]
    )
    ctl.etcdctl("compaction", str(rev))
    ctl.same("watch", "wc/k", "--rev=1", "-w", fmt)


@pytest.mark.parametrize("args", [[], ["a", "b", "--prefix"]])
def test_watch_bad_args(ctl: Ctl, args: list[str]) -> None:
    ctl.same("watch", *args)


@pytest.mark.parametrize("stdin", [b"", b"watch w/a\n"])
def test_watch_interactive_eof(ctl: Ctl, stdin: bytes) -> None:
    ctl.same("watch", "-i", stdin=stdin, errors_only=True)
