"""The Raft core must stay pure: no I/O, no clocks, no ambient randomness.

Walks every module of ``raftkv.raft`` with ``ast`` and fails on a forbidden
import, or on ``random`` used other than through ``random.Random(seed)``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import raftkv.raft

FORBIDDEN = {
    "asyncio",
    "socket",
    "time",
    "threading",
    "os",
    "subprocess",
    "select",
    "selectors",
    "multiprocessing",
    "datetime",
    "uuid",
    "secrets",
}
PKG = Path(raftkv.raft.__file__).parent
MODULES = sorted(PKG.glob("*.py"))


def violations(source: str) -> list[str]:
    """Forbidden constructs in ``source`` (empty when pure)."""
    tree = ast.parse(source)
    found: list[str] = []
    random_aliases: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                root = a.name.split(".")[0]
                if root in FORBIDDEN:
                    found.append(f"import {a.name}")
                if root == "random":
                    random_aliases.add(a.asname or "random")
        elif isinstance(node, ast.ImportFrom):
            root = (node.module or "").split(".")[0]
            if root in FORBIDDEN:
                found.append(f"from {node.module} import ...")
            if root == "random":
                for a in node.names:
                    if a.name != "Random":
                        found.append(f"from random import {a.name}")
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id in random_aliases
            and node.attr != "Random"
        ):
            found.append(f"random.{node.attr}")
    return found


def test_package_has_modules() -> None:
    names = {p.name for p in MODULES}
    assert {"core.py", "rawnode.py", "log.py", "storage.py"} <= names


@pytest.mark.parametrize("path", MODULES, ids=[p.name for p in MODULES])
def test_module_is_pure(path: Path) -> None:
    assert violations(path.read_text()) == []


@pytest.mark.parametrize(
    "src",
    [
        "import time",
        "import os.path",
        "from asyncio import sleep",
        "import random\nx = random.random()",
        "import random as r\nr.shuffle([])",
        "from random import choice",
        "import threading",
    ],
)
def test_checker_catches(src: str) -> None:
    assert violations(src)


def test_checker_allows_seeded_random() -> None:
    assert violations("import random\nrng = random.Random(7)\nrng.random()") == []
