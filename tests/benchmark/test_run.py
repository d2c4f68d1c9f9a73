"""Real runs: ``raftkv benchmark`` against one real raftkv member and against real etcd."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from raftkv.benchmark import runner
from raftkv.benchmark.runner import BenchmarkError, LoadConfig
from raftkv.benchmark.workload import Workload, make_key
from raftkv.ctl import cmd_benchmark
from raftkv.proto import rpc_pb2, rpc_pb2_grpc
from tests.cluster.harness import REPO, Cluster, free_ports, require_etcdctl


@pytest.fixture(scope="module")
def member(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    require_etcdctl()
    c = Cluster(tmp_path_factory.mktemp("bench"), 1)
    try:
        c.start_all()
        yield c
    finally:
        c.close()


def all_keys(member: Cluster) -> tuple[dict[bytes, bytes], int]:
    """Every key and value (binary keys do not survive etcdctl's argv) and the revision."""
    with grpc.insecure_channel(member.endpoints) as ch:
        resp = rpc_pb2_grpc.KVStub(ch).Range(
            rpc_pb2.RangeRequest(key=b"\x00", range_end=b"\x00"), timeout=10
        )
    return {kv.key: kv.value for kv in resp.kvs}, resp.header.revision


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="raftkv")
    cmd_benchmark.register(parser.add_subparsers(dest="command"))
    return parser.parse_args(argv)


def test_flags_before_and_after_the_workload_name() -> None:
    a = parse(["benchmark", "--endpoints=x:1,y:2", "--clients=8", "put", "--conns", "4"])
    cfg = cmd_benchmark.config_from_args(a)
    assert cfg.endpoints == ("x:1", "y:2")
    assert (cfg.clients, cfg.conns, cfg.total, cfg.rate) == (8, 4, 10000, 0.0)
    assert cfg.workload == Workload("put", key_size=8, val_size=8, key_space_size=1)
    b = parse(["benchmark", "range", "k", "z", "--consistency=s", "--total=5", "-w", "json"])
    cfg = cmd_benchmark.config_from_args(b)
    assert cfg.workload == Workload("range", range_key=b"k", range_end=b"z", serializable=True)
    assert (cfg.total, b.write_out) == (5, "json")
    c = parse(["benchmark", "txn-put", "--txn-ops=4", "--key-space-size=9", "--sequential-keys"])
    cfg = cmd_benchmark.config_from_args(c)
    assert (cfg.workload.txn_ops, cfg.workload.key_space_size, cfg.workload.sequential) == (
        4,
        9,
        True,
    )
    with pytest.raises(SystemExit):
        parse(["benchmark", "range", "k", "--consistency=x"])
    with pytest.raises(SystemExit):
        parse(["benchmark", "put", "--clients=0"])


def test_put_txn_and_range_against_raftkv(member: Cluster) -> None:
    eps = (member.endpoints,)
    put = Workload("put", key_size=6, val_size=10, key_space_size=40, sequential=True)
    stats = runner.run(LoadConfig(eps, put, total=200, clients=8, conns=2, procs=2))
    assert (stats.count, stats.errors) == (200, {})
    assert 0 < stats.fastest <= stats.average <= stats.slowest
    assert stats.client_cpu > 0
    kvs, rev_before = all_keys(member)
    written = {k: v for k, v in kvs.items() if len(k) == 6}
    assert set(written) == {make_key(i, 6) for i in range(40)}
    assert all(len(v) == 10 for v in written.values())
    txn = Workload("txn-put", key_space_size=10, txn_ops=2)
    stats = runner.run(LoadConfig(eps, txn, total=50, clients=5, conns=1))
    assert (stats.count, stats.errors) == (50, {})
    _, rev_after = all_keys(member)
    assert rev_after - rev_before == 50  # one revision per txn
    for serializable in (False, True):
        rng = Workload("range", range_key=b"\x00", range_end=b"\xff", serializable=serializable)
        stats = runner.run(LoadConfig(eps, rng, total=100, clients=4, conns=2, procs=2))
        assert (stats.count, stats.errors) == (100, {})


def test_cli_json_output(member: Cluster) -> None:
    res = subprocess.run(
        [sys.executable, "-m", "raftkv.ctl.cmd_benchmark", "benchmark", "--endpoints",
         member.endpoints, "--total=60", "--clients=3", "put", "--val-size=4", "-w", "json"],
        capture_output=True, text=True, timeout=60,
        env={**os.environ, "PYTHONPATH": str(REPO / "src")},
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    assert (doc["op"], doc["count"], doc["clients"], doc["procs"]) == ("put", 60, 3, 1)
    assert doc["percentiles"]["p10"] <= doc["percentiles"]["p99.9"] == doc["slowest"]


def test_unreachable_endpoint_fails_cleanly() -> None:
    (port,) = free_ports(1)
    cfg = LoadConfig((f"127.0.0.1:{port}",), Workload("put"), total=5, connect_timeout=0.5)
    with pytest.raises(BenchmarkError, match="could not connect"):
        runner.run(cfg)


def test_errors_are_counted_not_fatal(member: Cluster) -> None:
    # a txn over the server's --max-txn-ops (128): every request is refused with the same error
    w = Workload("txn-put", txn_ops=129, key_space_size=129)
    stats = runner.run(LoadConfig((member.endpoints,), w, total=20, clients=2))
    assert (stats.count, stats.error_count) == (0, 20)
    assert stats.errors == {
        "rpc error: code = InvalidArgument desc = etcdserver: too many operations in txn request": 20
    }


def test_against_real_etcd(tmp_path: Path) -> None:
    cport, pport = free_ports(2)
    proc = subprocess.Popen(
        ["etcd", "--name", "e1", "--data-dir", str(tmp_path / "e1"),
         "--listen-client-urls", f"http://127.0.0.1:{cport}",
         "--advertise-client-urls", f"http://127.0.0.1:{cport}",
         "--listen-peer-urls", f"http://127.0.0.1:{pport}",
         "--initial-advertise-peer-urls", f"http://127.0.0.1:{pport}",
         "--initial-cluster", f"e1=http://127.0.0.1:{pport}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        eps = (f"127.0.0.1:{cport}",)
        deadline = time.monotonic() + 20
        while True:
            try:
                stats = runner.run(LoadConfig(eps, Workload("put"), total=100, clients=4, conns=2))
                break
            except BenchmarkError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.3)
        assert (stats.count, stats.errors) == (100, {})
    finally:
        proc.kill()
        proc.wait(10)
