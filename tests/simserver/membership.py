"""Membership changes in a simulation, made as an operator makes them: through the members' own
Cluster service, one at a time.

Owns: ``MembershipChanges`` — adding a learner (``MemberAdd`` with ``isLearner``, then a new
member started with ``--initial-cluster-state existing``, which asks a running member for the
member list and catches up by snapshot and log), promoting it (``MemberPromote``, retried while
etcd's "not in sync" refuses it) and removing a voter (``MemberRemove``, never below three
voters; the removed member stops by itself and never comes back).

Contracts:
- at most one change is in flight; one that fails (no leader, a partition, etcd's refusals)
  is not retried; one whose answer was lost may still have taken effect;
- ``SimMember.learner`` and ``SimMember.removed`` follow what the cluster answered; a member
  whose removal was asked (``SimMember.removal_asked``) may stop as removed without an
  answer, and then counts as removed.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from typing import Any

from raftkv.proto import rpc_pb2 as pb
from tests.simserver.clients import call_member
from tests.simserver.loop import VirtualLoop
from tests.simserver.members import SimMember

MAX_MEMBERS = 5
MIN_VOTERS = 3
CALL_TIMEOUT = 5.0


class MembershipChanges:
    def __init__(
        self,
        *,
        loop: VirtualLoop,
        members: list[SimMember],
        rng: random.Random,
        new_member: Callable[[int, str], SimMember],
        peer_url: Callable[[int], str],
        note: Callable[[str], None],
    ) -> None:
        """``new_member(index, initial_cluster)``: member ``m<index>`` joining a running
        cluster, not started."""
        self.loop = loop
        self.members = members
        self.rng = rng
        self.new_member = new_member
        self.peer_url = peer_url
        self.note = note
        self._busy = False
        self._task: asyncio.Task[None] | None = None

    def current(self) -> list[SimMember]:
        return [m for m in self.members if not m.removed]

    def start(self, kind: str) -> bool:
        """Begin change ``kind`` ("add a learner", "promote the learner", "remove a voter") in
        the background; False when none is possible now."""
        if self._busy:
            return False
        current = self.current()
        learners = [m for m in current if m.learner]
        voters = [m for m in current if not m.learner]
        if kind == "add a learner" and not learners and len(current) < MAX_MEMBERS:
            work = self._add()
        elif kind == "promote the learner" and learners:
            work = self._promote(learners[0])
        elif kind == "remove a voter" and len(voters) > MIN_VOTERS and not learners:
            work = self._remove(self.rng.choice(voters))
        else:
            return False
        self._busy = True
        self._task = self.loop.create_task(work)
        self._task.add_done_callback(self._done)
        return True

    async def settle(self) -> None:
        """Wait for the change in flight, if any (healing waits: a member it adds must be in
        the member list the final checks read)."""
        if self._task is not None:
            await asyncio.wait([self._task])

    def _done(self, task: asyncio.Task[None]) -> None:
        self._busy = False
        if not task.cancelled() and task.exception() is not None:
            raise task.exception()  # type: ignore[misc]

    async def _ask(self, request: Callable[[Any, Any], Any]) -> Any:
        up = [m for m in self.current() if m.up]
        if not up:
            return None
        answer, outcome = await call_member(
            self.loop, self.rng.choice(up), request, CALL_TIMEOUT, "operator"
        )
        if answer is None:
            self.note(f"  membership change failed: {outcome}")
        return answer

    async def _add(self) -> None:
        index = len(self.members)
        url = self.peer_url(index)
        req = pb.MemberAddRequest(peerURLs=[url], isLearner=True)
        resp = await self._ask(lambda s, ctx: s.cluster.MemberAdd(req, ctx))
        if not isinstance(resp, pb.MemberAddResponse):
            return
        initial = ",".join(f"{m.name}={self.peer_url(m.index)}" for m in self.current())
        member = self.new_member(index, f"{initial},m{index}={url}")
        member.learner = True
        member.known_id = resp.member.ID
        self.members.append(member)
        member.start()
        self.note(f"added learner m{index} ({resp.member.ID:x})")

    async def _promote(self, learner: SimMember) -> None:
        member_id = _member_id(learner)
        if member_id is None:
            return
        req = pb.MemberPromoteRequest(ID=member_id)
        for _ in range(5):
            resp = await self._ask(lambda s, ctx: s.cluster.MemberPromote(req, ctx))
            if isinstance(resp, pb.MemberPromoteResponse):
                learner.learner = False
                self.note(f"promoted {learner.name}")
                return
            await asyncio.sleep(1.0)  # not in sync with the leader yet

    async def _remove(self, voter: SimMember) -> None:
        member_id = _member_id(voter)
        if member_id is None:
            return
        req = pb.MemberRemoveRequest(ID=member_id)
        voter.removal_asked = True
        resp = await self._ask(lambda s, ctx: s.cluster.MemberRemove(req, ctx))
        if isinstance(resp, pb.MemberRemoveResponse):
            voter.removed = True
            self.note(f"removed {voter.name}")


def _member_id(m: SimMember) -> int | None:
    return m.known_id
