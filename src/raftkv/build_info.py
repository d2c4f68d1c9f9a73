"""Which of raftkv's modules run compiled (mypyc, ``setup.py``), and the switch that runs them
as pure Python.

Contracts:
- ``COMPILED`` names what setup.py compiles when it can: a package (all its modules) or one
  module; ``compiled_sources`` lists their source files;
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
# What setup.py compiles, when it can: packages (every module in them) and single modules, the
# hot path of a put: the Raft core, the MVCC store, and the applier with its entry decoding.
# A compiled module may not be patched at run time (its compiled callers would not see the
# patch), its classes not subclassed in Python, and it may not define a subclass of a built-in
# exception other than Exception (mypyc cannot).
COMPILED = ("raftkv.raft", "raftkv.mvcc", "raftkv.server.requests", "raftkv.server.applier")


def compiled_sources(src_root: str | Path) -> list[Path]:
    """The source files of ``COMPILED`` under ``src_root`` (the directory holding ``raftkv``),
    sorted."""
    sources: list[Path] = []
    for name in COMPILED:
        path = Path(src_root, *name.split("."))
        sources += sorted(path.glob("*.py")) if path.is_dir() else [path.with_suffix(".py")]
    return sorted(sources)


def may_be_compiled(obj: object) -> bool:
    """Whether ``obj`` (a module, or a class or function of one) belongs to what setup.py
    compiles, whether or not this install could compile it."""
    name = obj.__name__ if isinstance(obj, ModuleType) else getattr(obj, "__module__", "")
    return any(name == c or name.startswith(c + ".") for c in COMPILED)


def compiled_modules() -> list[str]:
    """The loaded raftkv modules that run compiled, sorted."""
    return sorted(
        name
        for name, module in list(sys.modules.items())
        if name.startswith("raftkv.") and _is_extension(module)
    )


def stale_compiled_modules() -> list[tuple[str, str]]:
    """(compiled file, source) of every compiled module of ``COMPILED`` older than its source
    (an editable install whose sources were edited since it was built), whether or not the
    module is imported yet."""
    stale = []
    for source in compiled_sources(Path(__file__).parent.parent):
        for suffix in importlib.machinery.EXTENSION_SUFFIXES:
            compiled = source.with_suffix(suffix)
            if compiled.exists() and source.stat().st_mtime > compiled.stat().st_mtime:
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
