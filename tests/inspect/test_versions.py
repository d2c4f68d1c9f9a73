"""``raftkv check consistency``'s versions: which release each member runs (raftkv's, from the
Status metadata; ``etcd X`` for a plain etcd) and the cluster version, as one line of the table
output and a ``versions`` object in ``-w json``.  Mixed versions (a rolling upgrade) are noted,
never a failure.  Real processes, plus the pure rendering."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from raftkv import __version__
from raftkv.inspect.render import render, version_line
from raftkv.inspect.verdict import CheckResult, MemberReport, judge, version_summary
from raftkv.version import STORAGE_VERSION, Version
from tests.cluster import upgrade_install
from tests.cluster.harness import Cluster
from tests.compat.servers import Target
from tests.inspect.cli import run_check

FAST = ["--dial-timeout", "1s", "--command-timeout", "3s"]
SERVE_FAST = ["--heartbeat-interval", "50", "--election-timeout", "500"]
MINOR = Version.parse(__version__).short()
MIXED = "mixed versions (a rolling upgrade in progress?)"


def _lines(stdout: str, prefix: str) -> list[str]:
    return [ln for ln in stdout.splitlines() if ln.startswith(prefix)]


# --------------------------------------------------------------------------- real members


def test_versions_of_a_raftkv_cluster(cluster3: tuple[Cluster, list[str]]) -> None:
    cluster, _urls = cluster3
    ids = [f"{cluster.member_id(i):x}" for i in range(3)]
    res = run_check("--endpoints", cluster.endpoints, *FAST)
    assert res.returncode == 0, res.stdout + res.stderr
    members = ", ".join(f"{i}={__version__}" for i in ids)
    assert _lines(res.stdout, "versions: ") == [f"versions: cluster {MINOR}; members: {members}"]
    assert MIXED not in res.stdout

    res = run_check("--endpoints", cluster.members[0].endpoint, "-w", "json", *FAST)
    assert res.returncode == 0, res.stdout + res.stderr
    doc = json.loads(res.stdout)
    assert doc["versions"] == {
        "cluster": MINOR,
        "cluster_versions": [MINOR],
        "members": dict.fromkeys(ids, __version__),
        "mixed": False,
    }
    for m in doc["members"]:
        assert (m["raftkv_version"], m["cluster_version"], m["storage_version"]) == (
            __version__,
            MINOR,
            str(STORAGE_VERSION),
        )
        assert m["version"] == "3.5.0"  # Status.version: the etcd API level, as before


def test_versions_of_a_plain_etcd(etcd: Target) -> None:
    ep = etcd.endpoints[0]
    res = run_check("--endpoints", ep, "-w", "json", *FAST)
    assert res.returncode == 0, res.stdout + res.stderr
    doc = json.loads(res.stdout)
    (member,) = doc["members"]
    assert member["raftkv_version"] is None and member["cluster_version"] is None
    etcd_version = member["version"]
    assert etcd_version.startswith("3.4")
    assert doc["versions"] == {
        "cluster": None,
        "cluster_versions": [],
        "members": {member["member_id"]: f"etcd {etcd_version}"},
        "mixed": False,
    }
    res = run_check("--endpoints", ep, *FAST)
    assert res.returncode == 0, res.stdout + res.stderr
    assert _lines(res.stdout, "versions: ") == [
        f"versions: cluster unknown; members: {member['member_id']}=etcd {etcd_version}"
    ]


@pytest.fixture
def upgraded_one(tmp_path: Path) -> Iterator[tuple[Cluster, Version]]:
    """Three members of this tree, then m3 restarted on its data dir as the next minor (a
    rolling upgrade stopped after one member)."""
    base = upgrade_install.snapshot(tmp_path / "base")
    newer = upgrade_install.build(tmp_path / "newer", 1, with_new_kind=False, source=base)
    cluster = Cluster(tmp_path / "cluster", 3, SERVE_FAST)
    (tmp_path / "cluster").mkdir()
    for m in cluster.members:
        m.python, m.src = base.python, base.src
    try:
        cluster.start_all()
        cluster.etcdctl("put", "k", "v")
        cluster.stop(2)
        m3 = cluster.members[2]
        m3.python, m3.src = newer.python, newer.src
        cluster.start(2)
        cluster.wait_ready([2], timeout=60)
        yield cluster, newer.version
    finally:
        cluster.close()


def test_mixed_versions_are_a_note_not_a_failure(upgraded_one: tuple[Cluster, Version]) -> None:
    cluster, newer = upgraded_one
    ids = [f"{cluster.member_id(i):x}" for i in range(3)]
    runs = [__version__, __version__, str(newer)]
    res = run_check("--endpoints", cluster.endpoints, *FAST)
    assert res.returncode == 0, res.stdout + res.stderr + cluster.dump_logs(20)
    members = ", ".join(f"{i}={v}" for i, v in zip(ids, runs, strict=True))
    # The cluster version stays at the lowest minor the voters run.
    assert _lines(res.stdout, "versions: ") == [f"versions: cluster {MINOR}; members: {members}"]
    labels = ", ".join(
        f"{m.name} (id {i}) {v}" for m, i, v in zip(cluster.members, ids, runs, strict=True)
    )
    assert _lines(res.stdout, "note: mixed") == [f"note: {MIXED}: {labels}"]
    assert res.stdout.rstrip().endswith("consistent: 3 of 3 members agree")

    res = run_check("--endpoints", cluster.endpoints, "-w", "json", *FAST)
    assert res.returncode == 0, res.stdout + res.stderr
    doc = json.loads(res.stdout)
    assert doc["status"] == "consistent" and doc["divergences"] == []
    assert doc["versions"]["mixed"] is True and doc["versions"]["cluster"] == MINOR
    assert doc["versions"]["members"] == dict(zip(ids, runs, strict=True))


# ----------------------------------------------------------------------------- pure code


def _member(name: str, mid: int, **kw: object) -> MemberReport:
    rep = MemberReport(
        endpoint=f"127.0.0.1:{mid}", name=name, member_id=mid, cluster_id=7, revision=40,
        key_count=5, hash=456, hash_revision=40, compact_revision=-1, alarms=[], version="3.5.0",
    )  # fmt: skip
    for k, v in kw.items():
        setattr(rep, k, v)
    return rep


def _judge(*members: MemberReport) -> CheckResult:
    return judge(CheckResult(members=list(members), common_revision=40, compact_revision=-1))


def test_cluster_versions_that_differ_are_a_note() -> None:
    r = _judge(
        _member("m1", 0xA, raftkv_version="0.2.0", cluster_version="0.2"),
        _member("m2", 0xB, raftkv_version="0.2.0", cluster_version="0.1"),
    )
    assert r.exit_code == 0
    assert r.notes == [
        "members report different cluster versions (a change being applied?): "
        "m1 (id a) 0.2, m2 (id b) 0.1"
    ]
    assert version_line(r.versions) == (
        "versions: cluster 0.1 and 0.2 (the members differ); members: a=0.2.0, b=0.2.0"
    )
    assert r.to_json()["versions"]["cluster"] is None


def test_unreachable_members_are_left_out_and_etcd_members_named() -> None:
    down = MemberReport(endpoint="127.0.0.1:9", name="m3", member_id=3, error="refused")
    etcd = _member("e1", 0xE, version="3.4.23")
    summary = version_summary([_member("m1", 1, raftkv_version="0.2.0"), etcd, down])
    assert [(m.name, v) for m, v in summary.members] == [("m1", "0.2.0"), ("e1", "etcd 3.4.23")]
    assert summary.mixed and summary.cluster == []
    assert version_line(summary) == "versions: cluster unknown; members: 1=0.2.0, e=etcd 3.4.23"
    assert version_line(version_summary([down])) is None
    text = render(_judge(down), "table")
    assert "versions:" not in text


def test_the_version_line_follows_the_revision_line() -> None:
    r = _judge(
        _member("m1", 1, raftkv_version="0.2.0", cluster_version="0.2"),
        _member("m2", 2, raftkv_version="0.3.0", cluster_version="0.2"),
    )
    lines = render(r, "table").splitlines()
    at = lines.index("compared at revision 40 (compact revision -1)")
    assert lines[at + 1] == "versions: cluster 0.2; members: 1=0.2.0, 2=0.3.0"
    assert f"note: {MIXED}: m1 (id 1) 0.2.0, m2 (id 2) 0.3.0" in lines
    assert lines[-1] == "consistent: 2 of 2 members agree"
    doc = json.loads(render(r, "json"))
    assert doc["versions"]["mixed"] is True
    assert [m["raftkv_version"] for m in doc["members"]] == ["0.2.0", "0.3.0"]
