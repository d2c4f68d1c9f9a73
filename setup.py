"""Build of raftkv: pure Python, with the hot modules compiled by mypyc where it can.

Everything else (metadata, dependencies, packages) is in ``pyproject.toml``; this file only
adds the compiled modules.

Contracts:
- the modules compiled with mypyc are ``raftkv.build_info.COMPILED``'s (``compiled_sources``:
  they are ``mypy --strict`` clean, and nothing patches them at run time outside the tests
  that say so); their ``.py`` sources are installed too; the build's type check tolerates
  dependencies it cannot see (``_TYPE_CHECK_FLAGS``), so a fresh ``pip install .`` compiles;
- the build falls back to pure Python, with one warning, when mypyc cannot be imported, when
  ``RAFTKV_PURE_PYTHON`` is set to a non-empty value, or when compiling fails (no C
  compiler): all or nothing, so a half-compiled group never ships;
- ``raftkv.build_info.compiled_modules()`` tells at run time which modules were compiled.
"""

from __future__ import annotations

import os
import runpy
import sys
from typing import Any

from setuptools import setup
from setuptools.command.build_ext import build_ext

# raftkv.build_info, read from its file: raftkv itself is not importable here.
_BUILD_INFO = runpy.run_path(os.path.join("src", "raftkv", "build_info.py"))


# mypyc type-checks the compiled modules and everything they import.  The build environment
# holds only the build requirements, not raftkv's dependencies nor their type stubs: those are
# then Any, which strict mode's checks would reject although nothing is wrong.  The strict
# check of the whole tree, with every stub installed, is scripts/test's ``mypy``.
_TYPE_CHECK_FLAGS = (
    "--ignore-missing-imports",
    "--allow-subclassing-any",
    "--no-warn-return-any",
    "--no-warn-unused-ignores",
    "--follow-imports=silent",
    "--disable-error-code=overload-cannot-match",
)


def _warn(message: str) -> None:
    print(f"raftkv build: {message}; building pure Python", file=sys.stderr)


class OptionalBuildExt(build_ext):
    """build_ext that leaves raftkv pure Python when any compiled module fails to build."""

    def run(self) -> None:
        try:
            super().run()
        except Exception as exc:  # a missing compiler, a failing one: no compiled module
            _warn(f"compiling with mypyc failed ({exc})")
            for path in self.get_outputs():
                if os.path.exists(path):
                    os.remove(path)
            self.extensions: list[Any] = []


def _compiled_extensions() -> list[Any]:
    pure_env = _BUILD_INFO["PURE_PYTHON_ENV"]
    if os.environ.get(pure_env):
        _warn(f"{pure_env} is set")
        return []
    try:
        from mypyc.build import mypycify
    except ImportError:
        _warn("mypyc is not installed")
        return []
    sources = [os.path.relpath(path) for path in _BUILD_INFO["compiled_sources"]("src")]
    try:
        return list(
            mypycify(
                [*_TYPE_CHECK_FLAGS, *sources], opt_level="3", debug_level="1", group_name="raftkv"
            )
        )
    except BaseException as exc:  # mypyc's type check exits with SystemExit on errors
        _warn(f"mypyc could not translate {', '.join(_BUILD_INFO['COMPILED'])} ({exc!r})")
        return []


setup(ext_modules=_compiled_extensions(), cmdclass={"build_ext": OptionalBuildExt})
