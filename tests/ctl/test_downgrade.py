"""``raftkv downgrade validate|enable|cancel`` against a real raftkv member (etcdctl 3.6's
command: Debian's etcdctl 3.4 has none, so the texts are etcd 3.6's printer_simple.go and
downgrade_command.go), and against a real etcd 3.4, which has no Downgrade call.

The member runs this tree as the next minor release (``tests.cluster.upgrade_install``: 0.3 when
this tree is 0.2), so this tree's minor is the one valid target (0.2 is also the oldest release
that knows downgrades: 0.1 is refused). Every wait is bounded.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from raftkv.proto import rpc_pb2, rpc_pb2_grpc
from raftkv.version import Version
from tests.cluster import upgrade_install
from tests.cluster.harness import Cluster
from tests.cluster.upgrade_install import Installation
from tests.ctl.harness import Ctl, Result, Server

FAST = ["--heartbeat-interval", "50", "--election-timeout", "500"]
PREVIOUS: Version | None = upgrade_install.base_version().minor_version  # this tree: 0.2
CURRENT = upgrade_install.bumped(1).minor_version  # the member's release: 0.3
NEWER = str(upgrade_install.bumped(1))


def _cluster_of(root: Path, inst: Installation) -> Cluster:
    cluster = Cluster(root, 1, FAST)
    cluster.members[0].python, cluster.members[0].src = inst.python, inst.src
    return cluster


@pytest.fixture(scope="module")
def member(
    tmp_path_factory: pytest.TempPathFactory, one_minor_up: Installation
) -> Iterator[tuple[Cluster, Ctl]]:
    cluster = _cluster_of(tmp_path_factory.mktemp("downgrade"), one_minor_up)
    try:
        cluster.start_all()
        m = cluster.members[0]
        ctl = Ctl(Server("raftkv", m.endpoint, [], m.log_path))
        _wait_cluster_version(ctl, CURRENT)
        yield cluster, ctl
    finally:
        cluster.close()


def _cluster_version(ctl: Ctl) -> str:
    r = ctl.raftkv("endpoint", "status", "-w", "json")
    assert r.rc == 0, r
    return str(json.loads(r.stdout)[0]["ClusterVersion"])


def _wait_cluster_version(ctl: Ctl, want: Version, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    seen = _cluster_version(ctl)
    while seen != want.short():
        assert time.monotonic() < deadline, f"cluster version {seen!r}, expected {want.short()}"
        time.sleep(0.2)
        seen = _cluster_version(ctl)


def _success(r: Result, action: str, *versions: Version) -> None:
    """etcdctl 3.6's ``Downgrade <action> success, cluster version <v>`` with ``v`` (as the
    server wrote it) one of ``versions``."""
    assert (r.rc, r.stderr) == (0, b""), r
    m = re.fullmatch(rb"Downgrade (\w+) success, cluster version (\S+)\n", r.stdout)
    assert m is not None and m.group(1).decode() == action, r.stdout
    assert Version.parse(m.group(2).decode()).minor_version in versions, r.stdout


def _error(r: Result, message: str, rc: int = 1) -> None:
    assert (r.rc, r.stdout, r.stderr) == (rc, b"", f"Error: {message}\n".encode()), r


def test_arguments(member: tuple[Cluster, Ctl]) -> None:
    _cluster, ctl = member
    for action in ("validate", "enable"):
        _error(ctl.raftkv("downgrade", action), "TARGET_VERSION not provided", 128)
        _error(ctl.raftkv("downgrade", action, "0.1", "0.2"), "too many arguments", 128)
        _error(ctl.raftkv("downgrade", action, ""), "target version not provided", 128)


def test_validate(member: tuple[Cluster, Ctl]) -> None:
    _cluster, ctl = member
    assert PREVIOUS is not None
    r = ctl.raftkv("downgrade", "validate", PREVIOUS.short())
    _success(r, "validate", CURRENT)
    for wrong in ("0.0", CURRENT.short(), CURRENT.next_minor().short()):
        r = ctl.raftkv("downgrade", "validate", wrong)
        _error(r, "etcdserver: invalid downgrade target version")
    _error(
        ctl.raftkv("downgrade", "validate", "x.y"),
        "etcdserver: wrong downgrade target version format",
    )
    _error(ctl.raftkv("downgrade", "cancel"), "etcdserver: no inflight downgrade job")


def test_output_formats(member: tuple[Cluster, Ctl]) -> None:
    """json and protobuf print the response (etcdctl 3.6's printerRPC); table and fields are
    not supported (exit 4)."""
    _cluster, ctl = member
    assert PREVIOUS is not None
    r = ctl.raftkv("downgrade", "validate", PREVIOUS.short(), "-w", "json")
    assert (r.rc, r.stderr) == (0, b"")
    doc = json.loads(r.stdout)
    assert Version.parse(doc["version"]).minor_version == CURRENT
    assert r.stdout == json.dumps(doc, separators=(",", ":")).encode() + b"\n"
    r = ctl.raftkv("downgrade", "validate", PREVIOUS.short(), "-w", "protobuf")
    assert r.rc == 0
    resp = rpc_pb2.DowngradeResponse.FromString(r.stdout)
    assert Version.parse(resp.version).minor_version == CURRENT
    for fmt in ("table", "fields"):
        r = ctl.raftkv("downgrade", "validate", PREVIOUS.short(), "-w", fmt)
        _error(r, f"{fmt} not supported as output format", 4)


@pytest.fixture
def fresh(tmp_path: Path, one_minor_up: Installation) -> Iterator[Ctl]:
    """A member of its own, for a test that leaves a downgrade enabled."""
    cluster = _cluster_of(tmp_path, one_minor_up)
    try:
        cluster.start_all()
        m = cluster.members[0]
        ctl = Ctl(Server("raftkv", m.endpoint, [], m.log_path))
        _wait_cluster_version(ctl, CURRENT)
        yield ctl
    finally:
        cluster.close()


def _enable(ctl: Ctl) -> None:
    """Enable the downgrade and wait until the leader holds the cluster version at it."""
    assert PREVIOUS is not None
    target = PREVIOUS.short()
    _success(ctl.raftkv("downgrade", "enable", target), "enable", CURRENT, PREVIOUS)
    _wait_cluster_version(ctl, PREVIOUS)


def test_enable(fresh: Ctl) -> None:
    ctl = fresh
    assert PREVIOUS is not None
    _enable(ctl)
    r = ctl.raftkv("endpoint", "status", "-w", "table")
    line = rf"\| +{re.escape(NEWER)} \| +{re.escape(PREVIOUS.short())} \| "
    assert re.search(line, r.text()), r.text()
    # As etcd: the target is checked against the cluster version (now the target) first,
    # then whether a downgrade is already enabled.
    below = PREVIOUS.previous_minor() or Version(PREVIOUS.major - 1, 0)
    busy = "etcdserver: cluster has a downgrade job in progress"
    _error(ctl.raftkv("downgrade", "validate", below.short()), busy)
    _error(ctl.raftkv("downgrade", "enable", below.short()), busy)
    invalid = "etcdserver: invalid downgrade target version"
    _error(ctl.raftkv("downgrade", "validate", PREVIOUS.short()), invalid)


def test_enable_then_cancel(fresh: Ctl) -> None:
    ctl = fresh
    assert PREVIOUS is not None
    _enable(ctl)
    _success(ctl.raftkv("downgrade", "cancel"), "cancel", PREVIOUS, CURRENT)
    _error(ctl.raftkv("downgrade", "cancel"), "etcdserver: no inflight downgrade job")
    _wait_cluster_version(ctl, CURRENT)  # back up once nothing holds it
    _success(ctl.raftkv("downgrade", "validate", PREVIOUS.short()), "validate", CURRENT)


def test_server_answers_as_etcd_does(member: tuple[Cluster, Ctl]) -> None:
    cluster, _ctl = member
    assert PREVIOUS is not None
    with grpc.insecure_channel(cluster.members[0].endpoint) as channel:
        stub = rpc_pb2_grpc.MaintenanceStub(channel)
        req = rpc_pb2.DowngradeRequest(
            action=rpc_pb2.DowngradeRequest.VALIDATE, version=PREVIOUS.short()
        )
        resp = stub.Downgrade(req, timeout=10)
    assert resp.version == CURRENT.short()
    assert resp.HasField("header") and resp.header.cluster_id != 0


def test_etcd_34_has_no_downgrade(tmp_path: Path) -> None:
    """A plain etcd 3.4 answers Unimplemented; the error is printed as etcdctl prints one."""
    from tests.ctl.harness import start_etcd

    try:
        server = start_etcd(tmp_path / "etcd")
    except RuntimeError as exc:
        pytest.fail(str(exc))
    try:
        r = Ctl(server).raftkv("downgrade", "validate", "3.3")
    finally:
        server.close()
    assert (r.rc, r.stdout) == (1, b"")
    assert r.stderr.startswith(b"Error: rpc error: code = Unimplemented desc = "), r
