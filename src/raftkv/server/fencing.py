"""Which client requests this member may serve now: fencing by CORRUPT alarms, by the guard's
verdict, and learners.

Owns: the ``Fence`` every client request passes, the guard verdict a leader sends a member it
names as diverged (``Verdict``, its wire and file encoding, the ``guard-verdict`` peer
handler), and the durable record of a verdict this member accepted (``member/guard-verdict``).

Contracts:
- ``check`` refuses every client request with etcd's ``corrupt cluster`` (DataLoss) while
  this member is fenced: its state is known broken (apply met a corrupt value), a CORRUPT
  alarm names it (policy ``member``), any CORRUPT alarm is active (policy ``cluster``, as
  etcd), or it accepted a guard verdict naming it;
- ``check_voter`` also refuses, as etcd's learners do, what a learner must not serve (writes,
  linearizable reads, lease and watch streams): ``rpc not supported for learner``; so does a
  member that is no voter of the configuration it knows (a joining member before its snapshot);
- a guard verdict reaches the named member directly, so a member that cannot apply the alarm
  entry (its log conflicts with the leader's, or it follows another term) still fences itself.
  It is accepted only when the sender the transport bound to the connection (``frm``) is in
  this member's current membership, is not this member, and is the one the verdict says sent
  it (its ``leader_id``), and only when it names this member; anything else is dropped and
  logged (a warning once per sender).
  A verdict older than this member's last repair (its ``at_index`` below the index the repair
  unfenced at) is stale and dropped.  A verdict whose evidence is only the CORRUPT alarm
  (``EVIDENCE_ALARM``: a leader resending to an alarmed member) is not recorded when this
  member has applied that alarm itself: the replicated alarm fences it already;
- a verdict can only fence, never unfence: there is no message that clears it.  Only a
  verified repair (``clear_verdict``, called by ``raftkv.server.repair``) does;
- an accepted verdict is durable before the sender is told so: the file is written to a
  temporary name (mode 0600), fsynced, renamed and its directory fsynced, so a restart does not
  unfence the member before repair; clearing it removes the file and fsyncs the directory.  A
  verdict file that cannot be read at start fences the member all the same;
- the sender ID is only as trustworthy as the peer transport's handshake: on a plaintext peer
  port anyone who reaches it can claim a member's ID, and so can fence a member (never
  unfence one, nor change its data through this path).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Callable, Collection
from dataclasses import asdict, dataclass
from typing import Any

from raftkv import errors
from raftkv.proto import rpc_pb2 as pb
from raftkv.wal.files import fsync_dir

log = logging.getLogger("raftkv.fencing")

VERDICT_KIND = "guard-verdict"
"""The peer request kind carrying a ``Verdict`` to the member it names."""
VERDICT_FILE = "guard-verdict"
"""The verdict this member accepted, under the data dir's ``member/`` (JSON, mode 0600)."""


EVIDENCE_DIGEST = "apply digest"
EVIDENCE_STATE_HASH = "state hash"
EVIDENCE_ALARM = "alarm"
EVIDENCE = (EVIDENCE_DIGEST, EVIDENCE_STATE_HASH, EVIDENCE_ALARM)


class VerdictError(ValueError):
    """Bytes that are not a well-formed verdict."""


@dataclass(frozen=True, slots=True)
class Verdict:
    """The leader's finding that ``member_id`` diverged.

    ``evidence`` is one of ``EVIDENCE``: the apply digests or state hashes a majority of voters
    holds differ from the member's, or (a leader resending) the member is under a CORRUPT
    alarm.  ``at_index`` is the Raft index of the evidence (the index digests were compared
    at, the checkpoint whose state hashes differ, or the leader's applied index when it found
    the member under the alarm); ``first_index`` the first diverging index when the leader
    located it, 0 otherwise; ``reason`` a short text for the logs.
    """

    member_id: int
    leader_id: int
    term: int
    at_index: int
    first_index: int
    evidence: str
    reason: str = ""

    def encode(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True).encode()

    @classmethod
    def decode(cls, raw: bytes) -> Verdict:
        try:
            obj = json.loads(raw)
        except (UnicodeDecodeError, ValueError):
            raise VerdictError("a verdict is a JSON object") from None
        if not isinstance(obj, dict):
            raise VerdictError("a verdict is a JSON object")
        ints = ("member_id", "leader_id", "term", "at_index", "first_index")
        for name in ints:
            value = obj.get(name)
            if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 2**64:
                raise VerdictError(f"verdict field {name!r} must be an unsigned 64-bit integer")
        evidence = obj.get("evidence")
        if evidence not in EVIDENCE:
            raise VerdictError(f"verdict evidence {evidence!r} is not one of {EVIDENCE}")
        reason = obj.get("reason", "")
        if not isinstance(reason, str) or len(reason) > 1024:
            raise VerdictError("verdict field 'reason' must be a short string")
        return cls(
            member_id=obj["member_id"],
            leader_id=obj["leader_id"],
            term=obj["term"],
            at_index=obj["at_index"],
            first_index=obj["first_index"],
            evidence=str(evidence),
            reason=reason,
        )

    def describe(self) -> str:
        where = (
            f"diverged at raft index {self.first_index}"
            if self.first_index
            else "diverged (first index unknown)"
        )
        detail = f" ({self.reason})" if self.reason else ""
        return (
            f"leader {self.leader_id:x} (term {self.term}) named member {self.member_id:x}: "
            f"{where}; evidence: {self.evidence} at raft index {self.at_index}{detail}"
        )


class Fence:
    def __init__(
        self,
        *,
        member_id: int,
        alarms: Callable[[], set[tuple[int, int]]],
        policy: str,
        is_learner: Callable[[], bool],
        members: Callable[[], Collection[int]],
        verdict_dir: str | None = None,
    ) -> None:
        """``members`` gives the IDs of this member's current membership; ``verdict_dir``
        (the data dir's ``member/``) keeps an accepted verdict across restarts (None: in
        memory only, for tests)."""
        self.member_id = member_id
        self._alarms = alarms
        self._policy = policy
        self._is_learner = is_learner
        self._members = members
        self._path = os.path.join(verdict_dir, VERDICT_FILE) if verdict_dir is not None else None
        # True from apply meeting a corrupt stored value until a repair verified the new state.
        self.state_broken = False
        # The guard verdict this member accepted, until a repair verified the new state.
        self.verdict: Verdict | None = self._load()
        self._durable = self.verdict is not None
        self._unfenced_at = 0  # verdicts about evidence below this index are stale
        self._dropped_from: set[int] = set()

    # -- serving clients ------------------------------------------------------------------

    def check(self) -> None:
        if self.state_broken or self.verdict is not None:
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
        """This member's own state is known diverged or broken (not merely another's): apply
        met a corrupt value, a CORRUPT alarm names it, or it accepted a guard verdict."""
        return (
            self.state_broken
            or self.verdict is not None
            or (self.member_id, int(pb.CORRUPT)) in self._alarms()
        )

    # -- guard verdicts -------------------------------------------------------------------

    async def handle_verdict(self, frm: int, payload: bytes) -> bytes:
        """The ``guard-verdict`` peer handler: JSON ``{"fenced": bool, "by": ...}``.

        ``by`` is ``verdict`` (fenced by this or an earlier verdict, recorded) or ``alarm``
        (an alarm-only verdict, and the CORRUPT alarm already applied here); ``fenced`` false
        with ``dropped`` saying why.  Raises ``OSError`` when the verdict could not be made
        durable (the sender retries; the member is fenced in memory meanwhile).
        """
        try:
            answer = self.accept_verdict(frm, Verdict.decode(payload))
        except VerdictError as exc:
            answer = self._drop(frm, f"malformed verdict: {exc}")
        return json.dumps(answer).encode()

    def accept_verdict(self, frm: int, verdict: Verdict) -> dict[str, Any]:
        """Fence this member by ``verdict`` from peer ``frm`` if it passes the checks of the
        module contract; returns the answer for the sender."""
        why = self._refusal(frm, verdict)
        if why is not None:
            return self._drop(frm, why)
        own_alarm = (self.member_id, int(pb.CORRUPT)) in self._alarms()
        if verdict.evidence == EVIDENCE_ALARM and self.verdict is None and own_alarm:
            return {"fenced": True, "by": "alarm"}
        if self.verdict is None:
            self.verdict = verdict
            self._durable = False
            log.error(
                "member %x fenced by the consistency guard's verdict: %s; refusing every "
                "client request until `raftkv member repair %x`",
                self.member_id,
                verdict.describe(),
                self.member_id,
            )
        else:
            log.debug("guard verdict from %x while already fenced: %s", frm, verdict.describe())
        if not self._durable:
            self._persist(self.verdict)
            self._durable = True
        return {"fenced": True, "by": "verdict"}

    def clear_verdict(self, unfenced_at: int) -> None:
        """A repair verified this member's state at or below ``unfenced_at``: forget the
        verdict (durably) and drop verdicts about evidence below that index from now on."""
        self._unfenced_at = max(self._unfenced_at, unfenced_at)
        if self.verdict is None and (self._path is None or not os.path.exists(self._path)):
            return
        if self._path is not None:
            with contextlib.suppress(FileNotFoundError):
                os.remove(self._path)
            fsync_dir(os.path.dirname(self._path))
        if self.verdict is not None:
            log.warning(
                "member %x: guard verdict cleared by repair (%s)",
                self.member_id,
                self.verdict.describe(),
            )
        self.verdict = None
        self._durable = False

    def _refusal(self, frm: int, verdict: Verdict) -> str | None:
        if frm == self.member_id:
            return "a verdict claiming to come from this member itself"
        if frm not in self._members():
            return f"sender {frm:x} is not a member of this cluster"
        if verdict.leader_id != frm:
            return f"sent by {frm:x} in the name of {verdict.leader_id:x}"
        if verdict.member_id != self.member_id:
            return f"it names member {verdict.member_id:x}, not this one"
        if verdict.at_index < self._unfenced_at:
            return (
                f"stale: its evidence at raft index {verdict.at_index} predates this member's "
                f"repair (verified up to {self._unfenced_at})"
            )
        return None

    def _drop(self, frm: int, why: str) -> dict[str, Any]:
        if frm not in self._dropped_from:
            self._dropped_from.add(frm)
            log.warning("dropped a guard verdict from %x: %s", frm, why)
        else:
            log.debug("dropped a guard verdict from %x: %s", frm, why)
        return {"fenced": False, "dropped": why}

    def _persist(self, verdict: Verdict) -> None:
        if self._path is None:
            return
        tmp = self._path + ".tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.fchmod(fd, 0o600)  # an older tmp file may have another mode
            os.write(fd, verdict.encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self._path)
        fsync_dir(os.path.dirname(self._path))

    def _load(self) -> Verdict | None:
        if self._path is None:
            return None
        try:
            with open(self._path, "rb") as f:
                raw = f.read()
        except FileNotFoundError:
            return None
        try:
            verdict = Verdict.decode(raw)
        except VerdictError as exc:
            # Fail closed: the file says this member was fenced; what it says exactly is lost.
            verdict = Verdict(
                self.member_id, 0, 0, 0, 0, EVIDENCE_ALARM, f"unreadable verdict file: {exc}"
            )
        log.error(
            "member %x is fenced by a guard verdict recorded in %s (%s); refusing every client "
            "request until `raftkv member repair %x`",
            self.member_id,
            self._path,
            verdict.describe(),
            self.member_id,
        )
        return verdict
