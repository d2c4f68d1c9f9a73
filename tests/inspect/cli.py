"""Runs ``raftkv check consistency`` as a child process, through ``raftkv.ctl.main`` when the
``check`` command is registered there, else through a parser holding only ``cmd_check``.

Contract: ``run_check`` never raises on a non-zero exit; it is bounded by ``timeout``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from collections.abc import Sequence

from tests.cluster.harness import REPO


def main(argv: Sequence[str]) -> int:
    from raftkv.ctl import cmd_check
    from raftkv.ctl.main import build_parser, hoist_global_flags

    argv = hoist_global_flags(argv)
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    if "check" not in sub.choices:
        parser = argparse.ArgumentParser(prog="raftkv")
        cmd_check.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return int(args.func(args))


def run_check(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "src"), str(REPO), env.get("PYTHONPATH", "")])
    code = "import sys; from tests.inspect.cli import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.run(
        [sys.executable, "-c", code, "check", "consistency", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=REPO,
        check=False,
    )
