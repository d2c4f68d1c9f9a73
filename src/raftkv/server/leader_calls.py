"""Requests a member sends its leader over the peer transport (lease keepalives and TTLs,
membership changes, a learner's readiness).

Contract: ``ask_leader`` waits for a known leader (etcd's ``request timed out`` when none
appears within ``timeout``), then sends ``payload`` to it and returns its answer; a leader that
does not answer raises ``PeerRequestError``, which the caller maps to what its request means.
"""

from __future__ import annotations

import asyncio

from raftkv import errors
from raftkv.server.environment import MemberTransport
from raftkv.server.raft_node import RaftNode


async def wait_for_leader(raft: RaftNode, timeout: float) -> int:
    """The leader's ID, once one is known; ``request timed out`` after ``timeout``."""
    try:
        async with asyncio.timeout(timeout):
            await raft.wait_leader()
    except TimeoutError:
        raise errors.ERR_TIMEOUT from None
    return raft.lead


async def ask_leader(
    raft: RaftNode, transport: MemberTransport, kind: str, payload: bytes, timeout: float
) -> bytes:
    lead = await wait_for_leader(raft, timeout)
    return await transport.request(lead, kind, payload, timeout=timeout)
