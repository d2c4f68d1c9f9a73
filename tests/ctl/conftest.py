"""Fixtures for the etcdctl-compatibility tests: one server per test module, killed at the end.

The server kind comes from ``RAFTKV_CTL_TEST_SERVERS`` (comma separated: ``etcd``, ``raftkv``;
default ``etcd``); every test runs once per kind.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.ctl.harness import STARTERS, Ctl, Server, server_kinds


@pytest.fixture(scope="module", params=server_kinds())
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    kind = str(request.param)
    root: Path = tmp_path_factory.mktemp(f"ctl-{kind}")
    try:
        srv = STARTERS[kind](root, ())
    except RuntimeError as exc:
        pytest.fail(str(exc))
    try:
        yield srv
    finally:
        srv.close()


@pytest.fixture(scope="module")
def ctl(server: Server) -> Ctl:
    return Ctl(server)
