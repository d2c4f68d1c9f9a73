"""Joining a running cluster (``--initial-cluster-state existing``): ask it who we are.

Contracts:
- ``cluster_info`` is what a member answers on its peer port to a member that is joining: the
  cluster ID, the member list, the removed IDs and the cluster version, as JSON;
- ``discover`` asks the other members named in ``--initial-cluster`` in turn and returns the
  cluster ID and this member's ID (the member whose peer URLs are this one's advertised URLs);
  a member whose list lacks this one (it has not applied the ``member add`` yet) does not end
  the search, the others are asked and the round repeated;
  it refuses, with etcd's messages, a member the cluster version does not admit (``incompatible
  with current running cluster``), a removed member, and a member nobody added.
"""

from __future__ import annotations

import asyncio
import json
import logging

from raftkv.peer.framing import ErrorCode, FrameError
from raftkv.peer.security import PLAINTEXT, PeerSecurity
from raftkv.peer.transport import PeerRefusedError, PeerRequestError, fetch_cluster_info
from raftkv.server.applier import Applier
from raftkv.server.bootstrap import (
    BootstrapError,
    ExistingCluster,
    MemberInfo,
    NotAMemberError,
    find_joining_member,
)
from raftkv.server.config import ServerConfig
from raftkv.server.environment import ClusterInfoFetcher
from raftkv.version import SERVER_VERSION, Version, admitted

log = logging.getLogger("raftkv.join")

ROUNDS = 5
ROUND_PAUSE = 1.0


def cluster_info(cluster_id: int, applier: Applier) -> bytes:
    cluster = applier.cluster
    cv = cluster.cluster_version
    return json.dumps(
        {
            "cluster_id": cluster_id,
            "members": [m.to_json() for m in sorted(cluster.members.values(), key=lambda m: m.id)],
            "removed": sorted(cluster.removed),
            "cluster_version": cv.short() if cv else None,
        }
    ).encode()


async def discover(
    cfg: ServerConfig,
    timeout: float,
    security: PeerSecurity = PLAINTEXT,
    fetch: ClusterInfoFetcher = fetch_cluster_info,
) -> ExistingCluster:
    """``fetch``: how a running member is asked (``MemberEnvironment.fetch_cluster_info``)."""
    urls = [
        url
        for name, member_urls in cfg.initial_cluster_map().items()
        if name != cfg.name
        for url in member_urls
    ]
    if not urls:
        raise BootstrapError(
            "--initial-cluster-state existing: --initial-cluster names no running member to ask"
        )
    failures: dict[str, str] = {}
    not_listed: NotAMemberError | None = None
    for attempt in range(ROUNDS):
        for url in urls:
            try:
                body = await fetch(url, timeout=timeout, security=security)
            except PeerRefusedError as exc:
                if exc.code is ErrorCode.INCOMPATIBLE_VERSION:
                    # The text is the running member's: "local" there is that member.
                    raise BootstrapError(
                        f"incompatible with current running cluster: the member at {url} "
                        f"refused raftkv {SERVER_VERSION} ({exc.text})"
                    ) from None
                failures[url] = exc.text
                continue
            except (OSError, TimeoutError, FrameError, PeerRequestError) as exc:
                failures[url] = str(exc) or type(exc).__name__
                continue
            try:
                return _join_as(cfg, json.loads(body))
            except NotAMemberError as exc:
                # That member may not have applied the ``member add`` yet: ask the others.
                not_listed = exc
                failures[url] = str(exc)
                continue
        if attempt + 1 < ROUNDS:
            await asyncio.sleep(ROUND_PAUSE)
    if not_listed is not None and all(why == str(not_listed) for why in failures.values()):
        raise not_listed
    detail = "; ".join(f"{u}: {why}" for u, why in failures.items())
    raise BootstrapError(f"cannot fetch cluster info from peer urls: {detail}")


def _join_as(cfg: ServerConfig, info: dict[str, object]) -> ExistingCluster:
    version = info.get("cluster_version")
    if isinstance(version, str):
        cv = Version.parse(version)
        if not admitted(SERVER_VERSION, cv):
            raise BootstrapError(
                f"incompatible with current running cluster: the cluster version is "
                f"{cv.short()}, this raftkv is {SERVER_VERSION}"
            )
    members = [MemberInfo.from_json(m) for m in info["members"]]  # type: ignore[attr-defined]
    removed = {int(i) for i in info.get("removed") or ()}  # type: ignore[attr-defined]
    member_id = find_joining_member(cfg, members, removed)
    cluster_id = int(info["cluster_id"])  # type: ignore[call-overload]
    log.info("joining cluster %x as member %x", cluster_id, member_id)
    return ExistingCluster(cluster_id, member_id, tuple(members))
