"""Process-wide runtime settings of a member: gRPC's switches and Python's garbage collector.

A member answers every client request through grpc.aio and allocates many short-lived Python
objects per request; on a small machine these two costs are most of its CPU.

gRPC (``apply_grpc_defaults``): two of its switches (``GRPC_EXPERIMENTS``), which made each
call cheaper where first measured:

- ``-event_engine_listener``: accept and serve client connections with gRPC's iomgr TCP server
  (its default until the EventEngine listener replaced it) instead of the EventEngine
  listener;
- ``pollset_alternative``: code outside iomgr that relied on pollsets uses gRPC's
  non-pollset alternatives.

Measured with a null KV server (``python bench/grpc_ceiling.py --compare-runtime``): about
0.315 -> 0.263 ms of server CPU per call.  On later hosts the null server pays more with them
(0.178-0.191 against 0.137-0.147 ms, ``-event_engine_listener``) while a cluster's members pay
the same and their gRPC fronts less (bench/README.md): the cluster's figures keep them.
Applied only to a grpcio release these names were measured on (``TUNED_GRPC_RELEASES``;
another release keeps gRPC's defaults, as it may not know them), only when the operator has not
set ``GRPC_EXPERIMENTS`` (theirs wins), and before the first gRPC server or channel exists
(afterwards it changes nothing).

Garbage collector (``tune_gc``): the youngest generation is collected after
``GC_THRESHOLDS[0]`` net allocations instead of Python's 700, so the cyclic collector runs
about seventy times less often under load; reference counting still frees everything that is
not in a cycle at once.  Measured on a 3-member cluster under 100 clients of puts: members'
CPU per put about 5 % lower.
"""

from __future__ import annotations

import gc
import importlib.metadata
import os
from collections.abc import MutableMapping

from raftkv.tlsutil import openssl_cipher_names

MEMBER_GRPC_EXPERIMENTS = "-event_engine_listener,pollset_alternative"
TUNED_GRPC_RELEASES = ((1, 85),)
GC_THRESHOLDS = (50_000, 10, 10)


def grpc_release() -> tuple[int, int] | None:
    """(major, minor) of the installed grpcio, or None if it cannot be told."""
    try:
        major, minor = importlib.metadata.version("grpcio").split(".")[:2]
        return int(major), int(minor)
    except (importlib.metadata.PackageNotFoundError, ValueError):
        return None


def apply_grpc_defaults(environ: MutableMapping[str, str] | None = None) -> str | None:
    """Set ``GRPC_EXPERIMENTS`` for a member process; returns what it is now set to (None:
    untouched and unset)."""
    env = os.environ if environ is None else environ
    if "GRPC_EXPERIMENTS" not in env and grpc_release() in TUNED_GRPC_RELEASES:
        env["GRPC_EXPERIMENTS"] = MEMBER_GRPC_EXPERIMENTS
    return env.get("GRPC_EXPERIMENTS")


def apply_grpc_cipher_suites(
    go_names: tuple[str, ...], environ: MutableMapping[str, str] | None = None
) -> None:
    """Restrict the TLS 1.2 cipher suites of the gRPC client listener to ``--cipher-suites``
    (Go's names).  gRPC reads ``GRPC_SSL_CIPHER_SUITES`` once, when it is first imported, so
    this must run before anything imports ``grpc``; nothing to do without the flag."""
    names = openssl_cipher_names(go_names)
    if names:
        env = os.environ if environ is None else environ
        env["GRPC_SSL_CIPHER_SUITES"] = ":".join(names)


def tune_gc() -> None:
    """Collect the young generations less often (``GC_THRESHOLDS``)."""
    gc.set_threshold(*GC_THRESHOLDS)
