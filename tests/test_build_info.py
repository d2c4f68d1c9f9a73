"""The compiled build (setup.py, mypyc) and the switch back to pure Python."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

from raftkv import build_info
from raftkv.mvcc.write_batch import WriteBatch
from raftkv.raft import leader
from raftkv.raft.log import RaftLog
from raftkv.server import raft_node
from raftkv.server.applier import Applier
from raftkv.server.member import Member


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
        "import raftkv.raft.core, raftkv.server.applier, raftkv.build_info as b;"
        "print(b.compiled_modules())",
        **{build_info.PURE_PYTHON_ENV: ""},
    )
    for name in ("raftkv.raft.core", "raftkv.mvcc.write_batch", "raftkv.server.applier"):
        assert repr(name) in out


def test_what_may_run_compiled() -> None:
    assert build_info.may_be_compiled(RaftLog) and build_info.may_be_compiled(leader)
    assert build_info.may_be_compiled(WriteBatch) and build_info.may_be_compiled(Applier)
    assert not build_info.may_be_compiled(Member) and not build_info.may_be_compiled(raft_node)
    assert not build_info.may_be_compiled(build_info)


def test_compiled_sources_name_packages_and_modules() -> None:
    src = Path(build_info.__file__).parent.parent
    sources = {str(p.relative_to(src)) for p in build_info.compiled_sources(src)}
    assert {"raftkv/raft/core.py", "raftkv/mvcc/write_batch.py"} <= sources
    assert "raftkv/server/applier.py" in sources and "raftkv/server/member.py" not in sources


def test_no_compiled_function_binds_one_name_to_two_exception_types() -> None:
    """mypy lets ``except A as exc`` and ``except B as exc`` share a name; mypyc gives the name
    one type, so the second handler fails at run time with a TypeError instead of handling."""
    src = Path(build_info.__file__).parent.parent
    clashes = []
    for path in build_info.compiled_sources(src):
        for fn in ast.walk(ast.parse(path.read_text())):
            if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            types: dict[str, set[str]] = {}
            for handler in ast.walk(fn):
                if isinstance(handler, ast.ExceptHandler) and handler.name:
                    caught = ast.unparse(handler.type) if handler.type else "BaseException"
                    types.setdefault(handler.name, set()).add(caught)
            clashes += [
                f"{path}: {fn.name}: {n} {sorted(t)}" for n, t in types.items() if len(t) > 1
            ]
    assert not clashes
