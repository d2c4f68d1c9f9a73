"""The member's etcd services, built once: the gRPC server registers them and the JSON
gateway calls the very same objects, so both paths run one set of checks (fencing, auth,
validation) and give one set of errors.
"""

from __future__ import annotations

from dataclasses import dataclass

from raftkv.api.auth import AuthService
from raftkv.api.cluster import ClusterService
from raftkv.api.kv import KVService
from raftkv.api.lease import LeaseService
from raftkv.api.maintenance import MaintenanceService
from raftkv.api.watch import WatchService
from raftkv.server.member import Member


@dataclass(frozen=True)
class Services:
    kv: KVService
    watch: WatchService
    lease: LeaseService
    cluster: ClusterService
    maintenance: MaintenanceService
    auth: AuthService


def build_services(member: Member) -> Services:
    return Services(
        kv=KVService(member.kv, member.auth),
        watch=WatchService(member, member.auth),
        lease=LeaseService(member.leases, member.auth),
        cluster=ClusterService(member.membership, member.auth),
        maintenance=MaintenanceService(member.maintenance, member.versions, member.auth),
        auth=AuthService(member.auth),
    )
