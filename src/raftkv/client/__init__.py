"""Talking to a running cluster over etcd's v3 gRPC API, for every tool that does.

Owns: dialing endpoints and turning gRPC failures into etcdctl's messages and exit codes
(``conn``), and etcdctl 3.4's byte-exact output building blocks (``output``).  Used by the
command line (``ctl``), the inspector (``inspect``) and the backup agent (``backup``); it knows
nothing of the command line, the member or the API services.

This module imports nothing: the command line's flag definitions read the endpoint defaults
below without loading gRPC, so ``raftkv --help`` stays fast.
"""

from __future__ import annotations

DEFAULT_ENDPOINT = "127.0.0.1:2379"
ENDPOINT_ENV_VARS = ("RAFTKV_ENDPOINTS", "ETCDCTL_ENDPOINTS")
