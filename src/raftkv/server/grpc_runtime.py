"""gRPC runtime settings of a member process, applied before gRPC initialises.

A member answers every client request through grpc.aio; on a small machine most of its CPU
goes there.  Two of gRPC's switches (``GRPC_EXPERIMENTS``) make each call cheaper:

- ``-event_engine_listener``: accept and serve client connections with gRPC's iomgr TCP server
  (its default until the EventEngine listener replaced it) instead of the EventEngine
  listener;
- ``pollset_alternative``: code outside iomgr that relied on pollsets uses gRPC's
  non-pollset alternatives.

Measured with a null KV server (``python bench/grpc_ceiling.py --compare-runtime``): about
0.32 -> 0.27 ms of server CPU per call; on a 3-member cluster under 100 clients of puts
(``bench/cpu_per_request.py``), members' CPU per put about 8 % lower.

Contract: applied only to a grpcio release these names were measured on
(``TUNED_GRPC_RELEASES``; another release keeps gRPC's defaults, as it may not know them) and
only when the operator has not set ``GRPC_EXPERIMENTS`` (theirs wins).  Must run before the
first gRPC server or channel is created in the process; it changes nothing afterwards.
"""

from __future__ import annotations

import importlib.metadata
import os
from collections.abc import MutableMapping

MEMBER_GRPC_EXPERIMENTS = "-event_engine_listener,pollset_alternative"
TUNED_GRPC_RELEASES = ((1, 85),)


def grpc_release() -> tuple[int, int] | None:
    """(major, minor) of the installed grpcio, or None if it cannot be told."""
    try:
        major, minor = importlib.metadata.version("grpcio").split(".")[:2]
        return int(major), int(minor)
    except (importlib.metadata.PackageNotFoundError, ValueError):
        return None


def apply_member_defaults(environ: MutableMapping[str, str] | None = None) -> str | None:
    """Set ``GRPC_EXPERIMENTS`` for a member process; returns what it is now set to (None:
    untouched and unset)."""
    env = os.environ if environ is None else environ
    if "GRPC_EXPERIMENTS" not in env and grpc_release() in TUNED_GRPC_RELEASES:
        env["GRPC_EXPERIMENTS"] = MEMBER_GRPC_EXPERIMENTS
    return env.get("GRPC_EXPERIMENTS")
