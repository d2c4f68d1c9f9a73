"""Fixtures for compatibility tests: a real etcd and raftkv clusters, started once per module.

Each fixture yields a ``tests.compat.servers.Target`` and kills its processes at teardown; the
server logs are attached to a failing test's report by ``pytest_runtest_makereport``.
"""

from __future__ import annotations

from collections.abc import Generator, Iterator

import pytest

from tests.cluster.harness import require_etcdctl
from tests.compat.pair import Pair
from tests.compat.servers import Target, require_etcd, start_etcd, start_raftkv

_STARTED: list[Target] = []


@pytest.fixture(scope="module")
def etcd_target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    require_etcd()
    require_etcdctl()
    t = start_etcd(tmp_path_factory.mktemp("etcd"))
    _STARTED.append(t)
    yield t
    _STARTED.remove(t)
    t.close()


@pytest.fixture(scope="module")
def raftkv1(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    require_etcdctl()
    t = start_raftkv(tmp_path_factory.mktemp("raftkv1"), 1)
    _STARTED.append(t)
    yield t
    _STARTED.remove(t)
    t.close()


@pytest.fixture(scope="module")
def raftkv3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    require_etcdctl()
    t = start_raftkv(tmp_path_factory.mktemp("raftkv3"), 3)
    _STARTED.append(t)
    yield t
    _STARTED.remove(t)
    t.close()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if call.when == "call" and call.excinfo is not None:
        for t in _STARTED:
            if t.kind != "etcd":
                report.sections.append((f"{t.kind} logs", t.log_tail()))
    return report


@pytest.fixture(scope="module")
def pair_module(etcd_target: Target, raftkv1: Target) -> Pair:
    return Pair(etcd_target, raftkv1)


@pytest.fixture
def pair(pair_module: Pair) -> Iterator[Pair]:
    """The module's etcd/raftkv pair, at the same revision on both sides.  A test must end with
    ``pair.verify()``; differences it left unverified (it raised first) are dropped here."""
    pair_module.failures.clear()
    pair_module.sync_revisions()
    yield pair_module
    pair_module.failures.clear()
