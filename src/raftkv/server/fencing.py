"""Which client requests this member may serve now: fencing by CORRUPT alarms, and learners.

Contracts:
- ``check`` refuses every client request with etcd's ``corrupt cluster`` (DataLoss) while
  this member is fenced: its state is known broken (apply met a corrupt value) or a CORRUPT
  alarm names it (policy ``member``), or any CORRUPT alarm is active (policy ``cluster``, as
  etcd);
- ``check_voter`` also refuses, as etcd's learners do, what a learner must not serve (writes,
  linearizable reads, lease and watch streams): ``rpc not supported for learner``; so does a
  member that is no voter of the configuration it knows (a joining member before its snapshot).
"""

from __future__ import annotations

from collections.abc import Callable

from raftkv import errors
from raftkv.proto import rpc_pb2 as pb


class Fence:
    def __init__(
        self,
        *,
        member_id: int,
        alarms: Callable[[], set[tuple[int, int]]],
        policy: str,
        is_learner: Callable[[], bool],
    ) -> None:
        self.member_id = member_id
        self._alarms = alarms
        self._policy = policy
        self._is_learner = is_learner
        # True from apply meeting a corrupt stored value until a repair verified the new state.
        self.state_broken = False

    def check(self) -> None:
        if self.state_broken:
            raise errors.ERR_CORRUPT
        corrupt = {m for m, alarm in self._alarms() if alarm == pb.CORRUPT}
        if not corrupt:
            return
        if self.member_id in corrupt or self._policy == "cluster":
            raise errors.ERR_CORRUPT

    def check_voter(self) -> None:
        self.check()
        if self._is_learner():
            raise errors.ERR_NOT_SUPPORTED_FOR_LEARNER

    def is_fenced(self) -> bool:
        """True while ``check`` refuses this member's client requests."""
        try:
            self.check()
        except errors.EtcdError:
            return True
        return False

    def self_alarmed(self) -> bool:
        """This member's own state is known diverged or broken (not merely another's)."""
        return self.state_broken or (self.member_id, int(pb.CORRUPT)) in self._alarms()
