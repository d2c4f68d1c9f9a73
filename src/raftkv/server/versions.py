"""Version discipline at run time: the leader decides the cluster version, downgrades are
enabled, cancelled and finished as etcd 3.6 does them.

Contracts:
- only the leader proposes a cluster version: the lowest ``major.minor`` published by the
  voters (``MemberInfo.version``), and only once every voter has published one; it moves up
  one minor at a time and never down, except to an enabled downgrade's target;
- ``downgrade validate|enable|cancel VERSION`` answer with etcd's errors: the target must be
  exactly one minor below the cluster version (``invalid downgrade target version``), one
  downgrade at a time (``cluster has a downgrade job in progress``), cancel needs one
  (``no inflight downgrade job``);
- with a downgrade enabled the cluster version is held at its target, so members of the target
  version can replace the newer ones one at a time; once every member runs the target, the
  leader ends the downgrade;
- a member running a version the cluster version does not admit stops (at start-up, and when a
  newer cluster version is applied), with etcd's message.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable

from raftkv import errors
from raftkv.proto import rpc_pb2 as pb
from raftkv.server.applier import Applier
from raftkv.server.proposals import Proposer
from raftkv.server.raft_node import RaftNode
from raftkv.server.reads import ReadBarrier
from raftkv.server.requests import AUTH_SINCE, RequestKind
from raftkv.version import (
    ETCD_API_VERSION,
    MIN_CLUSTER_VERSION,
    SERVER_VERSION,
    Version,
    admitted,
)

log = logging.getLogger("raftkv.versions")

FIRST_DOWNGRADE_TARGET = Version(0, 2)
"""The oldest release that knows downgrades (and the cluster version): a cluster is never
downgraded below it (as etcd refuses targets older than 3.5)."""

MONITOR_INTERVAL = 1.0
"""Seconds between the leader's cluster-version decisions (etcd: monitorVersionInterval)."""


class IncompatibleVersionError(RuntimeError):
    """This member's version is outside what the cluster admits; the message says which."""


class Versions:
    def __init__(
        self,
        *,
        applier: Applier,
        raft: RaftNode,
        proposer: Proposer,
        barrier: ReadBarrier,
        header: Callable[[], pb.ResponseHeader],
    ) -> None:
        self.applier = applier
        self.header = header
        self.raft = raft
        self.proposer = proposer
        self.barrier = barrier
        self.mixed_versions = False  # raftkv_cluster_mixed_versions

    @property
    def cluster_version(self) -> Version | None:
        return self.applier.cluster.cluster_version

    def check_admitted(self) -> None:
        """Stop (``IncompatibleVersionError``) a member the cluster version does not admit."""
        cv = self.cluster_version
        if cv is None or admitted(SERVER_VERSION, cv):
            return
        if cv > SERVER_VERSION.minor_version:
            raise IncompatibleVersionError(
                f"cluster cannot be downgraded (current version: {SERVER_VERSION} is lower "
                f"than determined cluster version: {cv.short()})"
            )
        raise IncompatibleVersionError(
            f"incompatible with current running cluster: raftkv {SERVER_VERSION} needs a "
            f"cluster version of at least {MIN_CLUSTER_VERSION.short()}, the cluster is at "
            f"{cv.short()} (upgrade one minor version at a time)"
        )

    def metadata(self) -> tuple[tuple[str, str], ...]:
        """raftkv's versions, sent beside etcd's fields (gRPC metadata of Status)."""
        cv = self.cluster_version
        return (
            ("raftkv-version", str(SERVER_VERSION)),
            ("raftkv-cluster-version", cv.short() if cv else ""),
            ("etcd-api-version", ETCD_API_VERSION),
        )

    # -- the leader's decision --------------------------------------------------------------

    def decide(self) -> tuple[Version | None, bool]:
        """(the cluster version the leader should set now or None, whether the downgrade is
        finished), from the replicated member list (etcd's decideClusterVersion)."""
        cluster = self.applier.cluster
        published = [m.version for m in cluster.voters()]
        learners = [m.version for m in cluster.members.values() if m.is_learner]
        mixed = len({v for v in published + learners if v}) > 1
        if mixed and not self.mixed_versions:
            log.warning(
                "members run different raftkv versions (a rolling upgrade or downgrade in "
                "progress?): %s",
                ", ".join(
                    f"{m.id:x}={m.version or 'unknown'}"
                    for m in sorted(cluster.members.values(), key=lambda m: m.id)
                ),
            )
        self.mixed_versions = mixed
        if not published or not all(published):
            return None, False  # a voter has not published a version yet: wait
        lowest = min(Version.parse(v).minor_version for v in published)
        current = cluster.cluster_version
        downgrade = cluster.downgrade
        if downgrade is not None:
            everyone = [Version.parse(v).minor_version for v in published + learners if v]
            done = all(v == downgrade.target for v in everyone)
            if current != downgrade.target:
                return downgrade.target, False
            return None, done
        if current is None:
            return lowest, False
        if current < lowest:
            return min(lowest, current.next_minor()), False  # one minor at a time
        return None, False

    async def run(self) -> None:
        """The leader's monitor (a member task): set the cluster version, end a downgrade."""
        while True:
            # A new cluster gets its first version as soon as its voters have published.
            await asyncio.sleep(MONITOR_INTERVAL if self.cluster_version else 0.1)
            if not self.raft.is_leader:
                self.decide()  # keeps the mixed-version flag current on followers too
                continue
            target, downgrade_done = self.decide()
            if target is not None:
                log.info("setting the cluster version to %s", target.short())
                await self.proposer.propose_quietly(
                    RequestKind.CLUSTER_VERSION, target.short().encode()
                )
            if downgrade_done:
                log.info("every member runs the downgrade target: the downgrade is finished")
                await self.proposer.propose_quietly(RequestKind.DOWNGRADE, _downgrade_body(None))

    # -- Maintenance.Downgrade ------------------------------------------------------------

    async def downgrade(self, req: pb.DowngradeRequest) -> pb.DowngradeResponse:
        if req.action == pb.DowngradeRequest.CANCEL:
            await self.barrier.wait()
            if self.applier.cluster.downgrade is None:
                raise errors.ERR_NO_INFLIGHT_DOWNGRADE
            await self.proposer.propose(RequestKind.DOWNGRADE, _downgrade_body(None))
            return self._response()
        target = _target_version(req.version)
        await self._validate(target)
        if req.action == pb.DowngradeRequest.ENABLE:
            await self.proposer.propose(RequestKind.DOWNGRADE, _downgrade_body(target))
            log.info("downgrade to %s enabled", target.short())
        return self._response()

    async def _validate(self, target: Version) -> None:
        await self.barrier.wait()
        cv = self.cluster_version
        if cv is None:
            raise errors.ERR_CLUSTER_VERSION_UNAVAILABLE
        if target != cv.previous_minor():
            raise errors.ERR_INVALID_DOWNGRADE_TARGET_VERSION
        if self.applier.cluster.downgrade is not None:
            raise errors.ERR_DOWNGRADE_IN_PROCESS
        if target < FIRST_DOWNGRADE_TARGET:
            raise errors.ERR_INVALID_DOWNGRADE_TARGET_VERSION
        if target < AUTH_SINCE and not self.applier.auth.pristine:
            log.warning(
                "downgrade to %s refused: auth has been used and raftkv %s has none",
                target.short(),
                target.short(),
            )
            raise errors.ERR_INVALID_DOWNGRADE_TARGET_VERSION

    def _response(self) -> pb.DowngradeResponse:
        """etcd's answer: the header and the cluster version as ``major.minor``."""
        cv = self.cluster_version
        return pb.DowngradeResponse(header=self.header(), version=cv.short() if cv else "")


def _target_version(text: str) -> Version:
    try:
        return Version.parse(text).minor_version
    except ValueError:
        raise errors.ERR_WRONG_DOWNGRADE_VERSION_FORMAT from None


def _downgrade_body(target: Version | None) -> bytes:
    if target is None:
        return json.dumps({"enabled": False}).encode()
    return json.dumps({"enabled": True, "target": target.short()}).encode()
