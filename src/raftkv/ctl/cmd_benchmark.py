"""``raftkv benchmark``: etcd's benchmark tool for any v3 endpoint (raftkv or etcd).

Owns: the ``benchmark put|range|txn-put`` command line (etcd's flag names: ``--endpoints``,
``--conns``, ``--clients``, ``--total``, ``--key-size``, ``--val-size``, ``--sequential-keys``,
``--key-space-size``, ``--consistency``, ``--rate``, ``--txn-ops``, ``--precise``, ``--cacert``,
``--cert``, ``--key``, ``--user``) plus etcdctl's other TLS and auth flags
(``--insecure-skip-tls-verify``, ``--insecure-transport``, ``--password``), ``--procs`` (load
processes) and ``-w simple|json``.  The load itself lives in
``raftkv.benchmark``; this module only parses, runs and prints.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from raftkv.client import quiet_grpc_logs
from raftkv.ctl.client_flags import add_security_flags

DEFAULT_ENDPOINTS = "127.0.0.1:2379"


def _positive(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}")
    return value


def _common_flags(p: argparse.ArgumentParser, suppress: bool) -> None:
    """The global flags; accepted before the workload name (etcd's habit) and after it.

    On the workload parsers every default is SUPPRESS so that a flag given before the workload
    name is not overwritten by the workload parser's default.
    """

    def d(value: object) -> object:
        return argparse.SUPPRESS if suppress else value

    g = p.add_argument_group("global benchmark flags")
    g.add_argument(
        "--endpoints",
        default=d(os.environ.get("ETCDCTL_ENDPOINTS", DEFAULT_ENDPOINTS)),
        help=f"comma-separated gRPC endpoints (default {DEFAULT_ENDPOINTS})",
    )
    g.add_argument("--conns", type=_positive, default=d(1), help="total gRPC connections")
    g.add_argument("--clients", type=_positive, default=d(1), help="total concurrent clients")
    g.add_argument(
        "--procs",
        type=int,
        default=d(0),
        help="load processes (0 = min(clients, conns, cpu count))",
    )
    g.add_argument("--total", type=_positive, default=d(10000), help="total number of requests")
    g.add_argument(
        "--rate", type=float, default=d(0.0), help="maximum requests per second (0 is no limit)"
    )
    g.add_argument(
        "--precise", action="store_true", default=d(False), help="full floating point precision"
    )
    g.add_argument(
        "-w",
        "--write-out",
        choices=("simple", "json"),
        default=d("simple"),
        help="output format",
    )
    g.add_argument("--seed", type=int, default=d(None), help="seed for random keys and values")
    g.add_argument(
        "--request-timeout", type=float, default=d(30.0), help="per-request deadline in seconds"
    )
    add_security_flags(g, suppress=suppress)


def _key_flags(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--key-size", type=int, default=8, help=f"key size of {what}")
    p.add_argument("--val-size", type=int, default=8, help=f"value size of {what}")
    p.add_argument("--key-space-size", type=int, default=1, help="maximum possible keys")
    p.add_argument("--sequential-keys", action="store_true", help="use sequential keys")


def register(subparsers: Any) -> None:
    bench = subparsers.add_parser(
        "benchmark",
        help="A low-level benchmark tool for etcd v3 endpoints (raftkv or etcd)",
        description=(
            "benchmark drives an etcd v3 gRPC endpoint with many concurrent clients spread "
            "over several processes and reports latency and throughput like etcd's benchmark."
        ),
    )
    _common_flags(bench, suppress=False)
    bench.set_defaults(func=lambda _args, _p=bench: _p.print_help() or 1)
    sub = bench.add_subparsers(dest="benchmark_command", metavar="COMMAND")
    common = argparse.ArgumentParser(add_help=False)
    _common_flags(common, suppress=True)
    parents = [common]

    p = sub.add_parser("put", help="Benchmark put", parents=parents)
    _key_flags(p, "put request")
    p.set_defaults(func=run_command, kind="put")

    p = sub.add_parser("range", help="Benchmark range", parents=parents)
    p.add_argument("key", help="key to read")
    p.add_argument("end", nargs="?", default="", help="range end (exclusive)")
    p.add_argument(
        "--consistency",
        choices=("l", "s"),
        default="l",
        help="Linearizable(l) or Serializable(s)",
    )
    p.set_defaults(func=run_command, kind="range")

    p = sub.add_parser("txn-put", help="Benchmark txn-put", parents=parents)
    _key_flags(p, "txn put")
    p.add_argument("--txn-ops", type=int, default=1, help="number of puts per txn")
    p.set_defaults(func=run_command, kind="txn-put")


def config_from_args(args: argparse.Namespace) -> Any:
    """The :class:`raftkv.benchmark.runner.LoadConfig` the parsed flags describe; may ask for
    the password, raises CtlError for bad TLS or auth flags or files."""
    from raftkv.benchmark.runner import LoadConfig
    from raftkv.benchmark.workload import Workload
    from raftkv.client.security import security_from_args
    from raftkv.client.tls import load_material

    kind: str = args.kind
    if kind == "range":
        workload = Workload(
            kind="range",
            range_key=args.key.encode(),
            range_end=args.end.encode(),
            serializable=args.consistency == "s",
        )
    else:
        workload = Workload(
            kind=kind,
            key_size=args.key_size,
            val_size=args.val_size,
            key_space_size=args.key_space_size,
            sequential=args.sequential_keys,
            txn_ops=getattr(args, "txn_ops", 1),
        )
    endpoints = tuple(e.strip() for e in args.endpoints.split(",") if e.strip())
    security = security_from_args(args)
    load_material(security.tls)
    return LoadConfig(
        endpoints=endpoints,
        workload=workload,
        total=args.total,
        clients=args.clients,
        conns=args.conns,
        procs=args.procs,
        rate=args.rate,
        request_timeout=args.request_timeout,
        seed=args.seed,
        security=security,
    )


def _progress_printer() -> Any:
    if not sys.stderr.isatty():
        return None

    def show(done: int, total: int) -> None:
        width = 40
        filled = width * done // max(total, 1)
        end = "\n" if done >= total else ""
        sys.stderr.write(f"\r{done}/{total} [{'=' * filled}{' ' * (width - filled)}]{end}")
        sys.stderr.flush()

    return show


def run_command(args: argparse.Namespace) -> int:
    quiet_grpc_logs()
    from raftkv.benchmark import report, runner
    from raftkv.client.errors import CtlError

    try:
        cfg = config_from_args(args)
        cfg.workload.validate()
    except ValueError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 1
    except CtlError as exc:
        print(f"Error: {exc.message}", file=sys.stderr)
        return exc.code
    if args.write_out == "simple" and cfg.workload.kind == "range":
        print(
            "bench with "
            + ("serializable" if cfg.workload.serializable else "linearizable")
            + " range"
        )
    try:
        stats = runner.run(cfg, on_progress=_progress_printer())
    except (runner.BenchmarkError, ValueError) as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 1
    if args.write_out == "json":
        extra: dict[str, object] = {
            "op": cfg.workload.kind,
            "clients": cfg.clients,
            "conns": cfg.conns,
            "procs": cfg.effective_procs(),
            "endpoints": list(cfg.endpoints),
        }
        print(report.format_json(stats, extra))
    else:
        print(report.format_text(stats, precise=args.precise))
    return 0 if stats.count > 0 else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="raftkv")
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 2
    result: int = func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
