"""The ``raftkv`` command line: ``raftkv serve`` runs a member; the rest are client and tool commands.

Owns: top-level argument parsing and dispatch.  Each command group lives in its own module and
registers itself through ``register(subparsers)``; its handler is stored as ``func`` on the parsed
namespace and returns the process exit status.  Heavy imports happen inside handlers so that
``raftkv --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence

from raftkv import __version__
from raftkv.ctl.client_flags import GLOBAL_BARE_FLAGS, GLOBAL_VALUE_FLAGS

# Modules that contribute subcommands, in help order.  Each defines register(subparsers).
_COMMAND_MODULES = (
    "raftkv.ctl.cmd_serve",
    "raftkv.ctl.cmd_client",
    "raftkv.ctl.cmd_tools",
    "raftkv.ctl.cmd_check",
    "raftkv.ctl.cmd_benchmark",
    "raftkv.ctl.cmd_backup",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="raftkv",
        description=(
            "raftkv: an etcd-compatible, Raft-replicated key-value store that detects and "
            "fences replica divergence. 'raftkv serve' starts a member; the other commands "
            "are an etcdctl-compatible client and operator tools."
        ),
    )
    parser.add_argument("--version", action="version", version=f"raftkv {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def hoist_global_flags(argv: Sequence[str]) -> list[str]:
    """etcdctl accepts its global flags before the command (``etcdctl --endpoints X get k``);
    the subcommand parsers own them, so they are moved behind the command."""
    rest = list(argv)
    hoisted: list[str] = []
    while rest:
        head = rest[0]
        name = head.split("=", 1)[0]
        if name in GLOBAL_VALUE_FLAGS:
            take = 1 if "=" in head else 2
        elif name in GLOBAL_BARE_FLAGS:
            take = 1
        else:
            break
        hoisted += rest[:take]
        rest = rest[take:]
    return rest + hoisted


def command_parser(
    parser: argparse.ArgumentParser, args: argparse.Namespace
) -> argparse.ArgumentParser:
    """The parser of the deepest (sub)command chosen in ``args`` (``raftkv serve``'s for
    ``raftkv serve ...``); ``parser`` itself when no command was chosen."""
    current = parser
    while True:
        chosen = None
        for action in current._actions:
            if isinstance(action, argparse._SubParsersAction) and action.dest:
                name = getattr(args, action.dest, None)
                if isinstance(name, str) and name in action.choices:
                    chosen = action.choices[name]
        if chosen is None:
            return current
        current = chosen


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(
        hoist_global_flags(sys.argv[1:] if argv is None else argv)
    )
    if extra:  # the command's own usage, as argparse would give for its own flags (exit 2)
        command_parser(parser, args).error(f"unrecognized arguments: {' '.join(extra)}")
    func: Callable[[argparse.Namespace], int] | None = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 2
    try:
        return func(args)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
