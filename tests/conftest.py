"""Fixtures shared across test packages."""

from __future__ import annotations

import os

import pytest

from raftkv import build_info
from tests.cluster import upgrade_install
from tests.cluster.upgrade_install import Installation

PURE_PYTHON = bool(os.environ.get(build_info.PURE_PYTHON_ENV))


def pytest_configure(config: pytest.Config) -> None:
    """The suite runs the build the checkout holds: the Raft core compiled when
    ``pip install -e .`` could compile it, pure Python under ``RAFTKV_PURE_PYTHON``.  A
    compiled module older than its source would test stale code: stop at once."""
    if PURE_PYTHON:
        if build_info.core_compiled():
            pytest.exit(f"{build_info.PURE_PYTHON_ENV} is set but the Raft core runs compiled", 2)
        return
    for compiled, source in build_info.stale_compiled_modules():
        pytest.exit(
            f"{compiled} is older than {source}: rebuild it (pip install -e .) or run the "
            f"tests with {build_info.PURE_PYTHON_ENV}=1",
            2,
        )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``pure_python`` patch modules that may run compiled (a compiled module's
    calls do not go through the attributes a patch replaces): skipped while the build runs
    compiled; ``scripts/test`` runs them in a second, pure-Python pass."""
    if PURE_PYTHON or not build_info.core_compiled():
        return
    skip = pytest.mark.skip(
        reason=f"patches a module that runs compiled here: run with "
        f"{build_info.PURE_PYTHON_ENV}=1 (scripts/test does)"
    )
    for item in items:
        if "pure_python" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def this_tree(tmp_path_factory: pytest.TempPathFactory) -> Installation:
    """This tree, copied: every member of a test runs the same code while the tree is edited."""
    return upgrade_install.snapshot(tmp_path_factory.mktemp("base"))


@pytest.fixture(scope="session")
def one_minor_up(tmp_path_factory: pytest.TempPathFactory, this_tree: Installation) -> Installation:
    """This tree as the next minor release, with a request kind gated on it."""
    return upgrade_install.build(
        tmp_path_factory.mktemp("plus1"), 1, with_new_kind=True, source=this_tree
    )


@pytest.fixture(scope="session")
def two_minors_up(
    tmp_path_factory: pytest.TempPathFactory, this_tree: Installation
) -> Installation:
    """This tree two minor releases up (one too many to join this tree's cluster)."""
    return upgrade_install.build(
        tmp_path_factory.mktemp("plus2"), 2, with_new_kind=False, source=this_tree
    )
