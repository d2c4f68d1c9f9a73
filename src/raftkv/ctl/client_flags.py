"""Command-line flags of the etcdctl-compatible client commands, free of gRPC imports.

Owns: etcdctl's global flags (``--endpoints`` with its RAFTKV_ENDPOINTS / ETCDCTL_ENDPOINTS
environment fallback, ``--dial-timeout``, ``--command-timeout``, ``-w/--write-out``, ``--hex``),
Go duration parsing for the timeouts, and the flag sets of put/get/del/watch, which the ``txn``
parser reuses.  Registering commands imports only this module (and the endpoint defaults of
``raftkv.client``, which import nothing), so ``raftkv --help`` stays fast.
"""

from __future__ import annotations

import argparse
import re

from raftkv.client import DEFAULT_ENDPOINT

OUTPUT_FORMATS = ("simple", "json", "fields", "protobuf", "table")


def parse_duration(text: str) -> float:
    """Parse a Go duration (``2s``, ``500ms``, ``1m30s``) or a bare number of seconds."""
    try:
        return float(text)
    except ValueError:
        pass
    units = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
    parts = re.findall(r"(\d+(?:\.\d*)?)(ns|us|µs|ms|s|m|h)", text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise argparse.ArgumentTypeError(f"time: invalid duration {text!r}")
    return sum(float(n) * units[u] for n, u in parts)


def add_global_flags(parser: argparse.ArgumentParser) -> None:
    """The flags every client command accepts, as etcdctl names them."""
    g = parser.add_argument_group("global options")
    g.add_argument(
        "--endpoints",
        default=None,
        help="gRPC endpoints, comma separated (env RAFTKV_ENDPOINTS or ETCDCTL_ENDPOINTS; "
        f"default {DEFAULT_ENDPOINT})",
    )
    g.add_argument(
        "--dial-timeout", type=parse_duration, default=2.0, help="dial timeout (default 2s)"
    )
    g.add_argument(
        "--command-timeout",
        type=parse_duration,
        default=5.0,
        help="timeout for short running commands (default 5s)",
    )
    g.add_argument(
        "-w",
        "--write-out",
        default="simple",
        choices=OUTPUT_FORMATS,
        help="output format (default simple)",
    )
    g.add_argument("--hex", action="store_true", help="print byte strings as hex encoded strings")


def add_put_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("key", nargs="?")
    p.add_argument("value", nargs="?")
    p.add_argument("extra", nargs="*", help=argparse.SUPPRESS)
    p.add_argument("--lease", default="0", help="lease ID (in hexadecimal) to attach to the key")
    p.add_argument("--prev-kv", action="store_true", help="return the previous key-value pair")
    p.add_argument("--ignore-value", action="store_true", help="update with the current value")
    p.add_argument("--ignore-lease", action="store_true", help="update with the current lease")


def add_get_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("key", nargs="?")
    p.add_argument("range_end", nargs="?")
    p.add_argument("extra", nargs="*", help=argparse.SUPPRESS)
    p.add_argument("--consistency", default="l", help="Linearizable(l) or Serializable(s)")
    p.add_argument("--order", default="", help="ASCEND or DESCEND (ASCEND by default)")
    p.add_argument("--sort-by", default="", help="CREATE, KEY, MODIFY, VALUE, or VERSION")
    p.add_argument("--limit", type=int, default=0, help="maximum number of results")
    p.add_argument("--prefix", action="store_true", help="get keys with matching prefix")
    p.add_argument("--from-key", action="store_true", help="get keys >= the given key")
    p.add_argument("--rev", type=int, default=0, help="specify the kv revision")
    p.add_argument("--keys-only", action="store_true", help="get only the keys")
    p.add_argument("--count-only", action="store_true", help="get only the count (fields only)")
    p.add_argument(
        "--print-value-only", action="store_true", help="only write values (simple output)"
    )


def add_del_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("key", nargs="?")
    p.add_argument("range_end", nargs="?")
    p.add_argument("extra", nargs="*", help=argparse.SUPPRESS)
    p.add_argument("--prefix", action="store_true", help="delete keys with matching prefix")
    p.add_argument("--prev-kv", action="store_true", help="return deleted key-value pairs")
    p.add_argument("--from-key", action="store_true", help="delete keys >= the given key")


def add_watch_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("args", nargs="*", metavar="key [range_end]")
    p.add_argument("--prefix", action="store_true", help="watch on a prefix if prefix is set")
    p.add_argument("--rev", type=int, default=0, help="revision to start watching")
    p.add_argument("--prev-kv", action="store_true", help="get the previous key-value pair")
