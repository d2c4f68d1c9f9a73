"""Membership at run time: the Cluster service's calls, this member's published attributes,
and the peer table kept equal to the replicated member list.

Contracts (etcd's rules and messages):
- MemberAdd (voter or learner), MemberRemove, MemberUpdate and MemberPromote each propose one
  conf change and answer with the member list after it was applied; the change itself is
  validated again at apply (``ClusterInfo.validate_change``), so the answer is the same on
  every member;
- ``--strict-reconfig-check`` (on by default) refuses, before proposing, a change that would
  leave the cluster without a healthy quorum: adding a voter while not every voter is
  connected, removing a voter when the voters left connected would not be a quorum
  (``unhealthy cluster``), or when too few members have started (``re-configuration failed
  due to not enough started members``);
- a learner is promoted only when the leader sees its log at 90% or more of its own (etcd's
  ``can only promote a learner member which is in sync with leader``); the check runs on the
  leader (a follower asks it over the peer transport);
- every change is made by the leader (a follower hands it over the peer transport): at most
  one is in flight in the cluster, and the leader refuses a second at once (``a membership
  change is already in progress``, raftkv's: etcd lets it time out) rather than let the Raft
  core drop it silently;
- a member removed from the cluster stops, with etcd's message;
- a member that dials in and is not in this member's member list (it joined after the entry
  this member has applied last: a lagging member, or one that joined and awaits its first
  snapshot) is looked up with the members this one knows; when one of them lists it, it is
  added to the peer table as a *remote* (etcd's remotes), so this member can answer it and
  catch up from it.  A remote never outlives its removal from the cluster.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Coroutine
from typing import Any
from urllib.parse import urlsplit

from raftkv import errors
from raftkv.peer.transport import PeerRequestError
from raftkv.proto import rpc_pb2 as pb
from raftkv.raft.types import ConfChange, ConfChangeType
from raftkv.server.applier import Applier
from raftkv.server.bootstrap import MemberInfo
from raftkv.server.cluster_info import MemberChange
from raftkv.server.config import ServerConfig
from raftkv.server.environment import MemberTransport
from raftkv.server.ids import member_id as make_member_id
from raftkv.server.leader_calls import ask_leader, wait_for_leader
from raftkv.server.proposals import Proposer
from raftkv.server.raft_node import RaftNode
from raftkv.server.reads import ReadBarrier
from raftkv.server.requests import RequestKind
from raftkv.version import SERVER_VERSION

log = logging.getLogger("raftkv.membership")

LEARNER_READY_PERCENT = 0.9
"""etcd's readyPercentThreshold: a learner's match index over the leader's, to be promoted."""
PEER_PROMOTE_CHECK = "learner-ready"
PEER_MEMBER_CHANGE = "member-change"  # JSON {type, node_id, change} -> {} or {"error"}
PEER_MEMBER_INFO = "member-info"  # member ID (8 bytes) -> MemberInfo JSON, b"" if not listed
PUBLISH_RETRY = 0.5
REMOTE_LOOKUP_INTERVAL = 5.0  # seconds between two lookups of one unknown member
REMOTE_LOOKUP_TIMEOUT = 2.0  # per peer asked
MAX_REMOTE_LOOKUPS = 256  # unknown members remembered; beyond, the oldest are forgotten
MAX_LOOKUPS_IN_FLIGHT = 4  # a flood of unknown callers costs the peers at most this many


class Membership:
    def __init__(
        self,
        *,
        member_id: int,
        config: ServerConfig,
        applier: Applier,
        raft: RaftNode,
        transport: MemberTransport,
        proposer: Proposer,
        barrier: ReadBarrier,
        header: Callable[[], pb.ResponseHeader],
        spawn: Callable[[Coroutine[Any, Any, None]], None],
    ) -> None:
        """``spawn`` runs the lookups of unknown members as member tasks."""
        self.member_id = member_id
        self.config = config
        self.applier = applier
        self.raft = raft
        self.transport = transport
        self.proposer = proposer
        self.barrier = barrier
        self.header = header
        self._spawn = spawn
        self._peers: dict[int, tuple[str, ...]] = {}
        # Members known from outside the replicated list: the running members a joining
        # member was told of, and members that dialled in before this member applied their
        # addition (etcd's remotes).
        self._remotes: dict[int, MemberInfo] = {}
        self._lookups: dict[int, float] = {}  # unknown member -> when it was last looked up
        self._in_flight = 0
        self.published = asyncio.Event()
        transport.register_handler(PEER_PROMOTE_CHECK, self._handle_promote_check)
        transport.register_handler(PEER_MEMBER_CHANGE, self._handle_member_change)
        transport.register_handler(PEER_MEMBER_INFO, self._handle_member_info)
        transport.on_unknown_peer = self.unknown_peer

    # -- the Cluster service ----------------------------------------------------------------

    async def member_list(self, req: pb.MemberListRequest) -> pb.MemberListResponse:
        if req.linearizable:
            await self.barrier.wait()
        return pb.MemberListResponse(header=self.header(), members=self._members_pb())

    async def member_add(self, req: pb.MemberAddRequest) -> pb.MemberAddResponse:
        urls = _checked_urls(req.peerURLs)
        self._may_add(req.isLearner)
        mid = make_member_id(urls, self.config.initial_cluster_token, self.applier.clock.wall_ns())
        info = MemberInfo(mid, "", tuple(urls), (), req.isLearner)
        kind = ConfChangeType.ADD_LEARNER_NODE if req.isLearner else ConfChangeType.ADD_NODE
        await self._change(
            ConfChange(kind, mid), MemberChange(info), lambda: mid in self.applier.members
        )
        log.info("added member %x %s (learner: %s)", mid, list(urls), req.isLearner)
        return pb.MemberAddResponse(
            header=self.header(), member=_member_pb(info), members=self._members_pb()
        )

    async def member_remove(self, req: pb.MemberRemoveRequest) -> pb.MemberRemoveResponse:
        current = self.applier.members.get(req.ID)
        if current is None or self.applier.cluster.is_removed(req.ID):
            raise errors.ERR_MEMBER_NOT_FOUND
        self._may_remove(current)
        await self._change(
            ConfChange(ConfChangeType.REMOVE_NODE, req.ID),
            MemberChange(current),
            lambda: self.applier.cluster.is_removed(req.ID),
        )
        log.info("removed member %x", req.ID)
        return pb.MemberRemoveResponse(header=self.header(), members=self._members_pb())

    async def member_update(self, req: pb.MemberUpdateRequest) -> pb.MemberUpdateResponse:
        urls = _checked_urls(req.peerURLs)
        current = self.applier.members.get(req.ID)
        if current is None:
            raise errors.ERR_MEMBER_NOT_FOUND
        info = MemberInfo(req.ID, current.name, tuple(urls), current.client_urls)
        await self._change(
            ConfChange(ConfChangeType.UPDATE_NODE, req.ID),
            MemberChange(info),
            lambda: _peer_urls(self.applier.members.get(req.ID)) == info.peer_urls,
        )
        log.info("updated member %x peer URLs to %s", req.ID, list(urls))
        return pb.MemberUpdateResponse(header=self.header(), members=self._members_pb())

    async def member_promote(self, req: pb.MemberPromoteRequest) -> pb.MemberPromoteResponse:
        current = self.applier.members.get(req.ID)
        if current is None:
            raise errors.ERR_MEMBER_NOT_FOUND
        if not current.is_learner:
            raise errors.ERR_MEMBER_NOT_LEARNER
        await self._learner_ready(req.ID)
        await self._change(
            ConfChange(ConfChangeType.ADD_NODE, req.ID),
            MemberChange(current, promote=True),
            lambda: not _is_learner(self.applier.members.get(req.ID)),
        )
        log.info("promoted learner %x to a voting member", req.ID)
        return pb.MemberPromoteResponse(header=self.header(), members=self._members_pb())

    async def _change(
        self, cc: ConfChange, change: MemberChange, took_effect: Callable[[], bool]
    ) -> None:
        """Make the change through the leader: it alone knows whether another change is in
        flight (a follower's proposal would be dropped silently there), so a follower hands
        the change to it over the peer transport.  The leader's answer can be lost when the
        change removes the leader itself (its streams close as the removal applies): then
        ``took_effect`` on this member's state, once it caught up, decides."""
        timeout = self.proposer.request_timeout
        await wait_for_leader(self.raft, timeout)
        if self.raft.is_leader:
            await self._change_on_leader(cc, change)
            return
        payload = json.dumps(
            {"type": int(cc.type), "node_id": cc.node_id, "change": change.encode().decode()}
        ).encode()
        try:
            reply = await ask_leader(
                self.raft, self.transport, PEER_MEMBER_CHANGE, payload, timeout
            )
        except PeerRequestError as exc:
            # Often the change itself cut the answer off (it removed the leader, or this
            # member dropped its stream to a member it removed): its effect decides.
            log.info("no answer from the leader to a membership change (%s): checking", exc)
            loop = asyncio.get_running_loop()
            deadline = loop.time() + self.proposer.request_timeout
            while not took_effect():
                if loop.time() > deadline:
                    raise errors.ERR_TIMEOUT from None
                await asyncio.sleep(0.05)
            return
        error = json.loads(reply).get("error")
        if error:
            known = errors.lookup(error)
            raise known() if known is not None else errors.ERR_TIMEOUT()
        # The leader applied it; answer with this member's list once it has applied it too.
        await self.barrier.wait()

    async def _change_on_leader(self, cc: ConfChange, change: MemberChange) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.proposer.request_timeout
        while (blocked := self.raft.conf_change_blocked()) == "term-start":
            if loop.time() > deadline:
                raise errors.ERR_TIMEOUT
            await asyncio.sleep(0.05)
        if blocked == "pending":
            raise errors.ERR_CONF_CHANGE_PENDING
        await self.proposer.propose_conf_change(cc, change.encode())

    async def _handle_member_change(self, peer: int, payload: bytes) -> bytes:
        req = json.loads(payload)
        cc = ConfChange(ConfChangeType(req["type"]), int(req["node_id"]))
        try:
            if not self.raft.is_leader:
                raise errors.ERR_NOT_LEADER
            await self._change_on_leader(cc, MemberChange.decode(req["change"].encode()))
        except errors.EtcdError as exc:
            return json.dumps({"error": exc.message}).encode()
        return b"{}"

    def versions_metadata(self) -> tuple[tuple[str, str], ...]:
        """Each member's published raftkv version, as gRPC metadata beside MemberList:
        ``raftkv-member-versions: <id hex>=<version>,...`` (empty: not published yet)."""
        members = sorted(self.applier.members.values(), key=lambda i: i.id)
        return (("raftkv-member-versions", ",".join(f"{m.id:x}={m.version}" for m in members)),)

    def _members_pb(self) -> list[pb.Member]:
        return [_member_pb(i) for i in sorted(self.applier.members.values(), key=lambda i: i.id)]

    # -- strict reconfiguration checks (etcd's mayAddMember / mayRemoveMember) -------------

    def _voters(self) -> list[MemberInfo]:
        return self.applier.cluster.voters()

    def _connected(self, mid: int) -> bool:
        return mid == self.member_id or self.transport.is_connected(mid)

    def _may_add(self, learner: bool) -> None:
        if not self.config.strict_reconfig_check or learner:
            return
        voters = self._voters()
        started = sum(1 for m in voters if m.name)
        total = len(voters) + 1
        if not (started == 1 and total == 2) and started < total // 2 + 1:
            raise errors.ERR_MEMBER_NOT_ENOUGH_STARTED
        if not all(self._connected(m.id) for m in voters):
            raise errors.ERR_UNHEALTHY

    def _may_remove(self, target: MemberInfo) -> None:
        if not self.config.strict_reconfig_check or target.is_learner:
            return
        voters = self._voters()
        started = sum(1 for m in voters if m.name and m.id != target.id)
        remaining = len(voters) - 1
        if remaining > 0 and started < remaining // 2 + 1:
            raise errors.ERR_MEMBER_NOT_ENOUGH_STARTED
        if target.id != self.member_id and not self._connected(target.id):
            return  # a member that is down is not part of the active quorum: safe to remove
        active = sum(1 for m in voters if self._connected(m.id))
        if active - 1 < 1 + (len(voters) - 1) // 2:
            raise errors.ERR_UNHEALTHY

    # -- learner promotion ----------------------------------------------------------------

    async def _learner_ready(self, learner: int) -> None:
        if self.raft.is_leader:
            self._check_learner_ready(learner)
            return
        try:
            reply = await ask_leader(
                self.raft,
                self.transport,
                PEER_PROMOTE_CHECK,
                learner.to_bytes(8, "big"),
                self.proposer.request_timeout,
            )
        except PeerRequestError as exc:
            if errors.ERR_LEARNER_NOT_READY.message in str(exc):
                raise errors.ERR_LEARNER_NOT_READY from None
            raise errors.ERR_TIMEOUT from None
        if reply != b"ok":
            raise errors.ERR_LEARNER_NOT_READY

    def _check_learner_ready(self, learner: int) -> None:
        """On the leader: the learner's log is at least 90% of the leader's (etcd's rule)."""
        status = self.raft.node.status()
        progress = status.progress.get(learner)
        leader = status.progress.get(self.member_id)
        if progress is None or leader is None or not progress.is_learner:
            raise errors.ERR_MEMBER_NOT_LEARNER
        if progress.match < leader.match * LEARNER_READY_PERCENT:
            raise errors.ERR_LEARNER_NOT_READY

    async def _handle_promote_check(self, peer: int, payload: bytes) -> bytes:
        if not self.raft.is_leader:
            raise RuntimeError("not the leader")
        self._check_learner_ready(int.from_bytes(payload, "big"))
        return b"ok"

    # -- this member's attributes and the peer table --------------------------------------

    async def publish(self) -> None:
        """Record this member's name, client URLs and server version in the replicated
        member list (etcd's publish), retrying until it is applied (a member task)."""
        info = MemberInfo(
            self.member_id,
            self.config.name,
            (),
            tuple(self.config.advertise_client_urls),
            version=str(SERVER_VERSION),
        )
        body = json.dumps(info.to_json()).encode()
        while True:
            try:
                await self.proposer.propose(RequestKind.MEMBER_ATTRIBUTES, body)
            except errors.EtcdError:
                await asyncio.sleep(PUBLISH_RETRY)
                continue
            self.published.set()
            return

    def members_changed(self, members: dict[int, MemberInfo]) -> None:
        """Keep the transport's peer table equal to the replicated member list and the
        remotes not removed since, and refuse streams from removed members.  (A member that
        joined has no list until its first snapshot arrives: until then it talks to the
        members it was told of, ``seed``.)"""
        cluster = self.applier.cluster
        known = {
            mid: info for mid, info in self._remotes.items() if not cluster.is_removed(mid)
        } | members
        wanted = {mid: info.peer_urls for mid, info in known.items() if mid != self.member_id}
        for mid in set(self._peers) - set(wanted):
            self.transport.remove_peer(mid)
            del self._peers[mid]
        for mid, urls in sorted(wanted.items()):
            if mid not in self._peers:
                self.transport.add_peer(mid, list(urls))
            elif self._peers[mid] != urls:
                self.transport.update_peer(mid, list(urls))
            self._peers[mid] = urls
        self.transport.set_removed(set(self.applier.cluster.removed))

    def seed(self, members: list[MemberInfo]) -> None:
        """The running members a joining member learnt of before it has a member list."""
        self._remotes.update((m.id, m) for m in members)

    def unknown_peer(self, member_id: int) -> None:
        """The transport refused a stream from ``member_id``, not in the peer table: look it
        up with the known members (at most once per ``REMOTE_LOOKUP_INTERVAL``)."""
        if member_id == self.member_id or self.applier.cluster.is_removed(member_id):
            return
        now = self.applier.clock.monotonic()
        last = self._lookups.get(member_id)
        if last is not None and now - last < REMOTE_LOOKUP_INTERVAL:
            return
        if self._in_flight >= MAX_LOOKUPS_IN_FLIGHT:
            return
        if len(self._lookups) >= MAX_REMOTE_LOOKUPS:
            del self._lookups[next(iter(self._lookups))]
        self._lookups[member_id] = now
        self._in_flight += 1
        self._spawn(self._look_up(member_id))

    async def _look_up(self, member_id: int) -> None:
        try:
            await self._ask_peers_for(member_id)
        finally:
            self._in_flight -= 1

    async def _ask_peers_for(self, member_id: int) -> None:
        for peer in sorted(self._peers):
            try:
                body = await self.transport.request(
                    peer, PEER_MEMBER_INFO, member_id.to_bytes(8, "big"), REMOTE_LOOKUP_TIMEOUT
                )
            except PeerRequestError:
                continue
            if not body:
                continue
            info = MemberInfo.from_json(json.loads(body))
            if info.id != member_id or member_id in self._peers:
                return
            if self.applier.cluster.is_removed(member_id):
                return
            log.info(
                "member %x is not in this member's member list yet; member %x lists it at %s: "
                "added as a remote peer",
                member_id,
                peer,
                ",".join(info.peer_urls),
            )
            self._remotes[member_id] = info
            self.members_changed(dict(self.applier.members))
            return

    async def _handle_member_info(self, peer: int, payload: bytes) -> bytes:
        info = self.applier.members.get(int.from_bytes(payload, "big"))
        return json.dumps(info.to_json()).encode() if info is not None else b""

    def removed_self(self) -> bool:
        return self.applier.cluster.is_removed(self.member_id)


def _peer_urls(info: MemberInfo | None) -> tuple[str, ...]:
    return info.peer_urls if info is not None else ()


def _is_learner(info: MemberInfo | None) -> bool:
    return info is None or info.is_learner


def _member_pb(info: MemberInfo) -> pb.Member:
    return pb.Member(
        ID=info.id,
        name=info.name,
        peerURLs=list(info.peer_urls),
        clientURLs=list(info.client_urls),
        isLearner=info.is_learner,
    )


def _checked_urls(urls: Any) -> list[str]:
    """etcd's ``given member URLs are invalid`` for anything but http(s)://host:port URLs."""
    out = [str(u) for u in urls]
    if not out:
        raise errors.ERR_MEMBER_BAD_URLS
    for url in out:
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError:
            raise errors.ERR_MEMBER_BAD_URLS from None
        if parts.scheme not in ("http", "https") or not parts.hostname or port is None:
            raise errors.ERR_MEMBER_BAD_URLS
        if parts.path not in ("", "/"):
            raise errors.ERR_MEMBER_BAD_URLS
    return sorted(out)
