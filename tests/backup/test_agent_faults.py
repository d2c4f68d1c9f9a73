"""Faults around the backup agent, with real processes: the agent SIGKILLed in the middle of a
full backup and of a delta leaves nothing that looks complete and the next run recovers; a
member SIGKILLed while it streams the snapshot makes the agent take it from another member;
truncated, bit-flipped and empty fulls and deltas are refused by ``backup verify`` and
``backup restore`` with messages naming the file."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.backup.support import raftkv
from tests.backup.test_agent_helpers import (
    Load,
    fill,
    manifest,
    running_cluster,
    snapshot_sources,
    start_agent,
    stop_agent,
    verified,
    wait_for,
)
from tests.cluster.harness import Cluster


@pytest.fixture
def cluster3(tmp_path: Path) -> Iterator[Cluster]:
    yield from running_cluster(tmp_path)


def _complete_looking(dest: Path) -> set[str]:
    """Backup files under their final names (not ``.part``), relative to ``dest``."""
    return {
        str(p.relative_to(dest))
        for p in dest.rglob("*")
        if p.is_file() and p.name.endswith((".snap.zst", ".delta.zst"))
    }


def _assert_nothing_unreferenced(dest: Path) -> None:
    referenced = {e["file"] for e in manifest(dest) if e["verified"]}
    assert _complete_looking(dest) <= referenced, (_complete_looking(dest), referenced)


def _kill_when(dest: Path, pattern: str, agent_log: Path, proc: object) -> None:
    wait_for(lambda: list(dest.glob(pattern)), 60, f"a file {pattern}", agent_log)
    proc.send_signal(signal.SIGKILL)  # type: ignore[attr-defined]
    proc.wait(10)  # type: ignore[attr-defined]


def test_killed_agent_leaves_nothing_complete_and_next_run_recovers(
    tmp_path: Path, cluster3: Cluster
) -> None:
    c = cluster3
    fill(c.members[0].endpoint, 3000, 1500)
    dest = tmp_path / "backups"
    log = tmp_path / "agent.log"
    args = ("--endpoints", c.endpoints, "--dir", str(dest), "--delta-interval", "0.3s")
    # 1. killed while the full backup is being written
    agent = start_agent(log, *args, "--full-interval", "10m")
    try:
        _kill_when(dest, "full-*.snap.zst.part", log, agent)
    finally:
        stop_agent(agent, signal.SIGKILL)
    assert list(dest.glob("*.part"))
    _assert_nothing_unreferenced(dest)
    assert not verified(dest, "full")

    # 2. a new run cleans up, takes a full, then is killed while a delta is being written
    load = Load(c, c.members[1].endpoint).start()
    agent = start_agent(log, *args, "--full-interval", "10m")
    try:
        wait_for(lambda: verified(dest, "full"), 90, "a verified full backup", log)
        _kill_when(dest, "delta-*.delta.zst.part", log, agent)
    finally:
        stop_agent(agent, signal.SIGKILL)
        load.stop()
    _assert_nothing_unreferenced(dest)
    assert "removed incomplete files of an earlier run" in log.read_text()

    # 3. the next run recovers: one full backup, verified, nothing incomplete left
    agent = start_agent(log, *args, "--once")
    try:
        assert agent.wait(120) == 0, log.read_text()[-3000:]
    finally:
        stop_agent(agent)
    assert not list(dest.glob("*.part")) and not list(dest.glob(".*.part"))
    _assert_nothing_unreferenced(dest)
    assert len(verified(dest, "full")) == 2
    res = raftkv("backup", "verify", str(dest))
    assert "FAILED" not in res.stdout


def test_member_killed_mid_snapshot_agent_uses_another(tmp_path: Path, cluster3: Cluster) -> None:
    c = cluster3
    fill(c.members[0].endpoint, 4000, 1500)
    dest = tmp_path / "backups"
    switched = False
    for attempt in range(3):
        log = tmp_path / f"agent{attempt}.log"
        agent = start_agent(log, "--endpoints", c.endpoints, "--dir", str(dest), "--once")
        killed = -1
        try:
            deadline = time.monotonic() + 60
            while killed < 0 and agent.poll() is None and time.monotonic() < deadline:
                sources = snapshot_sources(c)
                if sources:
                    killed = sources[0]
                    c.kill(killed)
                time.sleep(0.005)
            assert agent.wait(120) == 0, log.read_text()[-3000:]
        finally:
            stop_agent(agent)
        text = log.read_text()
        entry = manifest(dest)[-1]
        assert entry["verified"], entry
        if killed >= 0 and "trying the next member" in text:
            assert entry["source"] != c.members[killed].endpoint
            switched = True
            break
        if killed >= 0:  # the kill came after the stream: bring the member back, try again
            c.start(killed)
            c.wait_ready()
    assert switched, "the member was never killed mid-stream"


def _damage(path: Path, how: str) -> None:
    data = path.read_bytes()
    if how == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif how == "bit-flipped":
        b = bytearray(data)
        b[len(b) // 2] ^= 0x10
        path.write_bytes(bytes(b))
    else:
        path.write_bytes(b"")


def test_damaged_backups_are_refused(tmp_path: Path, cluster3: Cluster) -> None:
    c = cluster3
    for i in range(30):
        c.etcdctl("put", f"k{i}", "v" * 200)
    dest = tmp_path / "backups"
    log = tmp_path / "agent.log"
    load = Load(c, c.members[0].endpoint).start()
    agent = start_agent(
        log, "--endpoints", c.endpoints, "--dir", str(dest),
        "--full-interval", "10m", "--delta-interval", "0.5s",
    )  # fmt: skip
    try:
        wait_for(lambda: len(verified(dest, "delta")) >= 2, 90, "two verified deltas", log)
    finally:
        load.stop()
        assert stop_agent(agent) == 0
    assert "FAILED" not in raftkv("backup", "verify", str(dest)).stdout
    full = verified(dest, "full")[0]
    delta = verified(dest, "delta")[0]
    for entry in (full, delta):
        for how in ("truncated", "bit-flipped", "empty"):
            for patched in (False, True):
                case = tmp_path / f"{entry['kind']}-{how}-{patched}"
                shutil.copytree(dest, case)
                damaged = case / entry["file"]
                _damage(damaged, how)
                if patched:  # as if the damage was there when the SHA-256 was recorded
                    m = json.loads((case / "manifest.json").read_text())
                    for e in m["backups"]:
                        if e["id"] == entry["id"]:
                            e["sha256"] = hashlib.sha256(damaged.read_bytes()).hexdigest()
                    (case / "manifest.json").write_text(json.dumps(m))
                res = raftkv("backup", "verify", str(case), check=False)
                assert res.returncode == 1, (case.name, res.stdout)
                failed = [line for line in res.stdout.splitlines() if line.startswith("FAILED")]
                assert failed and entry["file"] in failed[0], (case.name, res.stdout)
                if not patched:
                    assert "differs from the manifest" in failed[0], failed[0]
                target = case / "restored"
                res = raftkv(
                    "backup", "restore", str(case), "--to-revision", str(delta["to_revision"]),
                    "--data-dir", str(target), check=False,
                )  # fmt: skip
                assert res.returncode == 1, (case.name, res.stdout)
                assert entry["file"] in res.stderr, (case.name, res.stderr)
                assert not target.exists()


def test_member_under_corrupt_alarm_is_never_read(tmp_path: Path) -> None:
    root = tmp_path / "corrupt"
    root.mkdir()
    c = Cluster(root, 3)
    try:
        for i in range(3):
            c.start(i, env={"RAFTKV_FAILPOINTS": "applyCorruptValue=on"} if i == 2 else None)
        c.wait_ready()
        healthy = c.members[0].endpoint
        faulty_id = c.member_id(2)
        c.etcdctl("put", "k", "v", endpoints=healthy)
        ids, _took = c.wait_corrupt_alarm(healthy)
        assert ids == {faulty_id}
        dest = tmp_path / "backups"
        log = tmp_path / "agent.log"
        fenced = c.members[2].endpoint
        endpoints = ",".join([fenced, healthy, c.members[1].endpoint])
        agent = start_agent(log, "--endpoints", endpoints, "--dir", str(dest), "--once")
        try:
            assert agent.wait(120) == 0, log.read_text()
        finally:
            stop_agent(agent)
        (entry,) = manifest(dest)
        assert entry["verified"] and entry["source"] != fenced
        assert f"{fenced}: CORRUPT alarm" in log.read_text()
    finally:
        c.close()


def test_watch_member_killed_the_chain_goes_on(tmp_path: Path, cluster3: Cluster) -> None:
    c = cluster3
    dest = tmp_path / "backups"
    log = tmp_path / "agent.log"
    agent = start_agent(
        log, "--endpoints", c.endpoints, "--dir", str(dest),
        "--full-interval", "10m", "--delta-interval", "0.5s",
    )  # fmt: skip
    load = Load(c, c.members[0].endpoint)
    try:
        wait_for(lambda: verified(dest, "full"), 60, "a verified full backup", log)
        watched = wait_for(
            lambda: re.findall(r"watching every key from revision \d+ on (\S+)", log.read_text()),
            30,
            "the watch",
            log,
        )[-1]
        victim = next(i for i, m in enumerate(c.members) if m.endpoint == watched)
        if victim == 0:  # keep the load's member alive
            load = Load(c, c.members[1].endpoint)
        load.start()
        wait_for(lambda: verified(dest, "delta"), 60, "a verified delta", log)
        c.kill(victim)
        before = len(verified(dest, "delta"))
        wait_for(
            lambda: len(verified(dest, "delta")) >= before + 3, 60, "deltas after the kill", log
        )
        c.start(victim)
        c.wait_ready()
    finally:
        try:
            load.stop()
        finally:
            assert stop_agent(agent) == 0, log.read_text()[-3000:]
    text = log.read_text()
    assert "reopening" in text
    reopened = re.findall(r"watching every key from revision \d+ on (\S+)", text)
    assert reopened[-1] != watched, reopened
    entries = manifest(dest)
    assert all(e["verified"] for e in entries), [e for e in entries if not e["verified"]]
    (full,) = [e for e in entries if e["kind"] == "full"]
    at = full["to_revision"]
    for e in (e for e in entries if e["kind"] == "delta"):
        assert e["from_revision"] == at, (e, at)
        at = e["to_revision"]
    assert "FAILED" not in raftkv("backup", "verify", str(dest)).stdout
