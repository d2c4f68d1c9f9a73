"""Client endpoints as etcdctl takes them: lists, defaults, schemes and the address to dial.

Owns: splitting ``--endpoints``, the default from ``RAFTKV_ENDPOINTS`` / ``ETCDCTL_ENDPOINTS``,
the scheme's say on TLS (clientv3's ``endpoint.RequiresCredentials``: ``https://`` and
``unixs://`` require it, ``http://`` and ``unix://`` drop it, no scheme leaves it to the flags),
the ``host:port`` gRPC dials and the host and port a TLS probe connects to.  Imports no gRPC.
"""

from __future__ import annotations

import os

from raftkv.client import DEFAULT_ENDPOINT, ENDPOINT_ENV_VARS

_SCHEMES = {"https://": True, "unixs://": True, "http://": False, "unix://": False}


def split_endpoints(value: str) -> list[str]:
    """``http://a:1,b:2`` → ``["http://a:1", "b:2"]`` (order kept, blanks dropped)."""
    return [e.strip() for e in value.split(",") if e.strip()]


def default_endpoints() -> str:
    """The first non-empty endpoint variable, else etcdctl's default."""
    for name in ENDPOINT_ENV_VARS:
        value = os.environ.get(name)
        if value:
            return value
    return DEFAULT_ENDPOINT


def scheme_tls(endpoint: str) -> bool | None:
    """True when the endpoint's scheme requires TLS, False when it rules it out, None when
    it has no scheme."""
    for prefix, tls in _SCHEMES.items():
        if endpoint.startswith(prefix):
            return tls
    return None


def grpc_target(endpoint: str) -> str:
    """The host:port gRPC dials for an etcd endpoint (``http://`` and ``https://`` stripped)."""
    for prefix in _SCHEMES:
        if endpoint.startswith(prefix):
            endpoint = endpoint[len(prefix) :]
            break
    return endpoint.rstrip("/")


def host_port(endpoint: str, default_port: int = 2379) -> tuple[str, int]:
    """The host (brackets of an IPv6 address removed) and port of an endpoint; ValueError when
    the port is not a number."""
    target = grpc_target(endpoint)
    if target.startswith("["):
        host, _, rest = target[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    elif target.count(":") == 1:
        host, _, port = target.partition(":")
    else:
        host, port = target, ""
    return host, int(port) if port else default_port
