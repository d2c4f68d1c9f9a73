"""Which of raftkv's modules run compiled (mypyc, ``setup.py``'s ``COMPILED``), and the switch
that runs them as pure Python.

Contracts:
- ``compiled_modules()`` names the imported raftkv modules loaded from a compiled extension;
  ``stale_compiled_modules()`` the compiled files older than their sources;
- with ``RAFTKV_PURE_PYTHON`` set to a non-empty value when ``raftkv`` is first imported,
  every raftkv module is loaded from its ``.py`` source even where a compiled one sits beside
  it (``install_source_finder``): for tests that patch a compiled module at run time, and
  to compare the two builds.  Nothing else changes.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

PURE_PYTHON_ENV = "RAFTKV_PURE_PYTHON"
# The packages setup.py compiles (every module in them), when it can.  A module of theirs may
# run compiled: patching its classes or functions at run time changes nothing its own
# compiled callers do.
COMPILED_PACKAGES = ("raftkv.raft",)


def may_be_compiled(obj: object) -> bool:
    """Whether ``obj`` (a module, or a class or function of one) belongs to a package setup.py
    compiles, whether or not this install could compile it."""
    name = obj.__name__ if isinstance(obj, ModuleType) else getattr(obj, "__module__", "")
    return any(name == p or name.startswith(p + ".") for p in COMPILED_PACKAGES)


def compiled_modules() -> list[str]:
    """The loaded raftkv modules that run compiled, sorted."""
    return sorted(
        name
        for name, module in list(sys.modules.items())
        if name.startswith("raftkv.") and _is_extension(module)
    )


def stale_compiled_modules() -> list[tuple[str, str]]:
    """(compiled file, source) of every compiled module of ``COMPILED_PACKAGES`` older than its
    source (an editable install whose sources were edited since it was built), whether or not
    the module is imported yet."""
    import importlib

    stale = []
    for package in COMPILED_PACKAGES:
        for directory in importlib.import_module(package).__path__:
            for suffix in importlib.machinery.EXTENSION_SUFFIXES:
                for compiled in sorted(Path(directory).glob(f"*{suffix}")):
                    source = compiled.with_name(compiled.name[: -len(suffix)] + ".py")
                    if source.exists() and source.stat().st_mtime > compiled.stat().st_mtime:
                        stale.append((str(compiled), str(source)))
    return stale


def core_compiled() -> bool:
    """Whether the Raft core runs compiled (imports it)."""
    import raftkv.raft.core as core

    return _is_extension(core)


def _is_extension(module: ModuleType) -> bool:
    return isinstance(getattr(module, "__loader__", None), importlib.machinery.ExtensionFileLoader)


class _SourceOnlyFinder(importlib.abc.MetaPathFinder):
    """Finds raftkv's submodules among ``.py`` sources only (packages included)."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if not fullname.startswith("raftkv.") or path is None:
            return None
        loader = (importlib.machinery.SourceFileLoader, importlib.machinery.SOURCE_SUFFIXES)
        for entry in path:
            spec = importlib.machinery.FileFinder(entry, loader).find_spec(fullname, target)
            if spec is not None:
                return spec
        return None


def install_source_finder() -> None:
    """Load raftkv's submodules from source from now on (idempotent)."""
    if not any(isinstance(f, _SourceOnlyFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _SourceOnlyFinder())
