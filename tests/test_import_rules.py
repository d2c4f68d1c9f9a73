"""The package layering of ``src/raftkv``: which package may import which.

Every module under ``src/raftkv`` is parsed with ``ast`` (nothing is imported) and each of its
``import`` and ``from ... import`` statements, wherever it stands (module level, inside a
function, under ``if TYPE_CHECKING:``), is checked against ``RULES``.  A failure names the file,
the line, the forbidden import and the reason of the rule it breaks.

Layers, bottom up: the pure Raft core; the store (errors, failpoints, proto, lease, wal, snap,
mvcc, peer); the consistency guard's building blocks; the member (server) and the v3 API on it;
the process assembled from both (app); the tools on top (client, check, inspect, backup,
benchmark) and the command line (ctl).
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src"


@dataclass(frozen=True)
class Rule:
    """Modules of ``importers`` must not import ``forbidden`` unless ``allowed`` names it;
    modules of ``exempt`` are not bound.  Each field is space-separated names relative to
    ``raftkv`` (``mvcc`` is ``raftkv.mvcc`` and everything under it); ``*`` is all of raftkv."""

    importers: str
    forbidden: str
    reason: str
    allowed: str = ""
    exempt: str = ""


STORE = "errors failpoints version tlsutil proto lease wal snap mvcc peer"
# The member streams etcd-format snapshots (Maintenance.Snapshot, repair's transfer), so it may
# use backup's file-format modules; the rest of backup (restore, the agent) sits above server.
SNAPSHOT_FORMATS = "backup.snapshot_file backup.etcd_schema backup.bbolt"

# fmt: off
RULES: tuple[Rule, ...] = (
    # Rule(importers, never imported, reason[, allowed=exceptions][, exempt=importers spared])
    Rule("raft", "*", "the Raft core is pure: nothing of raftkv but itself", allowed="raft"),
    Rule("fileutil", "*", "file and directory modes are a leaf every layer may use: nothing of raftkv"),
    Rule("clock", "*", "the clock seam is a leaf every layer may use: nothing of raftkv"),
    Rule(STORE, "server api app ctl client check guard inspect backup benchmark", "the store knows nothing of what is built on it"),
    Rule("guard", "server api app ctl client check inspect benchmark", "the guard's building blocks are pure; the server wires them in"),
    Rule("auth", "server api app ctl client check inspect backup benchmark", "auth's store and tokens are building blocks; the server applies them, the API asks through its port"),
    Rule("server", "api app ctl client check inspect benchmark backup", "the member knows nothing of its API, the process or the tools", allowed=SNAPSHOT_FORMATS),
    Rule("api", "app ctl client check inspect benchmark", "the gRPC services know nothing of the process or the tools"),
    Rule("api", "server", "the services reach the member through the Protocols of api.ports", allowed="server.convert server.repair"),
    Rule("client", "ctl server api app", "the client speaks the wire protocol; it runs without a member"),
    Rule("inspect backup benchmark check", "ctl app", "the tools are libraries the command line drives, not the reverse"),
    Rule("*", "app", "only the command line starts the assembled process", exempt="ctl app"),
)
# fmt: on


def _covers(prefix: str, name: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def _any_covers(names: str, module: str) -> bool:
    """Whether ``module`` (a full dotted name) is one of ``names`` (a rule field) or under it."""
    full = ("raftkv" if n == "*" else f"raftkv.{n}" for n in names.split())
    return any(_covers(prefix, module) for prefix in full)


def imports(tree: ast.AST, module: str, is_package: bool) -> list[tuple[int, str, dict[str, str]]]:
    """(line, statement up to its names, {name as written: dotted name imported}) for every
    import statement of ``tree``, at any depth.

    ``from m import a`` imports ``m.a``: ``a`` may be a submodule, and a name defined in ``m``
    is bound by ``m``'s rules all the same.  Relative imports are resolved against ``module``.
    """
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.append((node.lineno, "import ", {a.name: a.name for a in node.names}))
        elif isinstance(node, ast.ImportFrom):
            source = node.module or ""
            if node.level:
                parts = module.split(".") if is_package else module.split(".")[:-1]
                base = ".".join(parts[: len(parts) - (node.level - 1)])
                source = f"{base}.{source}" if source else base
            written = "." * node.level + (node.module or "")
            names = {a.name: f"{source}.{a.name}" for a in node.names}
            found.append((node.lineno, f"from {written} import ", names))
    return sorted(found, key=lambda item: item[0])


def broken_rule(module: str, name: str) -> Rule | None:
    """The first rule that forbids ``module`` to import ``name``."""
    for rule in RULES:
        if not _any_covers(rule.importers, module) or _any_covers(rule.exempt, module):
            continue
        if _any_covers(rule.forbidden, name) and not _any_covers(rule.allowed, name):
            return rule
    return None


def violations(source: str, module: str, path: str, is_package: bool = False) -> list[str]:
    """``path:line: statement  (reason)`` for every import in ``source`` (the text of
    ``module``) that a rule forbids, naming only the forbidden names of the statement."""
    problems = []
    for line, statement, names in imports(ast.parse(source, path), module, is_package):
        by_rule: dict[Rule, list[str]] = {}
        for written, name in names.items():
            rule = broken_rule(module, name)
            if rule is not None:
                by_rule.setdefault(rule, []).append(written)
        for rule, written_names in by_rule.items():
            problems.append(
                f"{path}:{line}: {statement}{', '.join(written_names)}  ({rule.reason})"
            )
    return problems


def modules() -> list[tuple[Path, str, bool]]:
    """(file, dotted module name, is a package's __init__) for every module of raftkv."""
    found = []
    for path in sorted((SRC / "raftkv").rglob("*.py")):
        parts = path.relative_to(SRC).with_suffix("").parts
        is_package = parts[-1] == "__init__"
        found.append((path, ".".join(parts[:-1] if is_package else parts), is_package))
    return found


def test_no_module_breaks_a_layering_rule() -> None:
    problems = []
    for path, module, is_package in modules():
        rel = str(path.relative_to(SRC.parent))
        problems += violations(path.read_text(encoding="utf-8"), module, rel, is_package)
    assert not problems, "forbidden imports:\n" + "\n".join(problems)


def test_rules_name_existing_packages() -> None:
    """A rule naming a package that was renamed or removed would silently check nothing."""
    known = [module for _path, module, _pkg in modules()]
    for rule in RULES:
        for field in (rule.importers, rule.forbidden, rule.allowed, rule.exempt):
            for name in field.split():
                assert any(_any_covers(name, m) for m in known), f"{name!r} names no module"


def test_checker_reports_forbidden_imports() -> None:
    source = (
        "from __future__ import annotations\n"
        "from typing import TYPE_CHECKING\n"
        "from raftkv.raft.types import Entry\n"
        "from raftkv.backup.snapshot_file import open_snapshot\n"
        "if TYPE_CHECKING:\n"
        "    from raftkv.server.member import Member\n"
        "def f() -> None:\n"
        "    import raftkv.ctl.main\n"
        "    from ..backup import agent\n"
    )
    found = violations(source, "raftkv.wal.fake", "src/raftkv/wal/fake.py")
    assert [p.split("  (")[0] for p in found] == [
        "src/raftkv/wal/fake.py:4: from raftkv.backup.snapshot_file import open_snapshot",
        "src/raftkv/wal/fake.py:6: from raftkv.server.member import Member",
        "src/raftkv/wal/fake.py:8: import raftkv.ctl.main",
        "src/raftkv/wal/fake.py:9: from ..backup import agent",
    ]
    assert found[0].endswith("(the store knows nothing of what is built on it)")


def test_checker_applies_allowances_and_exemptions() -> None:
    server = "from raftkv.backup.bbolt import BoltReader\nfrom raftkv.backup import restore\n"
    found = violations(server, "raftkv.server.fake", "src/raftkv/server/fake.py")
    assert len(found) == 1 and ":2: from raftkv.backup import restore" in found[0]
    app_import = "from raftkv.app.serve import run\n"
    assert violations(app_import, "raftkv.ctl.fake", "src/raftkv/ctl/fake.py") == []
    found = violations(app_import, "raftkv.inspect.fake", "src/raftkv/inspect/fake.py")
    assert len(found) == 1 and "(the tools are libraries" in found[0]  # the first rule broken
    assert violations("from raftkv import errors\n", "raftkv.raft.x", "x.py") != []
