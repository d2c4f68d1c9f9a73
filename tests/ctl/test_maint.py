"""member / endpoint / alarm / defrag / snapshot / move-leader / version, and global flags."""

from __future__ import annotations

from pathlib import Path

import pytest

from raftkv import __version__
from raftkv.version import ETCD_API_VERSION, STORAGE_VERSION, Version
from tests.ctl.harness import Ctl, Mask, Result, assert_same, free_ports, regex_mask
from tests.ctl.status_extras import split_status

FORMATS = ["simple", "json", "fields", "protobuf", "table"]
STATUS_MASKS: list[Mask] = [
    regex_mask(rb'"(dbSize|dbSizeInUse|raftIndex|raftAppliedIndex)":\d+', rb'"\1":N'),
    regex_mask(rb'"(DBSize|RaftIndex|RaftAppliedIndex)" : \d+', rb'"\1" : N'),
    regex_mask(rb"\d+(\.\d+)? [kMG]?B\b", b"SIZE"),
    # simple and table rows: "..., term, index, applied index, errors"
    regex_mask(rb"(true|false)(, | \| +)(\d+)(, | \| +)\d+(, | \| +)\d+", rb"\1\2\3\4N\5N"),
    regex_mask(rb"-{2,}", b"--"),
    regex_mask(rb" +", b" "),
]
TOOK_MASKS: list[Mask] = [
    regex_mask(rb"\d+(\.\d+)?(ns|\xc2\xb5s|ms|s)\b", b"DURATION"),
    regex_mask(rb"-{2,}", b"--"),
    regex_mask(rb" +", b" "),
]


@pytest.mark.parametrize("fmt", FORMATS)
def test_member_list(ctl: Ctl, fmt: str) -> None:
    ctl.same("member", "list", "-w", fmt)


def expected_versions(ctl: Ctl) -> list[str]:
    """raftkv's extra columns for this server: empty for a plain etcd."""
    if ctl.server.kind == "etcd":
        return ["", "", ""]
    return [__version__, Version.parse(__version__).short(), str(STORAGE_VERSION)]


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("cluster", [False, True])
def test_endpoint_status(ctl: Ctl, fmt: str, cluster: bool) -> None:
    """etcd's columns byte for byte as etcdctl prints them; raftkv's versions after them."""
    extra = ["--cluster"] if cluster else []
    a, b = ctl.both(["endpoint", "status", *extra, "-w", fmt])
    etcd_part, versions = split_status(fmt, b.stdout)
    assert_same(a, Result(b.rc, etcd_part, b.stderr), STATUS_MASKS, what=(fmt, extra))
    if fmt == "protobuf":
        assert versions == []
    else:
        assert versions == [expected_versions(ctl)], b.stdout


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("cluster", [False, True])
def test_endpoint_health(ctl: Ctl, fmt: str, cluster: bool) -> None:
    extra = ["--cluster"] if cluster else []
    ctl.same("endpoint", "health", *extra, "-w", fmt, masks=TOOK_MASKS)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("extra", [[], ["--cluster"], ["--rev=2"]])
def test_endpoint_hashkv(ctl: Ctl, fmt: str, extra: list[str]) -> None:
    ctl.must("put", "h/k", "v")
    ctl.same("endpoint", "hashkv", *extra, "-w", fmt)


def test_endpoint_status_unreachable(ctl: Ctl) -> None:
    dead = f"127.0.0.1:{free_ports(1)[0]}"
    eps = f"--endpoints={ctl.server.endpoint},{dead}"
    a = ctl.etcdctl("endpoint", "status", eps, "--dial-timeout=1s", "--command-timeout=2s")
    b = ctl.raftkv("endpoint", "status", eps, "--dial-timeout=1s", "--command-timeout=2s")
    assert (b.rc, a.rc) == (1, 1)
    from tests.ctl.harness import apply_masks

    etcd_part, versions = split_status("simple", b.stdout)
    assert apply_masks(etcd_part, STATUS_MASKS) == apply_masks(a.stdout, STATUS_MASKS)
    assert versions == [expected_versions(ctl)]
    assert b.stderr.startswith(f"Failed to get the status of endpoint {dead} (".encode())
    assert a.stderr.startswith(f"Failed to get the status of endpoint {dead} (".encode())


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("cmd", ["list", "disarm"])
def test_alarm_without_alarms(ctl: Ctl, fmt: str, cmd: str) -> None:
    if fmt == "fields":
        # etcdctl 3.4 dereferences a nil header here and panics; raftkv prints the header.
        r = ctl.raftkv("alarm", cmd, "-w", fmt)
        assert r.rc == 0 and r.stdout.startswith(b'"ClusterID" : ')
        return
    ctl.same("alarm", cmd, "-w", fmt)


@pytest.mark.parametrize("extra", [[], ["--cluster"], ["-w", "json"]])
def test_defrag(ctl: Ctl, extra: list[str]) -> None:
    ctl.same("defrag", *extra)


def test_snapshot_save(ctl: Ctl, tmp_path: Path) -> None:
    ctl.must("put", "snap/k", "v")
    a = ctl.etcdctl("snapshot", "save", str(tmp_path / "a.db"))
    b = ctl.raftkv("snapshot", "save", str(tmp_path / "b.db"))
    assert (b.rc, b.stdout) == (0, f"Snapshot saved at {tmp_path / 'b.db'}\n".encode())
    assert a.rc == 0
    assert not (tmp_path / "b.db.part").exists()
    status_a = ctl.etcdctl("snapshot", "status", str(tmp_path / "a.db"), "-w", "json")
    status_b = ctl.etcdctl("snapshot", "status", str(tmp_path / "b.db"), "-w", "json")
    assert status_a.rc == 0 and status_b.stdout == status_a.stdout


def test_snapshot_save_errors(ctl: Ctl, tmp_path: Path) -> None:
    ctl.same("snapshot", "save")
    two = f"--endpoints={ctl.server.endpoint},{ctl.server.endpoint}"
    ctl.same("snapshot", "save", two, str(tmp_path / "x.db"))


@pytest.mark.parametrize("args", [[], ["zz"], ["1234"]])
def test_move_leader_errors(ctl: Ctl, args: list[str]) -> None:
    ctl.same("move-leader", *args)


def test_move_leader_to_self(ctl: Ctl) -> None:
    member_id = ctl.must("member", "list").text().split(",")[0]
    ctl.same("move-leader", member_id)


def test_version(ctl: Ctl) -> None:
    """etcdctl's two lines: the client's version, then the etcd API version it speaks (raftkv
    speaks etcd 3.5's API where etcdctl 3.4 speaks 3.4's)."""
    a, b = ctl.etcdctl("version"), ctl.raftkv("version")
    assert a.rc == 0 and a.stdout.split(b"\n")[1] == b"API version: 3.4"
    api = Version.parse(ETCD_API_VERSION).short()
    assert api == "3.5"
    assert (b.rc, b.stderr) == (0, b"")
    assert b.stdout == f"raftkv version: {__version__}\nAPI version: {api}\n".encode()


def test_unreachable_endpoint(ctl: Ctl) -> None:
    dead = f"127.0.0.1:{free_ports(1)[0]}"
    ctl.same("get", "a", f"--endpoints={dead}", "--dial-timeout=1s", errors_only=True)


def test_endpoints_flag_forms(ctl: Ctl) -> None:
    dead = f"127.0.0.1:{free_ports(1)[0]}"
    ctl.must("put", "ep/k", "v")
    ctl.same("get", "ep/k", "-w", "json", f"--endpoints=http://{ctl.server.endpoint},{dead}")
    ctl.same("get", "ep/k", "--endpoints", f"{ctl.server.endpoint}", "--command-timeout=3s")


def test_etcdctl_endpoints_env_accepted(ctl: Ctl) -> None:
    import subprocess

    env = ctl._env("raftkv")
    env.pop("RAFTKV_ENDPOINTS")
    env["ETCDCTL_ENDPOINTS"] = ctl.server.endpoint
    ctl.must("put", "env/k", "v")
    r = subprocess.run(
        ctl.argv("raftkv", ["get", "env/k"]), env=env, capture_output=True, timeout=30, check=False
    )
    assert (r.returncode, r.stdout) == (0, b"env/k\nv\n")
