"""``raftkv check data``: real stopped members' data directories, clean and damaged.

A real one-member cluster writes keys with etcdctl and is stopped; each damage case works on a
copy of its data directory and runs ``python -m raftkv.ctl.main check data`` as a child
process.  A real three-member cluster makes a follower catch up by a snapshot: it is rebuilt
from the backend it received and kept.  The base choice, the WAL reader around a received
snapshot's marker and the lock probes are also tested as functions.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import lmdb
import pytest

from raftkv.check.data import check_data, lmdb_lock_holder, wal_locked
from raftkv.check.rebuild import choose_base
from raftkv.guard.check_files import SnapFiles, WalContents, check_wal
from raftkv.guard.check_report import Severity
from raftkv.lease.lease import decode_lease, encode_lease
from raftkv.mvcc.backend import (
    BUCKET_CLUSTER,
    BUCKET_KEY,
    BUCKET_LEASE,
    BackendConfig,
    seal,
    unseal,
)
from raftkv.mvcc.revision import decode_kv, encode_kv
from raftkv.peer.snapshot import parse_snapshot_db_name
from raftkv.proto import rpc_pb2 as pb
from raftkv.proto import rpc_pb2_grpc as pb_grpc
from raftkv.raft.types import ConfState, Entry, HardState, Snapshot, SnapshotMetadata
from raftkv.server.applier import Applier
from raftkv.server.bootstrap import MemberInfo, decode_members, encode_members
from raftkv.server.cluster_info import K_CLUSTER_VERSION
from raftkv.server.data_dir import DataDir
from raftkv.server.requests import RequestKind, decode_request
from raftkv.snap import Snapshotter, decode_snapshot_file
from raftkv.wal import WAL, WalSnapshot, encode_metadata
from raftkv.wal.files import list_segments
from raftkv.wal.record import RecordType, append_record, encode_u32, scan_segment
from tests.cluster.harness import REPO, Cluster, require_etcdctl
from tests.server.entries import put_entries

TIMEOUT = 120


def run_check(data_dir: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "src"), env.get("PYTHONPATH", "")])
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "raftkv.ctl.main",
            "check",
            "data",
            "--data-dir",
            str(data_dir),
            *extra,
        ],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        env=env,
        cwd=REPO,
        check=False,
    )


def run_json(data_dir: Path) -> tuple[int, dict[str, Any]]:
    res = run_check(data_dir, "-w", "json")
    assert res.stderr == "", res.stderr
    return res.returncode, json.loads(res.stdout)


def check_of(doc: dict[str, Any], name: str) -> dict[str, Any]:
    return next(c for c in doc["checks"] if c["name"] == name)


def fingerprint(root: Path) -> dict[str, tuple[str, int]]:
    """Content hash and mtime of every file under ``root``."""
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file():
            out[str(p.relative_to(root))] = (
                hashlib.sha256(p.read_bytes()).hexdigest(),
                p.stat().st_mtime_ns,
            )
    return out


def write_keys(c: Cluster) -> None:
    for i in range(6):
        c.etcdctl("put", f"k{i}", f"value-{i}")
    c.etcdctl("put", "k1", "value-1b")
    c.etcdctl("del", "k2")
    lease = c.etcdctl("lease", "grant", "300").stdout.split()[1]
    c.etcdctl("put", "leased", "v", f"--lease={lease}")
    c.etcdctl("txn", stdin="\nput t1 a\nput t2 b\n\n\n")
    rev = int(json.loads(c.etcdctl("get", "k0", "-w", "json").stdout)["header"]["revision"])
    c.etcdctl("compact", str(rev - 2), "--physical")
    c.etcdctl("put", "last", "z")


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The data directory of a stopped member that wrote keys, a lease, a txn, a compaction."""
    require_etcdctl()
    root = tmp_path_factory.mktemp("clean")
    c = Cluster(root, 1)
    try:
        c.start_all()
        write_keys(c)
        assert c.stop(0) == 0
    finally:
        c.close()
    yield c.members[0].data_dir


@pytest.fixture
def copy(clean: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "copy.raftkv"
    shutil.copytree(clean, dst)
    return dst


def segment(data_dir: Path) -> str:
    segs = list_segments(str(data_dir / "member" / "wal"))
    assert len(segs) == 1
    return segs[0].path


def entry_records(path: str) -> list[tuple[int, int]]:
    """(offset, data length) of every ENTRY record of a segment."""
    scan = scan_segment(Path(path).read_bytes(), None)
    assert scan.damage is None
    return [(r.offset, len(r.data)) for r in scan.records if r.type == RecordType.ENTRY]


def put_entry_index(data_dir: Path, key: bytes) -> int:
    """The Raft index of the last put of ``key`` in the member's WAL."""
    _res, wal = check_wal(str(data_dir / "member" / "wal"))
    found = 0
    for e in wal.entries:
        if e.data:
            kind, _id, body, *_who = decode_request(e.data)
            if kind == RequestKind.PUT and pb.PutRequest.FromString(body).key == key:
                found = e.index
    assert found
    return found


# -- end to end ---------------------------------------------------------------------------


def test_clean_member_is_consistent_and_untouched(copy: Path) -> None:
    before = fingerprint(copy)
    res = run_check(copy)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "verdict   consistent (exit 0)" in res.stdout
    assert re.search(r"^rebuild +ok +base index 1 \(bootstrap snapshot\)", res.stdout, re.M)
    code, doc = run_json(copy)
    assert code == 0 and doc["exit_code"] == 0
    assert [c["status"] for c in doc["checks"]] == ["ok"] * 5
    rebuild = check_of(doc, "rebuild")["details"]
    assert rebuild["stored_state"] == rebuild["rebuilt_state"]
    assert rebuild["stored_state"]["compact_revision"] > 0
    assert rebuild["applied_index"] == check_of(doc, "backend")["details"]["consistent_index"]
    assert fingerprint(copy) == before


def test_wal_byte_flipped_mid_segment(copy: Path) -> None:
    path = segment(copy)
    records = entry_records(path)
    offset, length = records[len(records) // 2]
    with open(path, "r+b") as f:
        f.seek(offset + 13 + length // 2)
        byte = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte[0] ^ 0x40]))
    res = run_check(copy)
    assert res.returncode == 1, res.stdout
    assert f"corrupt   wal       {path} offset={offset}: crc mismatch" in res.stdout
    assert re.search(r"^rebuild +skipped", res.stdout, re.M)


def test_torn_wal_tail_is_only_a_warning(copy: Path) -> None:
    path = segment(copy)
    scan = scan_segment(Path(path).read_bytes(), None)
    with open(path, "r+b") as f:  # the start of a 64-byte record whose CRC never made it
        f.seek(scan.end)
        f.write((64).to_bytes(8, "little") + b"\x01\x02\x03\x04\x02partial")
    res = run_check(copy)
    assert res.returncode == 0, res.stdout
    assert (
        f"warning   wal       {path} offset={scan.end}: torn tail (repairable on start)"
        in res.stdout
    )
    assert re.search(r"^rebuild +ok", res.stdout, re.M)


def _rewrite_value(data_dir: Path, key: bytes, new_value: bytes | None) -> bytes:
    """Change the stored value of the latest revision of ``key``: re-sealed with a valid CRC
    (``new_value``), or one byte flipped without touching the CRC (None).  Returns the
    revision's bucket key."""
    env = lmdb.open(str(data_dir / "member" / "db"), max_dbs=16)
    try:
        db = env.open_db(BUCKET_KEY.encode())
        with env.begin(write=True, db=db) as txn:
            target: tuple[bytes, bytes] | None = None
            for raw, stored in txn.cursor():
                kv = decode_kv(unseal(BUCKET_KEY, raw, stored))
                if kv.key == key and kv.create_revision:
                    target = (raw, stored)
            assert target is not None
            raw, stored = target
            if new_value is None:
                flipped = bytearray(stored)
                flipped[-1] ^= 0x01
                txn.put(raw, bytes(flipped))
            else:
                kv = decode_kv(unseal(BUCKET_KEY, raw, stored))
                changed = encode_kv(
                    type(kv)(kv.key, kv.create_revision, kv.mod_revision, kv.version, new_value)
                )
                txn.put(raw, seal(raw, changed))
    finally:
        env.close()
    return raw


def test_value_rewritten_with_valid_crc_is_a_divergence(copy: Path) -> None:
    raw = _rewrite_value(copy, b"k4", b"forged")
    code, doc = run_json(copy)
    assert code == 1
    assert check_of(doc, "backend")["status"] == "ok"  # the CRC is valid
    rebuild = check_of(doc, "rebuild")
    assert rebuild["status"] == "divergent"
    assert rebuild["details"]["differing_parts"] == ["keys"]
    index = put_entry_index(copy, b"k4")
    assert rebuild["details"]["first_divergent_index"] == index
    first = rebuild["findings"][0]
    assert first["bucket"] == "key" and first["key"] == raw.hex() and first["index"] == index
    assert "forged" in first["message"]
    # Changed at rest, after the apply: the chain head the member stored still matches.
    assert "apply digest equal" in rebuild["summary"]
    assert "changed after" in rebuild["summary"]
    res = run_check(copy)
    assert res.returncode == 1
    assert re.search(r"^divergent rebuild .* keys: first differing revision", res.stdout, re.M)


def test_cluster_record_rewritten_is_a_divergence(copy: Path) -> None:
    # the cluster version the leader decided, rewritten at rest with a valid envelope: the
    # member's state hash covers the cluster records, and so does check data's rebuild
    env = lmdb.open(str(copy / "member" / "db"), max_dbs=16)
    try:
        db = env.open_db(BUCKET_CLUSTER.encode())
        with env.begin(write=True, db=db) as txn:
            stored = txn.get(K_CLUSTER_VERSION)
            assert stored is not None
            assert unseal(BUCKET_CLUSTER, K_CLUSTER_VERSION, stored) != b"0.1"
            txn.put(K_CLUSTER_VERSION, seal(K_CLUSTER_VERSION, b"0.1"))
    finally:
        env.close()
    code, doc = run_json(copy)
    assert code == 1
    rebuild = check_of(doc, "rebuild")
    assert rebuild["status"] == "divergent"
    assert rebuild["details"]["differing_parts"] == ["members"]


def test_flipped_byte_in_a_value_names_bucket_and_key(copy: Path) -> None:
    raw = _rewrite_value(copy, b"k3", None)
    res = run_check(copy)
    assert res.returncode == 1, res.stdout
    data_file = copy / "member" / "db" / "data.mdb"
    assert (
        f"corrupt   backend   {data_file} bucket=key key={raw.hex()}: checksum mismatch"
        in res.stdout
    )
    assert re.search(r"^rebuild +skipped", res.stdout, re.M)


def test_lease_record_under_another_id_is_corrupt(copy: Path) -> None:
    env = lmdb.open(str(copy / "member" / "db"), max_dbs=16)
    try:
        db = env.open_db(BUCKET_LEASE.encode())
        with env.begin(write=True, db=db) as txn:
            [(key, stored)] = list(txn.cursor())
            lease = decode_lease(unseal(BUCKET_LEASE, key, stored))
            forged = encode_lease(lease.id + 1, lease.ttl, lease.remaining_ttl)
            txn.put(key, seal(key, forged))  # valid envelope, wrong record
    finally:
        env.close()
    res = run_check(copy)
    assert res.returncode == 1, res.stdout
    data_file = copy / "member" / "db" / "data.mdb"
    assert (
        f"corrupt   backend   {data_file} bucket=lease key={key.hex()}: lease record "
        f"{lease.id + 1:x} stored under key {key.hex()}" in res.stdout
    )


def test_corrupt_snapshot_file(copy: Path) -> None:
    snap = next((copy / "member" / "snap").glob("*.snap"))
    data = bytearray(snap.read_bytes())
    data[-3] ^= 0xFF
    snap.write_bytes(bytes(data))
    res = run_check(copy)
    assert res.returncode == 1, res.stdout
    assert f"corrupt   snap      {snap}: crc mismatch" in res.stdout
    assert "cannot rebuild: the bootstrap snapshot (index 1) is missing" in res.stdout


def test_no_rebuild_base_cannot_tell(copy: Path) -> None:
    for snap in (copy / "member" / "snap").glob("*.snap"):
        snap.unlink()
    res = run_check(copy)
    assert res.returncode == 2, res.stdout
    assert "verdict   unknown (exit 2)" in res.stdout


def wait_published(c: Cluster, timeout: float = 10) -> None:
    """Until the member's publish entry (its client URLs) and the leader's first cluster
    version entry have been applied (bounded)."""
    deadline = time.monotonic() + timeout
    while True:
        members = json.loads(c.etcdctl("member", "list", "-w", "json").stdout)["members"]
        with grpc.insecure_channel(c.members[0].endpoint) as ch:
            _resp, call = pb_grpc.MaintenanceStub(ch).Status.with_call(
                pb.StatusRequest(), timeout=5
            )
        versions = dict(call.initial_metadata())
        if members[0].get("clientURLs") and versions.get("raftkv-cluster-version"):
            return
        assert time.monotonic() < deadline, "the member did not publish its client URLs"
        time.sleep(0.1)


def _backend_copy(data_dir: Path, work: Path, upto: int) -> Path:
    """A ``*.snap.db`` backend copy at index ``upto`` made by the member's own Applier from the
    bootstrap snapshot and the WAL (what a leader sends with a snapshot)."""
    _res, wal = check_wal(str(data_dir / "member" / "wal"))
    boot = next((data_dir / "member" / "snap").glob("*.snap"))
    snap = decode_snapshot_file(str(boot), boot.read_bytes())
    applier = Applier(
        data_dir=DataDir(str(work)),
        backend_config=BackendConfig(sync_mode="nosync"),
        min_lease_ttl=2,
        header=lambda rev: pb.ResponseHeader(revision=rev),
        apply_conf_change=lambda _cc: None,
        on_members_changed=lambda _m: None,
    )
    try:
        applier.write_initial_members(decode_members(snap.data))
        applier.apply_entries([e for e in wal.entries if e.index <= upto])
        entry = wal.entry(upto)
        assert entry is not None
        path = data_dir / "member" / "snap" / f"{upto:016x}-{entry.term:016x}.snap.db"
        applier.copy_backend(str(path))
    finally:
        applier.close()
    return path


def test_backend_copy_is_a_rebuild_base(copy: Path, tmp_path: Path) -> None:
    path = _backend_copy(copy, tmp_path / "work", 6)
    for snap in (copy / "member" / "snap").glob("*.snap"):
        snap.unlink()  # without the bootstrap snapshot, only the copy can be the base
    code, doc = run_json(copy)
    assert code == 0, doc
    rebuild = check_of(doc, "rebuild")
    assert rebuild["status"] == "ok" and rebuild["details"]["base_index"] == 6
    assert check_of(doc, "snap")["details"]["backend_copies"] == {path.name: 6}


def test_damaged_backend_copy_names_file_bucket_and_key(copy: Path, tmp_path: Path) -> None:
    path = _backend_copy(copy, tmp_path / "work", 6)
    env = lmdb.open(str(path), subdir=False, max_dbs=16, lock=False)
    try:
        db = env.open_db(BUCKET_KEY.encode())
        with env.begin(write=True, db=db) as txn:
            raw, stored = next(iter(txn.cursor()))
            txn.put(raw, stored[:-1] + bytes([stored[-1] ^ 0x08]))
    finally:
        env.close()
    res = run_check(copy)
    assert res.returncode == 1, res.stdout
    assert f"corrupt   snap      {path} bucket=key key={raw.hex()}: checksum mismatch" in res.stdout
    assert re.search(r"^rebuild +ok +base index 1 ", res.stdout, re.M)


def test_apply_skip_is_found_at_the_skipped_entry(tmp_path: Path) -> None:
    require_etcdctl()
    c = Cluster(tmp_path, 1)
    try:
        # Entries 2 (leader's empty entry) and 3 (member publish) and the first put pass; the
        # second put is skipped (its client never gets an answer: only its own put fails).
        c.start(0, env={"RAFTKV_FAILPOINTS": "applySkipEntry=4*off->1*on"})
        c.wait_ready()
        wait_published(c)
        failed = [
            i
            for i in range(5)
            if c.etcdctl("--command-timeout=1s", "put", f"s{i}", f"v{i}", check=False).returncode
        ]
        assert failed == [1]
        running = run_check(c.members[0].data_dir)
        assert running.returncode == 2, running.stdout
        assert "member is running" in running.stdout
        assert c.stop(0) == 0
    finally:
        c.close()
    skipped = re.findall(r"applySkipEntry: skipping entry (\d+)", c.members[0].log_path.read_text())
    assert len(skipped) == 1
    code, doc = run_json(c.members[0].data_dir)
    assert code == 1
    rebuild = check_of(doc, "rebuild")
    assert "keys" in rebuild["details"]["differing_parts"]
    assert rebuild["details"]["first_divergent_index"] == int(skipped[0])
    digest = [f for f in rebuild["findings"] if f["message"].startswith("apply digest at index")]
    assert len(digest) == 1 and f"first diverging index {skipped[0]}" in digest[0]["message"]
    assert "apply digest DIFFERENT" in rebuild["summary"]


def _applied_indexes(c: Cluster) -> list[int]:
    """Every member's applied Raft index (-1 for one that does not answer)."""
    found = []
    for m in c.members:
        try:
            with grpc.insecure_channel(m.endpoint) as ch:
                status = pb_grpc.MaintenanceStub(ch).Status(pb.StatusRequest(), timeout=2)
            found.append(status.raftAppliedIndex)
        except grpc.RpcError:
            found.append(-1)
    return found


def _put(c: Cluster, i: int, keys: list[str]) -> None:
    with grpc.insecure_channel(c.members[i].endpoint) as ch:
        stub = pb_grpc.KVStub(ch)
        for key in keys:
            stub.Put(pb.PutRequest(key=key.encode(), value=b"v-" + key.encode()), timeout=5)


def test_member_that_installed_a_snapshot_is_rebuilt_from_it(tmp_path: Path) -> None:
    """A follower that was down while the leader compacted its log past it catches up by a
    snapshot; it keeps the backend it installed, and check data rebuilds it from that file
    plus the entries its WAL holds after the snapshot."""
    require_etcdctl()
    c = Cluster(
        tmp_path, 3, ["--snapshot-count", "20", "--experimental-snapshot-catchup-entries", "5"]
    )
    try:
        c.start_all()
        leader = c.leader_index()
        assert leader is not None
        lagging = (leader + 1) % 3
        assert c.stop(lagging) == 0
        _put(c, leader, [f"down/{n:03d}" for n in range(80)])  # several snapshots meanwhile
        c.start(lagging)
        c.wait_ready()
        c.wait_until(
            lambda: len(set(ix := _applied_indexes(c))) == 1 and ix[0] > 80,
            "the restarted member caught up",
        )
        # entries after the snapshot, in the lagging member's WAL (and applied from it)
        _put(c, leader, [f"after/{n}" for n in range(5)])
        c.wait_until(lambda: len(set(_applied_indexes(c))) == 1, "all members applied the puts")
        assert c.stop(lagging) == 0
    finally:
        c.close()
    member = c.members[lagging]
    found = re.findall(
        r"installing the backend received with snapshot (\d+)", member.log_path.read_text()
    )
    assert found, "the restarted member did not catch up by a snapshot"
    installed = int(found[-1])
    data_dir = member.data_dir
    kept: dict[int, Path] = {}
    for p in (data_dir / "member" / "snap").glob("*.snap.db"):
        parsed = parse_snapshot_db_name(p.name)
        assert parsed is not None
        kept[parsed[0]] = p
    assert min(kept) == installed  # the installed file is kept, none older
    assert not list((data_dir / "member" / "db").glob("*.tmp"))

    code, doc = run_json(data_dir)
    assert code == 0, json.dumps(doc, indent=1)
    copies = check_of(doc, "snap")["details"]["backend_copies"]
    rebuild = check_of(doc, "rebuild")
    assert rebuild["status"] == "ok"
    base = Path(rebuild["details"]["base"])
    assert base in kept.values()  # the installed file (or one received after it)
    assert rebuild["details"]["base_index"] == copies[base.name] >= installed
    assert rebuild["details"]["applied_index"] > rebuild["details"]["base_index"]
    assert rebuild["details"]["stored_state"] == rebuild["details"]["rebuilt_state"]

    raw = _rewrite_value(data_dir, b"after/3", b"forged")
    code, doc = run_json(data_dir)
    assert code == 1
    rebuild = check_of(doc, "rebuild")
    assert rebuild["status"] == "divergent"
    assert rebuild["details"]["base"] == str(base)
    assert rebuild["details"]["differing_parts"] == ["keys"]
    index = put_entry_index(data_dir, b"after/3")
    assert rebuild["details"]["first_divergent_index"] == index
    first = rebuild["findings"][0]
    assert first["key"] == raw.hex() and "forged" in first["message"]


# -- functions ------------------------------------------------------------------------------


def _wal(first: int, last: int) -> WalContents:
    return WalContents(entries=[Entry(term=2, index=i) for i in range(first, last + 1)])


def _small_wal(path: Path) -> list[str]:
    """A real WAL of several 4 KiB segments holding entries 2..120; its segment paths."""
    w = WAL.create(str(path), encode_metadata(0x11, 0x22), segment_size=4096)
    try:
        w.save_snapshot(WalSnapshot(1, 1, ConfState(voters=(0x11,))))
        for i in range(2, 121):
            w.save(HardState(term=2, vote=0x11, commit=i), [Entry(term=2, index=i, data=b"x" * 90)])
    finally:
        w.close()
    return [s.path for s in list_segments(str(path))]


def test_wal_chain_across_segments(tmp_path: Path) -> None:
    paths = _small_wal(tmp_path / "wal")
    assert len(paths) >= 3
    res, wal = check_wal(str(tmp_path / "wal"))
    assert res.status == "ok" and res.findings == []
    assert (wal.first_index, wal.last_index, wal.segments) == (2, 120, len(paths))
    assert (wal.member_id, wal.cluster_id, wal.hard_state.commit) == (0x11, 0x22, 120)


def test_wal_damage_before_the_last_segment(tmp_path: Path) -> None:
    paths = _small_wal(tmp_path / "wal")
    offset, length = entry_records(paths[1])[2]
    data = bytearray(Path(paths[1]).read_bytes())
    data[offset + 13 + length - 1] ^= 0x01
    Path(paths[1]).write_bytes(bytes(data))
    res, wal = check_wal(str(tmp_path / "wal"))
    assert res.status == "corrupt" and wal.corrupt
    [finding] = res.findings
    assert (finding.path, finding.offset) == (paths[1], offset)
    assert finding.message == "crc mismatch (not the last segment)"
    assert wal.segments == len(paths)  # the later segments were still read


def test_wal_segment_missing(tmp_path: Path) -> None:
    paths = _small_wal(tmp_path / "wal")
    os.remove(paths[1])
    res, _wal = check_wal(str(tmp_path / "wal"))
    assert [(f.severity, f.path) for f in res.findings] == [(Severity.CORRUPT, paths[2])]
    assert "segment sequence gap: 0x0 is followed by 0x2" in res.findings[0].message


def _rewrite_chain(paths: list[str], start: int, metadata: bytes) -> int:
    """Re-encode segments ``start..`` with ``metadata`` in their METADATA records and a valid
    CRC chain, as a WAL written with other IDs would be; returns the first such record's
    offset."""
    prev = scan_segment(Path(paths[start - 1]).read_bytes(), None).records[-1].crc
    first_offset = -1
    for path in paths[start:]:
        old = Path(path).read_bytes()
        buf = bytearray()
        for rec in scan_segment(old, None).records:
            data = bytes(rec.data)
            if rec.type == RecordType.CRC:
                data = encode_u32(prev)
            elif rec.type == RecordType.METADATA:
                first_offset = len(buf) if first_offset < 0 else first_offset
                data = metadata
            prev = append_record(buf, rec.type, data, prev)
        Path(path).write_bytes(bytes(buf) + bytes(len(old) - len(buf)))
    return first_offset


def test_wal_metadata_conflict_between_segments(tmp_path: Path) -> None:
    paths = _small_wal(tmp_path / "wal")
    offset = _rewrite_chain(paths, 1, encode_metadata(0x11, 0x99))
    res, wal = check_wal(str(tmp_path / "wal"))
    # One conflict per rewritten segment, nothing else: the chain itself is intact.
    assert [f.path for f in res.findings] == paths[1:]
    first = res.findings[0]
    assert first.offset == offset and first.severity == Severity.CORRUPT
    assert first.message == (
        "metadata conflict: member 11 cluster 99, earlier segments say member 11 cluster 22"
    )
    assert wal.corrupt and wal.last_index == 120


def test_choose_base() -> None:
    boot = Snapshot()
    files = SnapFiles(snapshots={1: boot})
    base = choose_base(_wal(2, 10), files, 10)
    assert not isinstance(base, str) and base.index == 1 and base.snapshot is boot
    assert choose_base(_wal(40, 60), files, 55) == (
        "cannot rebuild: WAL starts at index 40 and no backend copy covers it"
    )
    from raftkv.guard.check_files import BackendInfo

    files.backends = [
        BackendInfo("/x/a.snap.db", True, 30),
        BackendInfo("/x/b.snap.db", True, 45),
        BackendInfo("/x/c.snap.db", True, 58),
    ]
    base = choose_base(_wal(40, 60), files, 55)
    assert not isinstance(base, str) and base.index == 45 and base.backend_path == "/x/b.snap.db"
    assert "bootstrap snapshot (index 1) is missing" in str(choose_base(_wal(2, 9), SnapFiles(), 9))


MEMBERS = [MemberInfo(1, "m1", ("http://127.0.0.1:2380",))]


def _detached(root: Path) -> Applier:
    applier = Applier.detached(str(root), BackendConfig(map_size=64 << 20), min_lease_ttl=2)
    applier.write_initial_members(MEMBERS)
    return applier


@pytest.mark.parametrize(
    ("sender_index", "after"),
    [(9, (10, 12)), (9, None), (10, None)],
    ids=["entries-after-it", "stopped-at-once", "sender-past-the-snapshot"],
)
def test_member_rebuilt_from_the_snapshot_it_installed(
    tmp_path: Path, sender_index: int, after: tuple[int, int] | None
) -> None:
    """A member whose log held entries 2..10 of term 2 (committed up to 6, 7..10 stale)
    installs a snapshot at index 9 of term 3 whose backend the sender took at
    ``sender_index``, then (``after``) appends and applies entries of term 3.  Its WAL still
    holds the stale entries before the snapshot marker, and its snap dir the bootstrap
    snapshot: the rebuild must start from the kept backend file, with the entries written
    after the marker, and find the member consistent."""
    dd = DataDir(str(tmp_path / "m1.raftkv"))
    conf = ConfState(voters=(1,))
    Snapshotter(dd.snap).save(Snapshot(SnapshotMetadata(1, 1, conf), encode_members(MEMBERS)))
    w = WAL.create(dd.wal, encode_metadata(1, 0x22))
    try:
        w.save_snapshot(WalSnapshot(1, 1, conf))
        w.save(HardState(term=2, vote=1, commit=6), put_entries(2, 10, term=2))
        w.save_snapshot(WalSnapshot(9, 3, conf))
        w.save(HardState(term=3, vote=0, commit=9), [])
        if after is not None:
            w.save(HardState(term=3, vote=0, commit=after[1]), put_entries(after[0], after[1], 3))
    finally:
        w.close()
    sender = _detached(tmp_path / "sender")
    try:
        sender.apply_entries(put_entries(2, 6, term=2) + put_entries(7, sender_index, term=3))
        received = dd.received_backend_path(9, 3)
        assert sender.copy_backend(received) == sender_index
    finally:
        sender.close()
    member = _detached(Path(dd.root))
    try:
        member.apply_entries(put_entries(2, 6, term=2))
        member.install_snapshot(Snapshot(SnapshotMetadata(9, 3, conf), b""), received)
        if after is not None:
            member.apply_entries(put_entries(after[0], after[1], term=3))
    finally:
        member.close()

    _res, wal = check_wal(dd.wal)
    assert (wal.first_index, wal.last_index) == (after or (None, None))
    report = check_data(dd.root)
    rebuild = next(c for c in report.checks if c.name == "rebuild")
    assert report.exit_code == 0, [(n, f.message) for n, f in report.findings]
    assert rebuild.details["base"] == received
    assert rebuild.details["base_index"] == sender_index
    assert rebuild.details["applied_index"] == (after[1] if after else sender_index)


def test_lock_probes_see_another_process(tmp_path: Path) -> None:
    db = tmp_path / "db"
    wal = tmp_path / "wal"
    db.mkdir()
    wal.mkdir()
    assert lmdb_lock_holder(str(db)) is None and not wal_locked(str(wal))
    code = (
        "import fcntl, os, sys, lmdb\n"
        f"env = lmdb.open({str(db)!r})\n"
        f"fd = os.open({str(wal)!r}, os.O_RDONLY)\n"
        "fcntl.flock(fd, fcntl.LOCK_EX)\n"
        "print('ready', flush=True)\n"
        "sys.stdin.read()\n"
    )
    with subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    ) as proc:
        assert proc.stdin is not None and proc.stdout is not None
        try:
            assert proc.stdout.readline().strip() == "ready"
            assert lmdb_lock_holder(str(db)) == proc.pid
            assert wal_locked(str(wal))
        finally:
            proc.stdin.close()
            proc.wait(10)
    assert lmdb_lock_holder(str(db)) is None and not wal_locked(str(wal))


def test_not_a_data_dir_cannot_tell(tmp_path: Path) -> None:
    report = check_data(str(tmp_path / "missing"))
    assert report.exit_code == 2 and report.verdict == "unknown"
    [(name, finding)] = report.findings
    assert name == "member" and "not a member data directory" in finding.message


def test_help_describes_the_command() -> None:
    res = subprocess.run(
        [sys.executable, "-m", "raftkv.ctl.main", "check", "data", "--help"],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        env={**os.environ, "PYTHONPATH": str(REPO / "src")},
        cwd=REPO,
        check=False,
    )
    assert res.returncode == 0
    assert "STOPPED member" in res.stdout and "--data-dir" in res.stdout
    text = " ".join(res.stdout.split())
    assert "the backend a member received with a Raft snapshot, kept once installed" in text
