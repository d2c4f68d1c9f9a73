"""``raftkv serve``: run one member with etcd's flags (see ``raftkv serve --help``)."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any

from raftkv.server.config import ConfigError, add_serve_arguments, parse_serve_args


def register(sub: Any) -> None:
    p = sub.add_parser(
        "serve",
        help="run a member (etcd's flags; RAFTKV_<FLAG> variables; --config-file YAML)",
        description=(
            "Run one raftkv member. With no flags it starts a single-member cluster on "
            "etcd's default ports (clients 127.0.0.1:2379, peers 127.0.0.1:2380) with its "
            "data in ./default.raftkv. Every flag can also be set as RAFTKV_<FLAG> "
            "(e.g. RAFTKV_DATA_DIR) or in a YAML --config-file using the flag names as keys. "
            "Unless GRPC_EXPERIMENTS is set, the member sets it to "
            "'-event_engine_listener,pollset_alternative' (cheaper gRPC calls, measured on "
            "grpcio 1.85), and it collects Python's young objects after 50000 allocations "
            "instead of 700. The Raft core runs compiled (mypyc) when the install could "
            "compile it; RAFTKV_PURE_PYTHON=1 runs it as pure Python."
        ),
    )
    add_serve_arguments(p)
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    """Exit status 2 with one ``raftkv serve: ...`` line for a bad configuration (flags,
    variables, config file, ``RAFTKV_FAILPOINTS``); otherwise the member's (``app.serve``)."""
    try:
        cfg = parse_serve_args(args)
    except ConfigError as exc:
        print(f"raftkv serve: {exc}", file=sys.stderr)
        return 2
    try:
        import raftkv.failpoints  # noqa: F401 - parses RAFTKV_FAILPOINTS on import
    except ValueError as exc:  # FailpointConfigError, which the failed import cannot name
        print(f"raftkv serve: {exc}", file=sys.stderr)
        return 2
    from raftkv.server.runtime import apply_grpc_cipher_suites, apply_grpc_defaults, tune_gc

    experiments = apply_grpc_defaults()  # before anything creates a gRPC server or channel
    apply_grpc_cipher_suites(cfg.cipher_suites)  # before anything imports grpc
    tune_gc()
    from raftkv.app.serve import run
    from raftkv.server.logsetup import configure

    configure(cfg.log_level, cfg.log_format)
    run_log = logging.getLogger("raftkv.run")
    if experiments:
        run_log.info("gRPC runtime: GRPC_EXPERIMENTS=%s", experiments)
    from raftkv.build_info import COMPILED, core_compiled

    if core_compiled():
        run_log.info("hot path compiled (mypyc): %s", ", ".join(COMPILED))
    else:
        run_log.info("hot path: pure Python")
    return run(cfg)
