"""Command-line flags of the etcdctl-compatible client commands, free of gRPC imports.

Owns: etcdctl's global flags (``--endpoints`` with its RAFTKV_ENDPOINTS / ETCDCTL_ENDPOINTS
environment fallback, ``--dial-timeout``, ``--command-timeout``, ``-w/--write-out``, ``--hex``),
the TLS and auth flags every client takes (``add_security_flags``: the client commands, ``check
consistency``, ``backup run``, ``benchmark``; read by ``raftkv.client.security``), the names of
the global flags that may come before the command (``GLOBAL_VALUE_FLAGS``,
``GLOBAL_BARE_FLAGS``), Go duration parsing for the timeouts, and the flag sets of
put/get/del/watch (which the ``txn`` parser reuses) and of ``snapshot restore`` (which ``backup
restore`` reuses).  Registering commands imports only this module (and the endpoint defaults of
``raftkv.client``, which import nothing), so ``raftkv --help`` stays fast and gRPC is not loaded
before a command runs.
"""

from __future__ import annotations

import argparse
import re
from typing import Any

from raftkv.client import DEFAULT_ENDPOINT

OUTPUT_FORMATS = ("simple", "json", "fields", "protobuf", "table")

# Global flags etcdctl accepts before the command name; ``raftkv.ctl.main`` moves them behind it.
GLOBAL_VALUE_FLAGS = (
    "--endpoints",
    "--dial-timeout",
    "--command-timeout",
    "-w",
    "--write-out",
    "--cacert",
    "--cert",
    "--key",
    "--user",
    "--password",
)
GLOBAL_BARE_FLAGS = ("--hex", "--insecure-transport", "--insecure-skip-tls-verify")


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
    add_security_flags(g)


def _env(flag: str) -> str:
    suffix = flag.upper().replace("-", "_")
    return f"env RAFTKV_{suffix} or ETCDCTL_{suffix}"


def add_security_flags(g: Any, suppress: bool = False) -> None:
    """etcdctl's TLS and auth flags on ``g`` (a parser or an argument group), with etcdctl's
    help texts.  Every default is None (``raftkv.client.security.security_from_args`` then reads
    the environment), or SUPPRESS with ``suppress`` (for parsers whose flags may also come
    before a subcommand, whose default must not overwrite them)."""
    unset = argparse.SUPPRESS if suppress else None
    g.add_argument(
        "--cacert",
        dest="tls_cacert",
        metavar="FILE",
        default=unset,
        help="verify certificates of TLS-enabled secure servers using this CA bundle "
        f"({_env('cacert')})",
    )
    g.add_argument(
        "--cert",
        dest="tls_cert",
        metavar="FILE",
        default=unset,
        help=f"identify secure client using this TLS certificate file ({_env('cert')})",
    )
    g.add_argument(
        "--key",
        dest="tls_key",
        metavar="FILE",
        default=unset,
        help=f"identify secure client using this TLS key file ({_env('key')})",
    )
    g.add_argument(
        "--insecure-transport",
        nargs="?",
        const="true",
        default=unset,
        metavar="BOOL",
        help="disable transport security for client connections (default true). TLS is used "
        "for https:// endpoints, and for endpoints without a scheme when a TLS flag is given or "
        f"--insecure-transport=false; never for http:// ones ({_env('insecure-transport')})",
    )
    g.add_argument(
        "--insecure-skip-tls-verify",
        nargs="?",
        const="true",
        default=unset,
        metavar="BOOL",
        help="skip server certificate verification (CAUTION: this option should be enabled "
        "only for testing purposes). gRPC Python cannot switch verification off: raftkv "
        "fetches the certificate the server presents, trusts that one certificate for the "
        "connection and checks it against a name it carries; its validity dates are still "
        f"checked ({_env('insecure-skip-tls-verify')})",
    )
    g.add_argument(
        "--user",
        dest="auth_user",
        metavar="USERNAME[:PASSWORD]",
        default=unset,
        help="username[:password] for authentication (prompt if password is not supplied) "
        f"({_env('user')})",
    )
    g.add_argument(
        "--password",
        dest="auth_password",
        metavar="PASSWORD",
        default=unset,
        help="password for authentication (if this option is used, --user option shouldn't "
        f"include password) ({_env('password')})",
    )


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


def add_restore_flags(p: argparse.ArgumentParser) -> None:
    """etcdutl's ``snapshot restore`` flags (with ``raftkv serve``'s peer URL default)."""
    p.add_argument(
        "--data-dir", default="", help="Path to the data directory (default <name>.raftkv)"
    )
    p.add_argument(
        "--wal-dir", default="", help="Path to the WAL directory (use --data-dir if none given)"
    )
    p.add_argument("--name", default="default", help="Human-readable name for this member")
    p.add_argument(
        "--initial-cluster",
        default="",
        help="Initial cluster configuration for restore bootstrap (default <name>=<peer URLs>)",
    )
    p.add_argument(
        "--initial-cluster-token",
        default="etcd-cluster",
        help="Initial cluster token for the etcd cluster during restore bootstrap",
    )
    p.add_argument(
        "--initial-advertise-peer-urls",
        default="http://127.0.0.1:2380",
        help="List of this member's peer URLs to advertise to the rest of the cluster",
    )
    p.add_argument(
        "--bump-revision",
        default="0",
        help="How much to increase the latest revision after restore",
    )
    p.add_argument(
        "--mark-compacted",
        nargs="?",
        const="true",
        default="false",
        help="Mark the latest revision after restore as the point of scheduled compaction "
        "(required if --bump-revision > 0, disallowed otherwise)",
    )
    p.add_argument(
        "--skip-hash-check",
        nargs="?",
        const="true",
        default="false",
        help="Ignore snapshot integrity hash value (required if copied from data directory)",
    )
