"""pytest options of the Raft tests: ``--rewrite`` regenerates testdata outputs."""

from __future__ import annotations

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--rewrite",
        action="store_true",
        default=False,
        help="regenerate the expected outputs of tests/raft/testdata/*.txt in place",
    )
