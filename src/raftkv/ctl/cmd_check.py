"""``raftkv check consistency``: the application-level replica inspector operators run from cron.

Owns: the ``check`` command group and the flags of ``check consistency``; the logic lives in
``raftkv.inspect`` and is imported only when the command runs.  ``check data`` (offline
verification of one member's files) lives in ``raftkv.ctl.cmd_check_data``; other ``check``
subcommands attach to the same group through ``register_check_subcommands``.

Exit status: 0 consistent, 1 divergent, 2 could not tell (also for a bad command line).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

from raftkv.client import quiet_grpc_logs
from raftkv.ctl.client_flags import add_security_flags, parse_duration
from raftkv.ctl.cmd_check_data import add_data_parser

# Other modules may append functions taking the ``check`` group's subparsers object.
register_check_subcommands: list[Callable[[Any], None]] = []

_DESCRIPTION = (
    "Ask every member of a running cluster (raftkv or etcd) for its key count, revision, raft "
    "indexes, version, alarms, optional mvcc counters and its HashKV at one common revision, "
    "print them, and explain each divergence in one line. Exit status 0 when the members are "
    "consistent, 1 when they diverge, 2 when it could not tell (a member did not answer, the "
    "common revision was compacted). Given one endpoint, every member of its member list is "
    "checked. TLS and authentication take etcdctl's flags and variables (--cacert, --cert, "
    "--key, --insecure-skip-tls-verify, --user, --password; ETCDCTL_CACERT, ...)."
)


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0: {text}")
    return value


def add_consistency_parser(check_sub: Any) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = check_sub.add_parser(
        "consistency",
        help="compare the state of every member of a running cluster",
        description=_DESCRIPTION,
    )
    p.add_argument(
        "--endpoints",
        default=None,
        help="gRPC endpoints, comma separated; one endpoint means every member it lists "
        "(env RAFTKV_ENDPOINTS or ETCDCTL_ENDPOINTS; default 127.0.0.1:2379)",
    )
    p.add_argument("--dial-timeout", type=parse_duration, default=2.0, help="default 2s")
    p.add_argument(
        "--command-timeout", type=parse_duration, default=5.0, help="per RPC, default 5s"
    )
    p.add_argument("-w", "--write-out", choices=("table", "json"), default="table")
    add_security_flags(p.add_argument_group("TLS and authentication (etcdctl's flags)"))
    p.add_argument(
        "--metrics-urls",
        default="",
        help="members' /metrics URLs, comma separated, one per endpoint (or per listed "
        "member), to show the etcd_mvcc_put/delete/txn_total counters",
    )
    p.add_argument(
        "--watch",
        type=parse_duration,
        default=None,
        metavar="INTERVAL",
        help="check again every INTERVAL (e.g. 30s) instead of once",
    )
    p.add_argument(
        "--count",
        type=_positive_int,
        default=0,
        help="with --watch: stop after this many checks (default 0: forever)",
    )
    p.add_argument(
        "--metrics-listen",
        default=None,
        metavar="ADDR",
        help="with --watch: serve the latest result as Prometheus metrics on ADDR/metrics",
    )
    p.set_defaults(func=run_consistency)
    return p


def register(subparsers: Any) -> None:
    check = subparsers.add_parser(
        "check",
        help="check a cluster's replicas, or one stopped member's files, for divergence",
        description="Check a running cluster's replicas for divergence (check consistency), "
        "or verify and rebuild one stopped member's data directory (check data).",
    )
    check.set_defaults(func=lambda _args, _p=check: _p.print_help() or 2)
    check_sub = check.add_subparsers(dest="check_command", metavar="COMMAND")
    add_consistency_parser(check_sub)
    add_data_parser(check_sub)
    for extra in register_check_subcommands:
        extra(check_sub)


def _split(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def run_consistency(args: argparse.Namespace) -> int:
    quiet_grpc_logs()
    from raftkv.client.conn import CtlError, default_endpoints
    from raftkv.client.security import security_from_args
    from raftkv.client.tls import load_material
    from raftkv.inspect.exporter import Exporter, MetricsServer, watch
    from raftkv.inspect.gather import InspectOptions, UsageError, check
    from raftkv.inspect.render import render
    from raftkv.inspect.verdict import EXIT_UNKNOWN, CheckResult

    def emit(result: CheckResult) -> None:
        sys.stdout.write(render(result, args.write_out) + "\n")
        sys.stdout.flush()

    try:
        security = security_from_args(args)
        load_material(security.tls)
    except CtlError as exc:
        sys.stderr.write(f"Error: {exc.message}\n")
        return EXIT_UNKNOWN
    opts = InspectOptions(
        endpoints=_split(args.endpoints if args.endpoints is not None else default_endpoints()),
        dial_timeout=float(args.dial_timeout),
        command_timeout=float(args.command_timeout),
        metrics_urls=tuple(_split(args.metrics_urls)),
        security=security,
    )
    server: MetricsServer | None = None
    try:
        if args.watch is None:
            if args.metrics_listen is not None or args.count:
                raise UsageError("--metrics-listen and --count need --watch")
            result = check(opts)
            emit(result)
            return result.exit_code
        exporter = Exporter()
        if args.metrics_listen is not None:
            server = MetricsServer(args.metrics_listen, exporter)
            server.start()
            sys.stderr.write(f"serving inspector metrics on {server.url}\n")
            sys.stderr.flush()
        return watch(opts, float(args.watch), int(args.count), emit, exporter)
    except UsageError as exc:
        sys.stderr.write(f"Error: {exc}\n")
        return EXIT_UNKNOWN
    finally:
        if server is not None:
            server.close()
