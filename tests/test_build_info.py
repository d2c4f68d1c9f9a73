"""The compiled build (setup.py, mypyc) and the switch back to pure Python."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from raftkv import build_info
from raftkv.mvcc.write_batch import WriteBatch
from raftkv.raft import leader
from raftkv.raft.log import RaftLog


def _in_fresh_interpreter(code: str, **env: str) -> str:
    out = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip()


def test_pure_python_switch_loads_every_module_from_source() -> None:
    code = (
        "import raftkv.raft.core, raftkv.raft.codec, raftkv.build_info as b;"
        "print(b.core_compiled(), b.compiled_modules(), raftkv.raft.core.__file__)"
    )
    out = _in_fresh_interpreter(code, **{build_info.PURE_PYTHON_ENV: "1"})
    assert out.startswith("False [] ") and out.endswith("raftkv/raft/core.py")


@pytest.mark.skipif(not build_info.core_compiled(), reason="this install could not compile")
def test_the_installed_build_runs_the_raft_core_compiled() -> None:
    out = _in_fresh_interpreter(
        "import raftkv.raft.core, raftkv.build_info as b; print(b.compiled_modules())",
        **{build_info.PURE_PYTHON_ENV: ""},
    )
    assert "'raftkv.raft.core'" in out and "'raftkv.raft.codec'" in out


def test_what_may_run_compiled() -> None:
    assert build_info.may_be_compiled(RaftLog) and build_info.may_be_compiled(leader)
    assert not build_info.may_be_compiled(WriteBatch)
    assert not build_info.may_be_compiled(build_info)
