"""Proposals and the registry of requests waiting for their entry to be applied.

Owns: request IDs, the wait registry (request ID -> the future its proposer awaits), the
deadline of every proposal, and the translation of the ways a proposal can fail into etcd's
errors.  The applier resolves a waiter when the request's entry is applied (``waiters`` is
handed to it); the Ready loop fails a waiter whose proposal the Raft core dropped.

Contracts:
- ``propose`` returns the applied answer of exactly one committed entry, or raises etcd's
  error: ``no leader`` when it cannot be proposed, ``request timed out`` after
  ``request_timeout``, ``request is too large`` above ``max_request_bytes``; the kind must be
  one the cluster version allows (``allowed``), else ``not capable``;
- a conf change carries its request ID in its context, so its waiter gets the member list
  after it (or the error that refused it) like any request;
- a waiter leaves the registry when its request ends, whichever way.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from raftkv import errors
from raftkv.auth.tokens import AuthInfo
from raftkv.raft.errors import ProposalDroppedError
from raftkv.raft.types import ConfChange
from raftkv.server.deadlines import Deadlines
from raftkv.server.raft_node import RaftNode
from raftkv.server.requests import (
    FIRST_VERSION,
    KIND_SINCE,
    RequestIdGenerator,
    RequestKind,
    encode_request,
)
from raftkv.version import Version

log = logging.getLogger("raftkv.proposals")

VERSION_POLL = 0.1


class Proposer:
    def __init__(
        self,
        *,
        member_id: int,
        raft: RaftNode,
        request_timeout: float,
        max_request_bytes: int,
        cluster_version: Callable[[], Version | None],
        first_request_ms: int,
    ) -> None:
        """``first_request_ms``: the wall clock in milliseconds, seeding request IDs (etcd's
        idutil)."""
        self.raft = raft
        self.request_timeout = request_timeout
        self.max_request_bytes = max_request_bytes
        self._cluster_version = cluster_version
        self._ids = RequestIdGenerator(member_id, first_request_ms)
        self._deadlines = Deadlines(request_timeout, errors.ERR_TIMEOUT)
        self.waiters: dict[int, asyncio.Future[Any]] = {}
        self.failed = 0  # etcd_server_proposals_failed_total

    def allowed(self, kind: RequestKind) -> bool:
        """Whether the cluster version lets ``kind`` be proposed (a kind newer than some
        voter must never reach that voter's log)."""
        since = KIND_SINCE[kind]
        if since <= FIRST_VERSION:
            return True
        cv = self._cluster_version()
        return cv is not None and cv >= since

    async def _wait_allowed(self, kind: RequestKind) -> None:
        """``not capable`` unless the cluster version comes to allow ``kind``: a cluster whose
        first version is not decided yet (just started) is waited for, up to the request
        timeout."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.request_timeout
        while self._cluster_version() is None and loop.time() < deadline:
            await asyncio.sleep(VERSION_POLL)
        if not self.allowed(kind):
            raise errors.ERR_NOT_CAPABLE

    async def propose(self, kind: RequestKind, body: bytes, who: AuthInfo | None = None) -> Any:
        """Propose one request and return its applied answer (see the module contract).
        ``who`` (auth enabled) goes into the entry, for the checks made at apply."""
        if len(body) > self.max_request_bytes:
            raise errors.ERR_REQUEST_TOO_LARGE
        if not self.allowed(kind):  # not awaited on the hot path: PUT is never gated
            await self._wait_allowed(kind)
        request_id = self._ids.next()
        if who is None:
            data = encode_request(kind, request_id, body)
        else:
            data = encode_request(kind, request_id, body, who.username, who.revision)
        return await self._await(request_id, lambda fut: self.raft.propose(data, fut))

    async def propose_conf_change(self, cc: ConfChange, context_body: bytes) -> Any:
        """Propose a membership change whose context is ``context_body`` (a ``MemberChange``)
        under a request ID; returns the member list after it, or raises the error that
        refused it (at apply, etcd's rules; before, ``a membership change is already in
        progress`` while the leader holds one not yet applied)."""
        if not self.allowed(RequestKind.MEMBER_CHANGE):
            await self._wait_allowed(RequestKind.MEMBER_CHANGE)
        request_id = self._ids.next()
        context = encode_request(RequestKind.MEMBER_CHANGE, request_id, context_body)

        def send(fut: asyncio.Future[Any]) -> None:
            self.raft.propose_conf_change(ConfChange(cc.type, cc.node_id, context))

        return await self._await(request_id, send)

    async def _await(self, request_id: int, send: Callable[[asyncio.Future[Any]], None]) -> Any:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()
        deadline = self._deadlines.add(fut, loop)
        waiters = self.waiters
        waiters[request_id] = fut
        try:
            if not self.raft.lead:
                try:
                    async with asyncio.timeout_at(deadline):
                        await self.raft.wait_leader()
                except TimeoutError:
                    raise errors.ERR_TIMEOUT from None
            send(fut)
            return await fut
        except ProposalDroppedError as exc:
            self.failed += 1
            if "configuration change is already pending" in str(exc):
                raise errors.ERR_CONF_CHANGE_PENDING from None
            raise errors.ERR_NO_LEADER from None
        except (errors.ERR_TIMEOUT, asyncio.CancelledError):
            self.failed += 1  # as etcd: a proposal whose request ended unanswered
            raise
        finally:
            waiters.pop(request_id, None)
            if not fut.done():
                fut.cancel()  # the caller went away: nobody will read it
            elif not fut.cancelled():
                # Its deadline failed it while the call still waited for a leader (and
                # answered the timeout itself): nobody else reads it.
                fut.exception()

    async def propose_quietly(
        self, kind: RequestKind, body: bytes, who: AuthInfo | None = None
    ) -> None:
        """Propose a member-internal request whose failure only needs a debug line (the
        duty that proposed it tries again on its next round)."""
        try:
            await self.propose(kind, body, who)
        except errors.EtcdError as exc:
            log.debug("internal proposal %s failed: %s", kind.name, exc.message)

    def close(self) -> None:
        self._deadlines.close()
