"""Snapshots both ways between raftkv and real etcd, with Debian's etcdctl and etcd.

raftkv -> etcd: a 3-member raftkv under a workload (puts, overwrites, deletes, a txn, leases,
a compaction) is saved with ``etcdctl snapshot save``; ``etcdctl snapshot status`` and
``raftkv snapshot status`` agree; the file restored into a 3-member etcd (``etcdctl snapshot
restore``) and into a new 3-member raftkv (``raftkv snapshot restore``) serves every key with
the same revisions and version, every lease, the same compacted revision; the raftkv members'
state hashes agree (``raftkv check consistency``).

etcd -> raftkv: a real etcd's snapshot restored into raftkv serves the same.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.backup.support import EtcdCluster, compacted_error, ctl, dump, raftkv, workload
from tests.cluster.harness import Cluster
from tests.compat.servers import Target, start_etcd

COMPACTED = "etcdserver: mvcc: required revision has been compacted"


@pytest.fixture
def source(tmp_path: Path) -> Iterator[Cluster]:
    cluster = Cluster(tmp_path / "source", 3)
    (tmp_path / "source").mkdir()
    try:
        cluster.start_all()
        yield cluster
    finally:
        cluster.close()


def _status(tool: str, path: Path) -> dict[str, int]:
    if tool == "etcdctl":
        out = ctl("127.0.0.1:1", "snapshot", "status", str(path), "-w", "json").stdout
    else:
        out = raftkv("snapshot", "status", str(path), "-w", "json").stdout
    obj = json.loads(out)
    return {k: obj[k] for k in ("hash", "revision", "totalKey", "totalSize")}


def _restore_raftkv(snapshot: Path, cluster: Cluster) -> list[str]:
    lines = []
    for m in cluster.members:
        res = raftkv(
            "snapshot", "restore", str(snapshot),
            "--name", m.name, "--data-dir", str(m.data_dir),
            "--initial-cluster", cluster.initial_cluster,
            "--initial-cluster-token", "restored-raftkv",
            "--initial-advertise-peer-urls", m.peer_url,
        )  # fmt: skip
        lines.append(res.stdout)
    return lines


def test_raftkv_snapshot_restores_into_etcd_and_raftkv(source: Cluster, tmp_path: Path) -> None:
    ep = source.members[0].endpoint
    history = workload(ep)
    want = dump(ep)
    snap = tmp_path / "raftkv.snap"
    ctl(source.members[1].endpoint, "snapshot", "save", str(snap))

    etcd_status = _status("etcdctl", snap)
    assert etcd_status == _status("raftkv", snap)
    assert etcd_status["revision"] == want["revision"]
    ours = json.loads(raftkv("snapshot", "status", str(snap), "-w", "json").stdout)
    assert ours["format"] == "raftkv/1" and len(ours["stateHash"]) == 32

    # into a real 3-member etcd
    etcd = EtcdCluster(tmp_path / "etcd", 3)
    (tmp_path / "etcd").mkdir()
    etcd.restore(snap)
    try:
        etcd.start()
        for endpoint in etcd.endpoints:
            got = dump(endpoint)
            assert got["kvs"] == want["kvs"]
            assert got["leases"] == want["leases"]
            assert got["revision"] >= want["revision"]
        assert compacted_error(etcd.endpoints[0], history["compacted"] - 1) == f"Error: {COMPACTED}"
        assert compacted_error(etcd.endpoints[0], history["compacted"]) == ""
    finally:
        etcd.close()

    # into a new 3-member raftkv
    restored = Cluster(tmp_path / "restored", 3)
    (tmp_path / "restored").mkdir()
    lines = _restore_raftkv(snap, restored)
    assert all("matches the state hash the snapshot recorded" in line for line in lines), lines
    try:
        restored.start_all()
        for m in restored.members:
            got = dump(m.endpoint)
            assert got["kvs"] == want["kvs"]
            assert got["leases"] == want["leases"]
            assert got["revision"] == want["revision"]
        first = restored.members[0].endpoint
        assert compacted_error(first, history["compacted"] - 1) == f"Error: {COMPACTED}"
        assert compacted_error(first, history["compacted"]) == ""
        restored.etcdctl("put", "after/restore", "1")
        check = raftkv("check", "consistency", "--endpoints", restored.endpoints, check=False)
        assert check.returncode == 0, check.stdout + check.stderr
    finally:
        restored.close()


def test_etcd_snapshot_restores_into_raftkv(tmp_path: Path) -> None:
    etcd: Target = start_etcd(tmp_path / "etcd")
    try:
        ep = etcd.endpoints[0]
        history = workload(ep)
        want = dump(ep)
        snap = tmp_path / "etcd.snap"
        ctl(ep, "snapshot", "save", str(snap))
    finally:
        etcd.close()
    status = json.loads(raftkv("snapshot", "status", str(snap), "-w", "json").stdout)
    assert status["format"] == "etcd" and status["revision"] == want["revision"]

    restored = Cluster(tmp_path / "restored", 1)
    (tmp_path / "restored").mkdir()
    lines = _restore_raftkv(snap, restored)
    assert "no state hash recorded" in lines[0]
    try:
        restored.start_all()
        ep = restored.members[0].endpoint
        got = dump(ep)
        assert got["kvs"] == want["kvs"]
        assert got["leases"] == want["leases"]
        assert got["revision"] == want["revision"]
        assert compacted_error(ep, history["compacted"] - 1) == f"Error: {COMPACTED}"
        restored.etcdctl("put", "k/001", "written after the migration")
        assert dump(ep)["kvs"]["k/001"][3] == want["kvs"]["k/001"][3] + 1
    finally:
        restored.close()


def _auth_holds(ep: str) -> None:
    """alice (role reader: read on /app/) reads /app/a, is refused /secret and writes."""
    alice = "--user=alice:alicepw"
    assert ctl(ep, alice, "get", "/app/a", "--print-value-only").stdout == "1\n"
    for args in (("get", "/secret"), ("put", "/app/a", "2")):
        res = ctl(ep, alice, *args, check=False)
        assert res.returncode != 0 and "etcdserver: permission denied" in res.stderr, res.stderr
    assert ctl(ep, "get", "/app/a", check=False).returncode != 0  # no user: refused


def test_auth_survives_snapshots_both_ways(tmp_path: Path) -> None:
    """Users, roles, permissions and the enabled flag travel in the snapshot: raftkv -> etcd
    -> raftkv, each restored cluster enforcing them."""
    root = "--user=root:rootpw"
    source = Cluster(tmp_path / "source", 1, ["--bcrypt-cost=4"])
    (tmp_path / "source").mkdir()
    try:
        source.start_all()
        ep = source.members[0].endpoint
        for args in (
            ["user", "add", "root:rootpw"],
            ["role", "add", "reader"],
            ["role", "grant-permission", "reader", "read", "/app/", "--prefix"],
            ["user", "add", "alice:alicepw"],
            ["user", "grant-role", "alice", "reader"],
            ["put", "/app/a", "1"],
            ["put", "/secret", "s"],
            ["auth", "enable"],
        ):
            ctl(ep, *args)
        _auth_holds(ep)
        from_raftkv = tmp_path / "raftkv.snap"
        ctl(ep, root, "snapshot", "save", str(from_raftkv))
    finally:
        source.close()

    etcd = EtcdCluster(tmp_path / "etcd", 1)
    (tmp_path / "etcd").mkdir()
    etcd.restore(from_raftkv)
    try:
        etcd.start((root,))
        _auth_holds(etcd.endpoints[0])
        from_etcd = tmp_path / "etcd.snap"
        ctl(etcd.endpoints[0], root, "snapshot", "save", str(from_etcd))
    finally:
        etcd.close()

    restored = Cluster(tmp_path / "restored", 1)
    (tmp_path / "restored").mkdir()
    _restore_raftkv(from_etcd, restored)
    restored.etcdctl_flags = [root]  # the harness's status polls need a user
    try:
        restored.start_all()
        _auth_holds(restored.members[0].endpoint)
    finally:
        restored.close()
