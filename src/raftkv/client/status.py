"""Maintenance.Status with raftkv's own versions: the client side's one reader of them.

A raftkv member keeps etcd's ``version`` field of StatusResponse at the etcd API level it
serves (``3.5.0``: etcd clients parse it) and sends its own versions as gRPC initial metadata of
the Status call: ``raftkv-version`` (the server's release, ``0.2.0``), ``raftkv-cluster-version``
(``major.minor`` the cluster runs at, ``0.2``; empty until the leader decided it) and
``etcd-api-version``.  Its storage version travels in etcd 3.6's ``storageVersion`` field.

Owns: those metadata key names on the client side, ``MemberVersions`` and
``status_with_versions``, used by ``raftkv endpoint status`` and ``raftkv check consistency``.
A plain etcd sends no such metadata: every raftkv value is then empty.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

RAFTKV_VERSION_KEY = "raftkv-version"
CLUSTER_VERSION_KEY = "raftkv-cluster-version"
ETCD_API_VERSION_KEY = "etcd-api-version"


@dataclass(frozen=True)
class MemberVersions:
    """What one member said about its versions; ``""`` where it said nothing."""

    server: str = ""  # raftkv's release the member runs (raftkv-version)
    cluster: str = ""  # the cluster version as this member applied it (raftkv-cluster-version)
    storage: str = ""  # StatusResponse.storageVersion (etcd 3.6's field; raftkv fills it)
    etcd_api: str = ""  # etcd-api-version

    @property
    def is_raftkv(self) -> bool:
        return bool(self.server)


def versions_from(metadata: Iterable[Any] | None, status: Any) -> MemberVersions:
    """The versions carried by a Status call's initial metadata and its response."""
    md: dict[str, str] = {}
    for item in metadata or ():
        key, value = item[0], item[1]
        md[str(key).lower()] = value.decode() if isinstance(value, bytes) else str(value)
    return MemberVersions(
        server=md.get(RAFTKV_VERSION_KEY, ""),
        cluster=md.get(CLUSTER_VERSION_KEY, ""),
        storage=str(getattr(status, "storageVersion", "") or ""),
        etcd_api=md.get(ETCD_API_VERSION_KEY, ""),
    )


def status_with_versions(maintenance: Any, timeout: float) -> tuple[Any, MemberVersions]:
    """Maintenance.Status on ``maintenance`` (a MaintenanceStub) and the member's versions;
    raises grpc.RpcError as the plain call does."""
    from raftkv.proto import rpc_pb2

    resp, call = maintenance.Status.with_call(rpc_pb2.StatusRequest(), timeout=timeout)
    return resp, versions_from(call.initial_metadata(), resp)
