"""Runs every data-driven interaction script in tests/raft/testdata/.

Set RAFT_REWRITE=1 (or pass --rewrite) to regenerate the expected outputs in
place; review the diff before keeping it.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.raft.datadriven import run_test
from tests.raft.interaction_env import InteractionEnv

TESTDATA = Path(__file__).parent / "testdata"
FILES = sorted(TESTDATA.glob("*.txt"))


def test_testdata_present() -> None:
    assert len(FILES) >= 10


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_interaction(path: Path, request: pytest.FixtureRequest) -> None:
    rewrite = os.environ.get("RAFT_REWRITE") == "1" or bool(
        request.config.getoption("--rewrite", default=False)
    )
    env = InteractionEnv()
    run_test(path, env.handle, rewrite)
