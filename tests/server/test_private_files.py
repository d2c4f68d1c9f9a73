"""Private files, as etcd keeps them: directories 0700, files 0600, under the usual umask 022.

Each creation point on its own (``raftkv.fileutil``, the WAL, the snapshotter, the LMDB
backend, a received peer snapshot, the backup destination, the rebuild's copies), then a real
member process: its data and WAL directories after writes, a raft snapshot (small
``--snapshot-count``) and ``raftkv snapshot save``; the saved snapshot; the backup agent's
local destination; ``raftkv snapshot restore``'s output; etcd's warning for an existing data
dir that is not private (the member starts all the same); the error for one that cannot be
created.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import stat
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import crc32c
import grpc
import pytest

from raftkv import fileutil
from raftkv.backup.destination import DirDestination
from raftkv.backup.manifest import MANIFEST_NAME, Manifest
from raftkv.check.rebuild import _copy_env
from raftkv.mvcc.backend import Backend, BackendConfig
from raftkv.peer import framing
from raftkv.peer.snapshot import receive_file
from raftkv.proto import rpc_pb2 as pb
from raftkv.proto import rpc_pb2_grpc as pb_grpc
from raftkv.raft.types import ConfState, Entry, HardState, Snapshot, SnapshotMetadata
from raftkv.snap import Snapshotter
from raftkv.snap.snapshotter import parse_snapshot_name
from raftkv.wal import WAL
from raftkv.wal.files import list_segments
from raftkv.wal.record import RecordType, scan_segment
from tests.backup.support import raftkv
from tests.cluster.harness import Cluster, require_etcdctl

WARNING = (
    'check file permission: directory "{path}" exist, but the permission is "drwxr-xr-x". '
    'The recommended permission is "-rwx------" to prevent possible unprivileged access to '
    "the data"
)


@pytest.fixture(scope="module", autouse=True)
def umask_022() -> Iterator[None]:
    """The usual umask (group and others may read), for this process and its children."""
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def mode(path: str | Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def not_private(*roots: str | Path) -> list[str]:
    """Every directory (the roots included) not 0700 and every regular file not 0600 under
    ``roots``, with its mode; files that vanish during the walk are skipped."""
    bad = []
    for root in roots:
        for dirpath, _dirs, files in os.walk(root):
            if mode(dirpath) != 0o700:
                bad.append(f"{dirpath} (directory {mode(dirpath):04o})")
            for name in files:
                path = os.path.join(dirpath, name)
                try:
                    st = os.lstat(path)
                except FileNotFoundError:
                    continue
                if stat.S_ISREG(st.st_mode) and stat.S_IMODE(st.st_mode) != 0o600:
                    bad.append(f"{path} (file {stat.S_IMODE(st.st_mode):04o})")
    return bad


# -- fileutil ---------------------------------------------------------------------------


def test_mkdir_all_makes_every_missing_directory_private(tmp_path: Path) -> None:
    os.mkdir(tmp_path / "loose", 0o755)
    fileutil.mkdir_all(str(tmp_path / "loose" / "a" / "b" / "c"))
    assert mode(tmp_path / "loose") == 0o755  # existing: left alone
    assert not_private(tmp_path / "loose" / "a") == []
    fileutil.mkdir_all(str(tmp_path / "loose" / "a" / "b"))  # already there: nothing
    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(NotADirectoryError):
        fileutil.mkdir_all(str(tmp_path / "file" / "sub"))
    with pytest.raises(FileExistsError):
        fileutil.mkdir_all(str(tmp_path / "file"))


def test_touch_dir_all_warns_as_etcd_and_leaves_the_mode(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    log = logging.getLogger("test.private")
    loose = tmp_path / "loose"
    os.mkdir(loose)
    os.chmod(loose, 0o755)
    with caplog.at_level(logging.WARNING, logger="test.private"):
        fileutil.touch_dir_all(str(loose), log)
        fileutil.touch_dir_all(str(tmp_path / "new" / "dir"), log)
        fileutil.touch_dir_all(str(tmp_path / "new" / "dir"), log)  # 0700: no warning
    assert [r.getMessage() for r in caplog.records] == [WARNING.format(path=loose)]
    assert mode(loose) == 0o755
    assert not_private(tmp_path / "new") == []
    assert os.listdir(loose) == []  # the writability probe is gone
    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(NotADirectoryError):
        fileutil.touch_dir_all(str(tmp_path / "file" / "sub"), log)


def test_go_file_mode_prints_as_go() -> None:
    assert fileutil.go_file_mode(stat.S_IFDIR | 0o755) == "drwxr-xr-x"
    assert fileutil.go_file_mode(0o700) == "-rwx------"
    assert fileutil.go_file_mode(stat.S_IFREG | 0o644) == "-rw-r--r--"
    assert fileutil.go_file_mode(stat.S_IFDIR | stat.S_ISGID | stat.S_ISVTX | 0o775) == (
        "dgtrwxrwxr-x"
    )
    assert fileutil.check_dir_permission("/nonexistent/x") == (
        'directory "/nonexistent/x" empty, cannot check permission'
    )


# -- each creation point ----------------------------------------------------------------


def test_wal_directory_segments_and_broken_copy_are_private(tmp_path: Path) -> None:
    wal_dir = tmp_path / "new" / "parent" / "wal"
    index = 0
    with WAL.create(str(wal_dir), b"meta", segment_size=2048) as w:
        while len(list_segments(str(wal_dir))) < 3:  # cut segments too
            w.save(HardState(1, 1, index), [Entry(1, index + 1, data=b"x" * 400)])
            index += 1
        w.save(HardState(1, 1, index), [Entry(1, index + 1, data=b"last")])
    last = list_segments(str(wal_dir))[-1].path
    with open(last, "rb") as f:
        records = scan_segment(f.read(), None).records
    torn = [r for r in records if r.type == RecordType.ENTRY][-1].offset + 20
    with open(last, "r+b") as f:
        f.truncate(torn)
    with WAL.open(str(wal_dir), segment_size=2048) as w:
        w.read_all()
    assert os.path.exists(last + ".broken")
    assert not_private(tmp_path / "new") == []


def test_snapshot_files_are_private(tmp_path: Path) -> None:
    snap_dir = tmp_path / "member" / "snap"
    snapshotter = Snapshotter(str(snap_dir))
    snapshotter.save(Snapshot(SnapshotMetadata(5, 1, ConfState(voters=(1,))), b"data"))
    assert snapshotter.names()
    assert not_private(tmp_path / "member") == []


def test_backend_files_are_private(tmp_path: Path) -> None:
    backend = Backend(str(tmp_path / "member" / "db"), BackendConfig(map_size=1 << 22))
    try:
        assert sorted(os.listdir(tmp_path / "member" / "db")) == ["data.mdb", "lock.mdb"]
        assert not_private(tmp_path / "member") == []
    finally:
        backend.close()
    copy = tmp_path / "copy"
    _copy_env(str(tmp_path / "member" / "db"), str(copy / "member" / "db"))  # check data's
    fileutil.copy_file(str(tmp_path / "member" / "db" / "data.mdb"), str(copy / "base.db"))
    assert not_private(copy) == []


def test_received_peer_snapshot_is_private(tmp_path: Path) -> None:
    data = os.urandom(3000)

    async def receive() -> str:
        reader = asyncio.StreamReader()
        reader.feed_data(framing.encode_snap_chunk(crc32c.crc32c(data), data))
        reader.feed_data(framing.encode_snap_end(len(data), crc32c.crc32c(data)))
        reader.feed_eof()
        return await receive_file(
            reader,
            peer_id=2,
            snapshot_dir=str(tmp_path / "member" / "snap"),
            index=9,
            term=2,
            size=len(data),
            logger=logging.getLogger("test.private"),
        )

    path = asyncio.run(receive())
    assert Path(path).read_bytes() == data
    assert not_private(tmp_path / "member") == []


def test_backup_destination_files_are_private(tmp_path: Path) -> None:
    dest = DirDestination(str(tmp_path / "backups" / "cluster"))
    for name in ("full-1.db.zst", "full-2.db.zst"):
        staged = dest.staging(name)
        with open(staged, "wb") as f:  # as the agent writes it
            f.write(b"backup bytes")
        dest.publish(name if name.endswith("1.db.zst") else f"failed/{name}", staged, "")
    dest.write_manifest(Manifest())
    assert sorted(dest.names()) == ["failed/full-2.db.zst", "full-1.db.zst", MANIFEST_NAME]
    assert not_private(tmp_path / "backups") == []


# -- a real member ----------------------------------------------------------------------


@dataclass
class MemberRun:
    root: Path
    data_dir: Path
    wal_dir: Path
    saved: Path
    backups: Path
    restored: Path
    restored_wal: Path
    snapshots: list[str] = field(default_factory=list)
    running: list[str] = field(default_factory=list)  # offenders while the member ran
    stopped: list[str] = field(default_factory=list)  # offenders after it stopped


def _put_keys(endpoint: str, n: int) -> None:
    with grpc.insecure_channel(endpoint) as channel:
        kv = pb_grpc.KVStub(channel)
        for i in range(n):
            kv.Put(pb.PutRequest(key=f"k/{i:03d}".encode(), value=b"v" * 200), timeout=10)


def _raft_snapshots(snap_dir: Path) -> list[str]:
    """Raft snapshot files beyond the bootstrap one (index 1)."""
    names = os.listdir(snap_dir) if snap_dir.is_dir() else []
    return [n for n in names if (p := parse_snapshot_name(n)) is not None and p[1] > 1]


@pytest.fixture(scope="module")
def member_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MemberRun]:
    require_etcdctl()
    root = tmp_path_factory.mktemp("private")
    run = MemberRun(
        root=root,
        data_dir=root / "m1.raftkv",
        wal_dir=root / "wals" / "deep" / "m1",
        saved=root / "saved" / "snapshot.db",
        backups=root / "backups" / "cluster",
        restored=root / "restored" / "deep" / "m1.raftkv",
        restored_wal=root / "restored-wal" / "deep" / "wal",
    )
    c = Cluster(root, 1, ["--snapshot-count", "10", "--wal-dir", str(run.wal_dir)])
    try:
        c.start_all()
        endpoint = c.members[0].endpoint
        _put_keys(endpoint, 40)
        snap_dir = run.data_dir / "member" / "snap"
        c.wait_until(lambda: bool(_raft_snapshots(snap_dir)), "a raft snapshot")
        run.snapshots = _raft_snapshots(snap_dir)
        run.saved.parent.mkdir()
        raftkv("snapshot", "save", str(run.saved), "--endpoints", endpoint)
        raftkv("backup", "run", "--endpoints", endpoint, "--dir", str(run.backups), "--once")
        _put_keys(endpoint, 5)
        run.running = not_private(run.data_dir, run.wal_dir, root / "wals")
        assert c.stop(0) == 0
        run.stopped = not_private(run.data_dir, run.wal_dir, root / "wals")
        raftkv(
            "snapshot", "restore", str(run.saved),
            "--name", "m1", "--data-dir", str(run.restored), "--wal-dir", str(run.restored_wal),
            "--initial-cluster", "m1=http://127.0.0.1:2380",
            "--initial-advertise-peer-urls", "http://127.0.0.1:2380",
        )  # fmt: skip
        yield run
    except BaseException:
        print(c.dump_logs())
        raise
    finally:
        c.close()


def test_member_data_dir_and_wal_dir_are_private(member_run: MemberRun) -> None:
    assert member_run.snapshots, "no raft snapshot was taken"
    assert member_run.running == [], "not private while the member ran:\n" + "\n".join(
        member_run.running
    )
    assert member_run.stopped == [], "not private after the member stopped:\n" + "\n".join(
        member_run.stopped
    )


def test_saved_snapshot_is_private(member_run: MemberRun) -> None:
    assert mode(member_run.saved) == 0o600
    assert os.listdir(member_run.saved.parent) == [member_run.saved.name]


def test_backup_agent_destination_is_private(member_run: MemberRun) -> None:
    stored = [n for n in os.listdir(member_run.backups) if n.startswith("full-")]
    assert stored, os.listdir(member_run.backups)
    offenders = not_private(member_run.backups)
    assert offenders == [], "\n".join(offenders)


def test_restored_data_dir_is_private(member_run: MemberRun) -> None:
    assert (member_run.restored / "member" / "db" / "data.mdb").exists()
    assert list_segments(str(member_run.restored_wal))
    offenders = not_private(
        member_run.root / "restored" / "deep", member_run.root / "restored-wal" / "deep"
    )
    assert offenders == [], "\n".join(offenders)


def test_existing_loose_data_dir_warns_as_etcd_and_the_member_starts(tmp_path: Path) -> None:
    require_etcdctl()
    c = Cluster(tmp_path, 1)
    data_dir = c.members[0].data_dir
    os.mkdir(data_dir)
    os.chmod(data_dir, 0o755)
    try:
        c.start_all()
        log = c.members[0].log_path.read_text()
        assert WARNING.format(path=data_dir) in log, log
        assert mode(data_dir) == 0o755  # etcd warns, it does not chmod
        offenders = not_private(data_dir / "member")
        assert offenders == [], "\n".join(offenders)
    finally:
        c.close()


def test_data_dir_that_cannot_be_created_stops_the_member(tmp_path: Path) -> None:
    c = Cluster(tmp_path, 1)
    (tmp_path / "a-file").write_bytes(b"")
    c.members[0].data_dir = tmp_path / "a-file" / "m1.raftkv"
    try:
        c.start(0)
        proc = c.members[0].proc
        assert proc is not None
        try:
            code = proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            raise
        log = c.members[0].log_path.read_text()
        assert code == 1, log
        assert f"cannot open data dir {tmp_path / 'a-file' / 'm1.raftkv'}: Not a directory" in log
        assert "Traceback" not in log, log
    finally:
        c.close()
