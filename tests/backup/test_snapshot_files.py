"""``raftkv snapshot save | status | restore`` on good and damaged files.

One real raftkv member provides a snapshot; every test works on a copy.  A damaged, truncated
or empty file is refused with etcd's message and leaves no data directory (and no temporary
one) behind; a restore into a non-empty directory is refused; a value damaged behind a valid
SHA-256 is caught by the state hash the snapshot recorded.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from raftkv.backup.bbolt import BoltReader, write_bolt
from raftkv.backup.etcd_schema import B_AUTH, B_KEY, B_RAFTKV, K_AUTH_ENABLED, K_STATE_HASH
from raftkv.backup.snapshot_file import SHA256_LEN
from raftkv.proto import kv_pb2
from tests.backup.support import compacted_error, ctl, dump, raftkv, workload
from tests.cluster.harness import Cluster


@pytest.fixture(scope="module")
def snapshot(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    root = tmp_path_factory.mktemp("source")
    cluster = Cluster(root, 1)
    try:
        cluster.start_all()
        workload(cluster.members[0].endpoint, keys=30)
        path = root / "good.snap"
        res = raftkv("snapshot", "save", str(path), "--endpoints", cluster.members[0].endpoint)
        assert res.stdout == f"Snapshot saved at {path}\n"
        yield path
    finally:
        cluster.close()


def _restore(snap: Path, data_dir: Path, *extra: str) -> tuple[int, str, str]:
    res = raftkv("snapshot", "restore", str(snap), "--data-dir", str(data_dir), *extra, check=False)
    return res.returncode, res.stdout, res.stderr


def _nothing_left(parent: Path, data_dir: Path) -> None:
    assert not data_dir.exists()
    assert [p.name for p in parent.iterdir() if ".restore-" in p.name] == []


def _rewrite(src: Path, dst: Path, change: dict[bytes, dict[bytes, bytes | None]]) -> None:
    """Copy snapshot ``src`` to ``dst`` with some bucket entries replaced (None: removed), and
    a valid SHA-256."""
    with BoltReader(src, length=src.stat().st_size - SHA256_LEN) as r:
        buckets = []
        for name in r.buckets():
            items = {**dict(r.items(name)), **change.get(name, {})}
            buckets.append((name, sorted((k, v) for k, v in items.items() if v is not None)))
    buf = io.BytesIO()
    write_bolt(buf, buckets)
    db = buf.getvalue()
    dst.write_bytes(db + hashlib.sha256(db).digest())


def _other_value(stored: bytes) -> bytes:
    """A key bucket record (mvccpb.KeyValue) with its value changed."""
    kv = kv_pb2.KeyValue.FromString(stored)
    kv.value += b"!"
    return kv.SerializeToString()


def test_save_writes_a_private_complete_file(snapshot: Path) -> None:
    assert stat.S_IMODE(snapshot.stat().st_mode) == 0o600
    assert not Path(str(snapshot) + ".part").exists()
    data = snapshot.read_bytes()
    assert hashlib.sha256(data[:-SHA256_LEN]).digest() == data[-SHA256_LEN:]


def test_status_formats(snapshot: Path) -> None:
    ours = json.loads(raftkv("snapshot", "status", str(snapshot), "-w", "json").stdout)
    theirs = json.loads(
        ctl("127.0.0.1:1", "snapshot", "status", str(snapshot), "-w", "json").stdout
    )
    assert {k: ours[k] for k in theirs} == theirs
    assert ours["format"] == "raftkv/1" and ours["consistentIndex"] > 1
    simple = raftkv("snapshot", "status", str(snapshot)).stdout
    etcd_simple = ctl("127.0.0.1:1", "snapshot", "status", str(snapshot)).stdout
    assert simple == etcd_simple
    table = raftkv("snapshot", "status", str(snapshot), "-w", "table").stdout
    assert "| HASH |" in table.replace("  ", " ") or "HASH" in table
    assert ours["stateHash"] in table


def test_restore_refuses_damaged_files(snapshot: Path, tmp_path: Path) -> None:
    data = snapshot.read_bytes()
    target = tmp_path / "member"
    cases = {
        "empty": (b"", "snapshot file is empty"),
        "no trailer": (data[:-SHA256_LEN], "snapshot missing hash but --skip-hash-check=false"),
        "truncated": (data[: len(data) // 2] + data[-SHA256_LEN:], "snapshot missing hash"),
        "bit flip": (
            data[:5000] + bytes([data[5000] ^ 0x10]) + data[5001:],
            "expected sha256 [",
        ),
    }
    for name, (content, message) in cases.items():
        bad = tmp_path / f"{name}.snap"
        bad.write_bytes(content)
        rc, out, err = _restore(bad, target)
        assert rc == 1 and message in err, (name, err)
        assert out == ""
        _nothing_left(tmp_path, target)


def test_restore_checks_structure_and_content_behind_a_valid_hash(
    snapshot: Path, tmp_path: Path
) -> None:
    target = tmp_path / "member"
    data = bytearray(snapshot.read_bytes()[:-SHA256_LEN])
    data[4096 + 16 :] = bytes(len(data) - 4096 - 16)  # meta page 1 and everything after zeroed
    data[16:32] = bytes(16)  # and meta page 0 broken
    bad = tmp_path / "garbled.snap"
    bad.write_bytes(bytes(data) + hashlib.sha256(data).digest())
    rc, _out, err = _restore(bad, target)
    assert rc == 1 and f"{bad}: offset " in err, err
    _nothing_left(tmp_path, target)

    # a key's value changed and the SHA-256 recomputed: the recorded state hash catches it
    with BoltReader(snapshot, length=snapshot.stat().st_size - SHA256_LEN) as r:
        raw, value = next(iter(r.items(B_KEY)))
    forged = tmp_path / "forged.snap"
    _rewrite(snapshot, forged, {B_KEY: {raw: _other_value(value)}})
    rc, _out, err = _restore(forged, target)
    assert rc == 1 and "differs from the snapshot's state hash: keys" in err, err
    _nothing_left(tmp_path, target)

    # a value that is not a mvccpb.KeyValue
    broken = tmp_path / "broken.snap"
    _rewrite(snapshot, broken, {B_KEY: {raw: b"\xff\xff\xff"}})
    rc, _out, err = _restore(broken, target)
    assert rc == 1 and f"bucket 'key' key {raw.hex()}: not a mvccpb.KeyValue" in err, err
    _nothing_left(tmp_path, target)


def test_restore_refuses_bad_auth_records_and_non_empty_dirs(
    snapshot: Path, tmp_path: Path
) -> None:
    target = tmp_path / "member"
    bad_auth = tmp_path / "auth.snap"
    _rewrite(snapshot, bad_auth, {B_AUTH: {K_AUTH_ENABLED: b"\x07"}})
    rc, _out, err = _restore(bad_auth, target, "--skip-hash-check")
    assert rc == 1 and "bucket 'auth' key " in err and "not 0 or 1" in err, err
    _nothing_left(tmp_path, target)

    target.mkdir()
    (target / "something").write_text("x")
    rc, _out, err = _restore(snapshot, target)
    assert rc == 1 and f'data-dir "{target}" not empty' in err
    assert os.listdir(target) == ["something"]
    shutil.rmtree(target)

    rc, out, _err = _restore(snapshot, target, "--skip-hash-check")
    assert rc == 0 and "matches the state hash the snapshot recorded" in out
    assert sorted(os.listdir(target / "member")) == ["db", "snap", "wal"]
    assert stat.S_IMODE(target.stat().st_mode) == 0o700


def test_snapshot_of_a_corrupt_backend_is_refused(tmp_path: Path) -> None:
    """A value that fails its CRC is met while the snapshot is written: the client gets etcd's
    DataLoss error, no file is left, and the member fences itself (no backup of bad state)."""
    cluster = Cluster(tmp_path, 1)
    try:
        cluster.start(0, env={"RAFTKV_FAILPOINTS": "backendBitFlip=1*off->1*on"})
        cluster.wait_ready()
        ep = cluster.members[0].endpoint
        ctl(ep, "put", "fine", "1")
        ctl(ep, "put", "flipped", "2")
        out = tmp_path / "bad.snap"
        res = ctl(ep, "snapshot", "save", str(out), check=False)
        assert res.returncode != 0 and "etcdserver: corrupt cluster" in res.stderr
        assert not out.exists() and not Path(f"{out}.part").exists()
        snap_dir = cluster.members[0].data_dir / "member" / "snap"
        assert [p.name for p in snap_dir.iterdir() if p.name.startswith("client-")] == []
        alarms = ctl(ep, "alarm", "list", check=False)
        for _ in range(50):
            if "CORRUPT" in alarms.stdout:
                break
            time.sleep(0.1)
            alarms = ctl(ep, "alarm", "list", check=False)
        assert "alarm:CORRUPT" in alarms.stdout
    finally:
        cluster.close()


def test_restore_bumps_and_compacts_the_revision(snapshot: Path, tmp_path: Path) -> None:
    rc, _out, err = _restore(snapshot, tmp_path / "x", "--bump-revision", "1000")
    assert rc == 128 and "--mark-compacted required if --revision-bump > 0" in err
    rc, _out, err = _restore(snapshot, tmp_path / "x", "--mark-compacted")
    assert rc == 128 and "--mark-compacted required" in err
    _nothing_left(tmp_path, tmp_path / "x")

    before = json.loads(raftkv("snapshot", "status", str(snapshot), "-w", "json").stdout)
    cluster = Cluster(tmp_path / "c", 1)
    (tmp_path / "c").mkdir()
    m = cluster.members[0]
    raftkv(
        "snapshot", "restore", str(snapshot), "--name", m.name, "--data-dir", str(m.data_dir),
        "--initial-cluster", cluster.initial_cluster, "--initial-advertise-peer-urls",
        m.peer_url, "--bump-revision", "1000", "--mark-compacted",
    )  # fmt: skip
    try:
        cluster.start_all()
        got = dump(m.endpoint)
        assert got["revision"] == before["revision"] + 1000
        assert compacted_error(m.endpoint, before["revision"]).endswith(
            "required revision has been compacted"
        )
        assert got["kvs"]["k/001"][0] == "v1-" + "x" * 37
        put = json.loads(ctl(m.endpoint, "put", "new", "1", "-w", "json").stdout)
        assert int(put["header"]["revision"]) == before["revision"] + 1001
    finally:
        cluster.close()


def test_members_restored_from_different_snapshots_are_named(
    snapshot: Path, tmp_path: Path
) -> None:
    """m1 restored from a file whose one value differs (and which records no state hash, as an
    etcd snapshot), m2 and m3 from the original: the guard names m1 at once."""
    with BoltReader(snapshot, length=snapshot.stat().st_size - SHA256_LEN) as r:
        raw, value = next(iter(r.items(B_KEY)))
    other = tmp_path / "other.snap"
    _rewrite(
        snapshot,
        other,
        {B_KEY: {raw: _other_value(value)}, B_RAFTKV: {K_STATE_HASH: None}},
    )
    cluster = Cluster(tmp_path / "c", 3)
    (tmp_path / "c").mkdir()
    for i, m in enumerate(cluster.members):
        raftkv(
            "snapshot", "restore", str(other if i == 0 else snapshot), "--name", m.name,
            "--data-dir", str(m.data_dir), "--initial-cluster", cluster.initial_cluster,
            "--initial-advertise-peer-urls", m.peer_url,
        )  # fmt: skip
    try:
        cluster.start_all()
        named, _took = cluster.wait_corrupt_alarm(cluster.members[1].endpoint)
        assert named == {cluster.member_id(0)}
    finally:
        cluster.close()


def test_restore_with_a_dedicated_wal_dir(snapshot: Path, tmp_path: Path) -> None:
    """--wal-dir: the WAL goes there (etcd's), the member serves from it with the same flag,
    and check data finds it; an existing --wal-dir is refused."""
    wal = tmp_path / "disk2" / "wal"
    wal.mkdir(parents=True)
    rc, _out, err = _restore(snapshot, tmp_path / "x", "--wal-dir", str(wal))
    assert rc == 1 and f'wal-dir "{wal}" exists' in err
    wal.rmdir()
    _nothing_left(tmp_path, tmp_path / "x")

    cluster = Cluster(tmp_path / "c", 1, extra_args=["--wal-dir", str(wal)])
    (tmp_path / "c").mkdir()
    m = cluster.members[0]
    raftkv(
        "snapshot", "restore", str(snapshot), "--name", m.name, "--data-dir", str(m.data_dir),
        "--wal-dir", str(wal), "--initial-cluster", cluster.initial_cluster,
        "--initial-advertise-peer-urls", m.peer_url,
    )  # fmt: skip
    assert sorted(os.listdir(m.data_dir / "member")) == ["db", "snap"]
    assert any(name.endswith(".wal") for name in os.listdir(wal))
    before = json.loads(raftkv("snapshot", "status", str(snapshot), "-w", "json").stdout)
    try:
        cluster.start_all()
        assert dump(m.endpoint)["revision"] == before["revision"]
        ctl(m.endpoint, "put", "on-wal-dir", "1")
    finally:
        cluster.close()
    res = raftkv("check", "data", "--data-dir", str(m.data_dir), "--wal-dir", str(wal), check=False)
    assert res.returncode == 0, res.stdout + res.stderr
