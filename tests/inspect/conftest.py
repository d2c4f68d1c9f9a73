"""Fixtures for the inspector: a real 3-member raftkv cluster serving /metrics, shared by the
tests of a module, and a real one-member etcd.  Processes are killed at teardown."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cluster.harness import Cluster, free_ports, require_etcdctl
from tests.compat.servers import Target, require_etcd, start_etcd


def metrics_cluster(root: Path, size: int = 3) -> tuple[Cluster, list[str]]:
    """A started cluster whose members serve /metrics; (cluster, their metrics URLs)."""
    root.mkdir(parents=True, exist_ok=True)
    cluster = Cluster(root, size)
    urls = [f"http://127.0.0.1:{p}" for p in free_ports(size)]
    for m, url in zip(cluster.members, urls, strict=True):
        m.extra_args += ["--listen-metrics-urls", url]
    try:
        cluster.start_all()
    except BaseException:
        cluster.close()
        raise
    return cluster, urls


@pytest.fixture(scope="module")
def cluster3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Cluster, list[str]]]:
    require_etcdctl()
    cluster, urls = metrics_cluster(tmp_path_factory.mktemp("inspect3"))
    try:
        for i in range(8):
            cluster.etcdctl("put", f"key{i}", f"value{i}")
        cluster.etcdctl("del", "key7")
        yield cluster, urls
    finally:
        cluster.close()


@pytest.fixture(scope="module")
def etcd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    require_etcd()
    require_etcdctl()
    target = start_etcd(tmp_path_factory.mktemp("inspect-etcd"))
    try:
        yield target
    finally:
        target.close()
