"""Fixtures for real-process cluster tests: a cluster whose logs are printed when a test fails."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.cluster.harness import Cluster, ClusterTLS, require_etcdctl


@pytest.fixture
def make_cluster(tmp_path: Path) -> Iterator[Callable[..., Cluster]]:
    require_etcdctl()
    made: list[Cluster] = []

    def make(
        size: int,
        extra_args: list[str] | None = None,
        start: bool = True,
        tls: ClusterTLS | None = None,
    ) -> Cluster:
        c = Cluster(tmp_path / f"c{len(made)}", size, extra_args, tls=tls)
        (tmp_path / f"c{len(made)}").mkdir()
        made.append(c)
        if start:
            c.start_all()
        return c

    yield make
    for c in made:
        c.close()
