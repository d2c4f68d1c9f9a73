"""Point-in-time restore against a real cluster: the agent takes a full backup and deltas of a
3-member raftkv under a write load (puts, deletes, txns, leases); ``raftkv backup restore
--to-revision R`` for an R in the middle of a delta, at a delta's end, and at the full's own
revision, and ``--to-time`` a delta's cut, each start a member that serves exactly what the
live cluster's ``etcdctl get --rev=R`` shows: every key's value, create and mod revision,
version and lease."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from raftkv.backup.delta import read_delta_file
from raftkv.backup.manifest import format_time, parse_time
from tests.backup.support import raftkv
from tests.backup.test_agent_helpers import (
    Load,
    manifest,
    restore_and_start,
    revision,
    running_cluster,
    start_agent,
    stop_agent,
    store_at,
    verified,
    wait_for,
)
from tests.cluster.harness import Cluster


@pytest.fixture
def cluster3(tmp_path: Path) -> Iterator[Cluster]:
    yield from running_cluster(tmp_path)


def _check_point(tmp_path: Path, live: Cluster, dest: Path, rev: int, *point: str) -> str:
    want = store_at(live, live.members[1].endpoint, rev)
    # a directory of its own per point (two points may name the same revision)
    root = Path(tempfile.mkdtemp(prefix=f"r{rev}-", dir=tmp_path))
    restored, line = restore_and_start(root, dest, *point)
    try:
        endpoint = restored.members[0].endpoint
        got = store_at(restored, endpoint)
        assert revision(restored, endpoint) == rev
        assert got == want, {
            k: (got.get(k), want.get(k)) for k in set(got) | set(want) if got.get(k) != want.get(k)
        }
        leases = {v[4] for v in got.values() if v[4]}
        listed = restored.etcdctl("lease", "list", endpoints=endpoint).stdout
        for lease in leases:
            assert f"{lease:x}" in listed, (lease, listed)
    finally:
        restored.close()
    return line


def test_point_in_time_restore_matches_get_rev(tmp_path: Path, cluster3: Cluster) -> None:
    c = cluster3
    for i in range(20):
        c.etcdctl("put", f"base/{i}", f"b{i}")
    dest = tmp_path / "backups"
    log = tmp_path / "agent.log"
    agent = start_agent(
        log,
        "--endpoints", c.endpoints, "--dir", str(dest),
        "--full-interval", "10m", "--delta-interval", "0.7s",
    )  # fmt: skip
    load = Load(c, c.members[0].endpoint)
    try:
        wait_for(lambda: verified(dest, "full"), 60, "the first full backup", log)
        load.start()
        wait_for(lambda: len(verified(dest, "delta")) >= 5, 60, "five verified deltas", log)
    finally:
        try:
            load.stop()
        finally:
            assert stop_agent(agent) == 0, log.read_text()[-3000:]
    # a restarted agent continues the same chain from where it stopped
    end = manifest(dest)[-1]["to_revision"]
    agent = start_agent(
        log,
        "--endpoints", c.endpoints, "--dir", str(dest),
        "--full-interval", "10m", "--delta-interval", "0.7s",
    )  # fmt: skip
    try:
        wait_for(lambda: "continuing the chain" in log.read_text(), 60, "the resumed chain", log)
        for i in range(5):
            c.etcdctl("put", f"after-restart/{i}", "x")
        wait_for(lambda: manifest(dest)[-1]["to_revision"] > end, 60, "a delta after restart", log)
    finally:
        assert stop_agent(agent) == 0, log.read_text()[-3000:]
    entries = manifest(dest)
    (full,) = [e for e in entries if e["kind"] == "full"]
    at = full["to_revision"]
    for e in entries[1:]:
        assert e["kind"] == "delta" and e["from_revision"] == at, (e, at)
        at = e["to_revision"]
    deltas = [e for e in entries if e["kind"] == "delta" and e["events"] > 1]
    assert all(e["verified"] for e in entries), [e for e in entries if not e["verified"]]
    mid_delta = deltas[len(deltas) // 2]
    mid = (mid_delta["from_revision"] + 1 + mid_delta["to_revision"]) // 2
    assert mid_delta["from_revision"] < mid < mid_delta["to_revision"]

    line = _check_point(tmp_path, c, dest, mid, "--to-revision", str(mid))
    assert f"revision {mid} from full backup {full['id']}" in line
    end = deltas[1]["to_revision"]
    _check_point(tmp_path, c, dest, end, "--to-revision", str(end))
    line = _check_point(
        tmp_path, c, dest, full["to_revision"], "--to-revision", str(full["to_revision"])
    )
    assert "and 0 delta(s)" in line
    cut = deltas[2]
    _check_point(tmp_path, c, dest, cut["to_revision"], "--to-time", cut["cut_time"])
    # a time inside a delta: the last revision the agent had received by then
    groups = read_delta_file(str(dest / mid_delta["file"])).groups
    text = format_time(groups[len(groups) // 2].received + 1e-6)  # RFC 3339 keeps microseconds
    rev = max(g.revision for g in groups if g.received <= parse_time(text))
    _check_point(tmp_path, c, dest, rev, "--to-time", text)


def test_points_outside_the_backups_are_refused(tmp_path: Path, cluster3: Cluster) -> None:
    c = cluster3
    for i in range(5):
        c.etcdctl("put", f"k{i}", "v")
    dest = tmp_path / "b"
    log = tmp_path / "a.log"
    agent = start_agent(log, "--endpoints", c.endpoints, "--dir", str(dest), "--once")
    try:
        assert agent.wait(120) == 0, log.read_text()
    finally:
        stop_agent(agent)
    (full,) = manifest(dest)
    target = tmp_path / "never"
    for point, message in (
        (["--to-revision", str(full["to_revision"] + 50)], "is not covered by a verified backup"),
        (["--to-revision", "1"], "is not covered"),
        (["--to-time", "2001-01-01T00:00:00Z"], "no verified full backup was taken at or before"),
        (["--to-time", "2999-01-01T00:00:00Z"], "is after the newest backup"),
    ):
        res = raftkv("backup", "restore", str(dest), *point, "--data-dir", str(target), check=False)
        assert res.returncode == 1 and message in res.stderr, (point, res.stderr)
        assert not target.exists()
    listed = json.loads(raftkv("backup", "list", str(dest), "-w", "json").stdout)
    assert listed[0]["verified"]
