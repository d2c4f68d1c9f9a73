"""Fixtures shared across test packages."""

from __future__ import annotations

import pytest

from tests.cluster import upgrade_install
from tests.cluster.upgrade_install import Installation


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
