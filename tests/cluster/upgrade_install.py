"""Other installations of raftkv for rolling upgrade tests: this tree, one or two minors higher.

Owns: copying the repository's ``src/``, ``pyproject.toml`` and ``README.md`` (never ``.git`` nor
``tests``) to a directory of its own, patching the copy textually into a newer release, and an
interpreter to run it: a ``venv --system-site-packages --without-pip`` (dependencies come from
the system's site-packages, nothing is installed) whose members get the copy's ``src`` first on
their ``PYTHONPATH`` (``MemberProc.src``).

Contracts:
- ``snapshot`` copies this tree as it is now (run by this interpreter), and ``build`` derives
  the newer releases from that copy: every member of a test runs the same code, even while the
  working tree is being edited;
- every patch names the pattern it looks for and raises ``PatchError`` naming it when the
  pattern is not found exactly as often as expected: a renamed function fails the build loudly
  instead of silently testing the unpatched tree;
- before returning, each installation is proved to import the copy (its ``__version__`` and
  its path), not the main tree nor an installed raftkv, under the environment members get;
- one minor higher (``with_new_kind=True``) the copy has a new request kind ``PUT_V3`` (the
  next free number, ``KIND_SINCE`` its own minor), applied exactly as ``PUT`` (the replicated
  state stays identical), and ``KV.put`` proposes it for keys starting with ``b"v3/"``: such a
  put answers ``etcdserver: not capable`` on that member until the cluster version reaches
  the copy's minor.
"""

from __future__ import annotations

import importlib.machinery
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from raftkv import __version__ as BASE_VERSION
from raftkv.version import Version
from tests.cluster.harness import installation_env

REPO = Path(__file__).resolve().parents[2]
NEW_KIND = "PUT_V3"
NEW_KIND_PREFIX = b"v3/"


class PatchError(AssertionError):
    """A pattern the patch relies on is not in the copied source (it changed): names it."""


@dataclass(frozen=True)
class Installation:
    version: Version
    python: str  # the interpreter to run members with
    src: Path  # put first on PYTHONPATH (MemberProc.src)
    root: Path

    @property
    def minor(self) -> str:
        return self.version.short()


def base_version() -> Version:
    return Version.parse(BASE_VERSION)


def bumped(minors: int) -> Version:
    base = base_version()
    return Version(base.major, base.minor + minors, 0)


def _sub_once(path: Path, pattern: str, repl: str, *, flags: int = 0) -> None:
    """Replace the single match of ``pattern`` in ``path``; PatchError unless exactly one."""
    text = path.read_text()
    matches = len(re.findall(pattern, text, flags))
    if matches != 1:
        raise PatchError(
            f"{path}: pattern {pattern!r} found {matches} times, expected once "
            "(the source changed: update tests/cluster/upgrade_install.py)"
        )
    path.write_text(re.sub(pattern, repl, text, count=1, flags=flags))


def _patch_version(src: Path, version: Version) -> None:
    _sub_once(
        src / "raftkv" / "__init__.py",
        r'(?m)^__version__ = "[^"]*"$',
        f'__version__ = "{version}"',
    )


def _patch_new_kind(src: Path, version: Version) -> None:
    requests = src / "raftkv" / "server" / "requests.py"
    text = requests.read_text()
    cls = re.search(r"(?m)^class RequestKind\(IntEnum\):\n((?:    .*\n|\n)*)", text)
    if cls is None:
        raise PatchError(f"{requests}: pattern 'class RequestKind(IntEnum):' not found")
    members = list(re.finditer(r"(?m)^    [A-Z][A-Z0-9_]* = (\d+)\b.*\n", cls.group(1)))
    if not members:
        raise PatchError(f"{requests}: no 'NAME = <int>' member in class RequestKind")
    if re.search(rf"(?m)^    {NEW_KIND} = ", cls.group(1)):
        raise PatchError(f"{requests}: RequestKind already has {NEW_KIND}")
    value = max(int(m.group(1)) for m in members) + 1
    insert_at = cls.start(1) + members[-1].end()
    text = (
        text[:insert_at]
        + f"    {NEW_KIND} = {value}  # test-only (tests/cluster/upgrade_install.py)\n"
        + text[insert_at:]
    )
    if not re.search(r"(?m)^KIND_SINCE: dict\[RequestKind, Version\] = ", text):
        raise PatchError(f"{requests}: pattern 'KIND_SINCE: dict[RequestKind, Version] = '")
    text += (
        f"\n\nKIND_SINCE[RequestKind.{NEW_KIND}] = Version({version.major}, {version.minor})"
        "  # test-only\n"
    )
    requests.write_text(text)

    # The apply table: the new kind applies its body as a PutRequest, exactly as PUT.
    _sub_once(
        src / "raftkv" / "server" / "applier.py",
        r"(?m)^([ \t]*)(RequestKind\.PUT: self\._apply_put,)$",
        rf"\1\2\n\1RequestKind.{NEW_KIND}: self._apply_put,",
    )
    # KV.put: keys under v3/ are proposed as the new kind.
    _sub_once(
        src / "raftkv" / "server" / "kv.py",
        r"propose\(\s*RequestKind\.PUT\s*,",
        f"propose(RequestKind.{NEW_KIND} if req.key.startswith({NEW_KIND_PREFIX!r}) "
        "else RequestKind.PUT,",
    )


def _copy_tree(source: Path, dest: Path, *, compiled: bool) -> Path:
    """``source``'s ``src/`` (without bytecode or build metadata, and without its compiled
    modules unless ``compiled``), ``pyproject.toml`` and ``README.md`` into ``dest``; returns
    the copied ``src``."""
    dest.mkdir(parents=True, exist_ok=True)
    skipped = ["__pycache__", "*.pyc", "*.egg-info"]
    if not compiled:
        skipped += [f"*{suffix}" for suffix in importlib.machinery.EXTENSION_SUFFIXES]
    shutil.copytree(source / "src", dest / "src", ignore=shutil.ignore_patterns(*skipped))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(source / name, dest / name)
    return dest / "src"


def _make_venv(dest: Path) -> str:
    # No pip: nothing is installed into it; the dependencies are the system site-packages'.
    subprocess.run(
        [sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(dest)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    python = dest / "bin" / "python"
    if not python.exists():
        raise AssertionError(f"venv at {dest} has no bin/python")
    return str(python)


def _probe(python: str, src: Path) -> str:
    code = (
        "import raftkv\n"
        "from raftkv.server import applier, kv\n"
        "from raftkv.server.requests import KIND_SINCE, RequestKind\n"
        "kind = getattr(RequestKind, 'PUT_V3', None)\n"
        "# the apply table covers every kind (it raises otherwise)\n"
        "import tempfile\n"
        "from raftkv.mvcc.backend import BackendConfig\n"
        "with tempfile.TemporaryDirectory() as tmp:\n"
        "    a = applier.Applier.detached(tmp, BackendConfig(map_size=1 << 24), 1)\n"
        "    table = a._handler_table()\n"
        "    a.close()\n"
        "assert set(table) == set(RequestKind), sorted(set(RequestKind) - set(table))\n"
        "since = KIND_SINCE[kind].short() if kind is not None else '-'\n"
        "print(raftkv.__version__, raftkv.__file__, since)\n"
    )
    res = subprocess.run(
        [python, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        env=installation_env(src),
    )
    if res.returncode != 0:
        raise AssertionError(f"the patched copy at {src} does not import:\n{res.stderr}")
    return res.stdout.strip()


def _check_imports(python: str, src: Path, version: Version, new_kind_since: str) -> None:
    out = _probe(python, src)
    parts = out.split()
    expected = [str(version), str((src / "raftkv" / "__init__.py").resolve()), new_kind_since]
    if len(parts) != 3 or [parts[0], str(Path(parts[1]).resolve()), parts[2]] != expected:
        raise AssertionError(
            f"{python} with PYTHONPATH={src} imports the wrong raftkv: {out!r}, expected {expected}"
        )


def snapshot(dest: Path) -> Installation:
    """This tree as it is now, copied to ``dest`` and run by this interpreter: every member of
    a test runs the same code even while the working tree is being edited, and the newer
    releases are built from exactly this code."""
    src = _copy_tree(REPO, dest / "tree", compiled=True)
    version = base_version()
    _check_imports(sys.executable, src, version, "-")
    return Installation(version=version, python=sys.executable, src=src, root=dest)


def build(dest: Path, minors_up: int, *, with_new_kind: bool, source: Installation) -> Installation:
    """A copy of ``source`` as release ``major.(minor + minors_up).0`` in ``dest``, with its
    own interpreter; raises ``PatchError`` when a pattern is missing, AssertionError when the
    interpreter does not import the copy."""
    version = bumped(minors_up)
    # Pure Python: the patched modules may be compiled ones, whose extensions would shadow the
    # patched sources.
    src = _copy_tree(source.src.parent, dest / "tree", compiled=False)
    _patch_version(src, version)
    if with_new_kind:
        _patch_new_kind(src, version)
    python = _make_venv(dest / "venv")
    _check_imports(python, src, version, version.short() if with_new_kind else "-")
    return Installation(version=version, python=python, src=src, root=dest)
