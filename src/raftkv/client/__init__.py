"""Talking to a running cluster over etcd's v3 gRPC API, for every tool that does.

Owns: dialing endpoints and turning gRPC failures into etcdctl's messages and exit codes
(``conn``), endpoint parsing (``endpoints``), the TLS and auth settings (``security``), TLS
material and channel credentials (``tls``), token authentication (``auth``), etcdctl's exit
codes (``errors``), and etcdctl 3.4's byte-exact output building blocks (``output``).  Used by
the command line (``ctl``), the inspector (``inspect``), the backup agent (``backup``) and the
benchmark; it knows nothing of the command line, the member or the API services.

This module imports nothing but ``os``: the command line's flag definitions read the endpoint
defaults below without loading gRPC, so ``raftkv --help`` stays fast.
"""

from __future__ import annotations

import os

DEFAULT_ENDPOINT = "127.0.0.1:2379"
ENDPOINT_ENV_VARS = ("RAFTKV_ENDPOINTS", "ETCDCTL_ENDPOINTS")


def quiet_grpc_logs() -> None:
    """Keep gRPC core's own log lines (``E1206 ... ssl_transport_security ...``) off a client
    command's stderr: the command reports each failure as one ``Error: ...`` line.  Call it
    before ``grpc`` is first imported (it has no effect after); a ``GRPC_VERBOSITY`` set by
    the user wins."""
    os.environ.setdefault("GRPC_VERBOSITY", "NONE")
