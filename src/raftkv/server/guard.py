"""The consistency guard of a running member: apply digests compared across the cluster.

Owns: the peer handlers that report this member's apply digests, the leader's periodic
comparison, locating the first diverging Raft index, naming the diverged members by quorum and
raising the CORRUPT alarm for them through Raft, the evidence of mismatches still waiting for a
voter, and the guard's counters.

Contracts (the round's rules live in ``raftkv.guard.digest`` and are shared with the simulator):
- only the leader compares (every ``interval``); any member answers digest queries;
- members are compared at the highest index a majority of ALL voters has applied
  (``majority_index``), so a lagging member does not hold detection back; the digest held by a
  majority of all voters there is the truth (``judge``), each member holding another one is
  named; a member behind that index is compared at its own latest index against the chain of a
  member holding the truth;
- when the members at that index disagree without a majority and the outcome still depends on
  voters that did not report (``awaits_voters``), nobody is named: the lower indexes where a
  lagging voter can settle it are tried (``comparison_indexes``), and otherwise the parties are
  kept in ``GuardCounters.pending`` until a later round (of this leader or the next: every
  member keeps its own digest history, so the evidence is found again) settles it; only when no
  majority can ever form on the reports is every reporter named (the cluster stops writes);
- votes are counted by distinct origins (``raftkv.guard.vouch``): a member holding an
  unconfirmed copy of another's state speaks with that member's voice, unless the dispute is
  about entries it applied itself (``_origins_at``); a member already under a CORRUPT alarm is
  no witness (it is still located); when only copies keep a majority from forming nobody is
  named (``tied_by_copies``), the log says why;
- a backend copy for a lagging member goes only behind ``confirm``: confirmed by a majority of
  origins, or unconfirmed (stamped) when voters are silent, never when one disagrees; a member
  holding a stamped copy clears it once a voter of another origin confirms it
  (``seek_confirmation``, on every member);
- the first diverging index is found by binary search against the member holding the truth
  with the longest history, never against the leader's own chain (the leader may be the one
  that diverged);
- a named member gets one CORRUPT alarm (etcd's ``AlarmType.CORRUPT`` with its member ID),
  raised through Raft so every member learns it; fencing itself is the member's job;
- the verdict also reaches the named member directly (``VerdictSender``, a ``guard-verdict``
  peer request; ``raftkv.server.fencing`` says what the member accepts), because a member whose
  log conflicts with the leader's, or that follows another term, cannot apply the alarm entry.
  The leader sends it to every member a majority of voters names (the state hash check's too;
  not when no majority agrees: the alarm alone stops the cluster then) and to every member its
  applied state has under a CORRUPT alarm, in the background, each round until the member
  answers; a member that answered is not sent another in the same term until its alarm is
  cleared (a repair).
  Each verdict is logged once when queued and once when answered, not per attempt.
"""

from __future__ import annotations

import asyncio
import json
import logging
import struct
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass, field

from raftkv.guard.digest import (
    ApplyDigest,
    NoOverlapError,
    awaits_voters,
    comparison_indexes,
    first_divergence,
    judge,
    tied_by_copies,
)
from raftkv.guard.vouch import CONFIRMED, REFUSED, CopyDecision, CopyVouch, origins_of
from raftkv.guard.vouch import ENCODED_SIZE as _VOUCH_SIZE
from raftkv.peer.transport import PeerRequestError
from raftkv.proto import rpc_pb2 as pb
from raftkv.server.applier import Applier
from raftkv.server.environment import MemberTransport
from raftkv.server.fencing import EVIDENCE_ALARM, EVIDENCE_DIGEST, VERDICT_KIND, Verdict

log = logging.getLogger("raftkv.guard")

CONFIRM_TIMEOUT = 2.0
CONFIRM_RETRY = 0.1

_LATEST = struct.Struct(">QQ16s")  # oldest kept index, latest index, latest digest
# A digest-latest request with this payload is also answered with the member's copy vouch
# (``CopyVouch.encode_optional``) after ``_LATEST``; an empty payload (a member of a version
# before vouches asks so) gets ``_LATEST`` alone, and such a member's answer has no vouch.
_WITH_VOUCH = b"\x01"
_INDEX = struct.Struct(">Q")
REQUEST_TIMEOUT = 1.0


@dataclass(frozen=True, slots=True)
class DigestRange:
    """What a member reports of its digest history: the oldest and latest index it keeps,
    the latest digest, and the vouch of the unconfirmed copy its state is (None: its own)."""

    oldest: int
    latest: int
    digest: bytes
    vouch: CopyVouch | None

    @classmethod
    def decode(cls, raw: bytes) -> DigestRange:
        oldest, latest, digest = _LATEST.unpack_from(raw)
        rest = raw[_LATEST.size :]
        vouch = CopyVouch.decode_optional(rest) if len(rest) == _VOUCH_SIZE else None
        return cls(oldest, latest, digest, vouch)


@dataclass
class GuardCounters:
    checks: int = 0
    apply_digest_mismatch: int = 0
    corruption_detected: int = 0
    last_divergence: dict[int, int] = field(default_factory=dict)  # member -> first bad index
    # member -> index of a mismatch it is party to that no majority of voters settled yet
    pending: dict[int, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class _Evidence:
    """One party of a mismatch waiting for voters: its digest at ``at`` and, per digest another
    party held there, the first index where its chain left that party's (found while both
    chains were at hand: an installed snapshot may replace the diverged one before the
    dispute is settled)."""

    at: int
    digest: bytes
    firsts: dict[bytes, int]


class _CopyDisputedError(Exception):
    """A voter holds another apply digest than this member at the index given."""


class _HistoryMovedOnError(Exception):
    """A member no longer keeps a digest the search for a first divergence needs."""


class _Round:
    """The digests one comparison round gathered: (member, index) -> digest, fetched once."""

    def __init__(self, guard: ConsistencyGuard, ranges: dict[int, tuple[int, int]]) -> None:
        self.guard = guard
        self.ranges = ranges
        self.known: dict[tuple[int, int], bytes | None] = {}

    def covers(self, member: int, index: int) -> bool:
        oldest, latest = self.ranges[member]
        return oldest <= index <= latest

    async def at(self, member: int, index: int) -> bytes | None:
        key = (member, index)
        if key not in self.known:
            self.known[key] = await self.guard.digest_at(member, index)
        return self.known[key]


class VerdictSender:
    """The leader's side of guard verdicts (see the module contract).

    ``name`` queues a verdict for a member the leader just named; ``kick`` starts a delivery
    round in the background unless one is running.  ``alarmed`` gives the members the leader's
    applied state has under a CORRUPT alarm: those get a verdict too (a new leader, or one
    whose earlier verdict was lost), with the first diverging index when this leader found it.
    """

    def __init__(
        self,
        *,
        member_id: int,
        transport: MemberTransport,
        term: Callable[[], int],
        alarmed: Callable[[], Collection[int]],
        applied_index: Callable[[], int],
        first_index: Callable[[int], int],
        timeout: float = REQUEST_TIMEOUT,
    ) -> None:
        self.member_id = member_id
        self.transport = transport
        self.term = term
        self.alarmed = alarmed
        self.applied_index = applied_index
        self.first_index = first_index
        self.timeout = timeout
        self.pending: dict[int, Verdict] = {}
        self.answered: dict[int, int] = {}  # member -> term in which it answered a verdict
        self._alarm_seen: set[int] = set()  # answered members whose alarm this leader applied
        self._task: asyncio.Task[None] | None = None

    def name(
        self, member: int, at_index: int, first_index: int, evidence: str, reason: str = ""
    ) -> None:
        """Queue a verdict naming ``member`` (a majority of voters holds another state than
        its own); none for this member itself (its alarm applies here)."""
        if member == self.member_id:
            return
        term = self.term()
        if self.answered.get(member) == term:
            return  # it is fenced already, durably: until its alarm is cleared (repair)
        verdict = Verdict(member, self.member_id, term, at_index, first_index, evidence, reason)
        if member not in self.pending:
            log.warning("sending member %x the guard's verdict: %s", member, verdict.describe())
        self.pending[member] = verdict
        self.kick()

    def stand_down(self) -> None:
        """No longer the leader: the next leader sends its own verdicts."""
        self.pending.clear()
        self.answered.clear()
        self._alarm_seen.clear()

    def kick(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.ensure_future(self.deliver())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def deliver(self) -> None:
        """One attempt for every verdict due; the answered ones are done."""
        term = self.term()
        alarmed = set(self.alarmed()) - {self.member_id}
        for member in list(self.answered):
            if member in alarmed:
                self._alarm_seen.add(member)
            elif member in self._alarm_seen:  # its alarm was cleared: repaired
                self._alarm_seen.discard(member)
                del self.answered[member]
        for member in sorted(alarmed):
            if member not in self.pending and self.answered.get(member) != term:
                self.pending[member] = Verdict(
                    member,
                    self.member_id,
                    term,
                    self.applied_index(),
                    self.first_index(member),
                    EVIDENCE_ALARM,
                )
        due = dict(self.pending)
        if due:
            await asyncio.gather(*(self._send(v) for v in due.values()))

    async def _send(self, verdict: Verdict) -> None:
        member = verdict.member_id
        try:
            raw = await self.transport.request(member, VERDICT_KIND, verdict.encode(), self.timeout)
            answer = json.loads(raw)
        except (PeerRequestError, ValueError) as exc:
            log.debug("guard verdict to member %x not delivered yet: %s", member, exc)
            return  # retried next round
        if self.pending.get(member) is verdict:
            del self.pending[member]
        self.answered[member] = verdict.term
        if isinstance(answer, dict) and answer.get("fenced") is True:
            log.warning(
                "member %x acknowledged the guard's verdict: fenced (by %s)",
                member,
                answer.get("by", "verdict"),
            )
        else:
            why = answer.get("dropped") if isinstance(answer, dict) else answer
            log.warning("member %x did not accept the guard's verdict: %s", member, why)


class ConsistencyGuard:
    def __init__(
        self,
        *,
        member_id: int,
        applier: Applier,
        transport: MemberTransport,
        voters: Callable[[], tuple[int, ...]],
        is_leader: Callable[[], bool],
        raise_alarm: Callable[[int], Awaitable[None]],
        interval: float,
        term: Callable[[], int] = lambda: 0,
    ) -> None:
        """``term`` gives this member's current Raft term (the verdicts it sends carry it)."""
        self.member_id = member_id
        self.applier = applier
        self.transport = transport
        self.voters = voters
        # Learners are compared too (a joining member is named at its first comparison);
        # only voters decide what the truth is.
        self.learners: Callable[[], tuple[int, ...]] = lambda: ()
        self.is_leader = is_leader
        self.raise_alarm = raise_alarm
        self.interval = interval
        self.counters = GuardCounters()
        self._evidence: dict[int, _Evidence] = {}
        self._split_logged: tuple[str, bool] | None = None
        self._refusals: dict[int, str] = {}  # receiver -> why its copy was last refused
        self.verdicts = VerdictSender(
            member_id=member_id,
            transport=transport,
            term=term,
            alarmed=self._corrupt_alarmed,
            applied_index=applier.applied_index,
            first_index=lambda m: self.counters.last_divergence.get(m, 0),
        )
        applier.on_history_replaced = self._history_replaced
        transport.register_handler("digest-latest", self._handle_latest)
        transport.register_handler("digest-at", self._handle_at)

    # -- answering peers --------------------------------------------------------------------

    async def _handle_latest(self, peer: int, payload: bytes) -> bytes:
        digest = self.applier.digest
        index, value = digest.latest()
        answer = _LATEST.pack(digest.oldest_index(), index, value)
        if payload == _WITH_VOUCH:
            answer += CopyVouch.encode_optional(self.applier.copy_vouch)
        return answer

    def own_range(self) -> DigestRange:
        digest = self.applier.digest
        index, value = digest.latest()
        return DigestRange(digest.oldest_index(), index, value, self.applier.copy_vouch)

    async def range_of(self, member: int, timeout: float = REQUEST_TIMEOUT) -> DigestRange:
        """``member``'s digest range and vouch (this member's own without a request).  Raises
        ``PeerRequestError`` when the peer does not answer."""
        if member == self.member_id:
            return self.own_range()
        raw = await self.transport.request(member, "digest-latest", _WITH_VOUCH, timeout)
        return DigestRange.decode(raw)

    def origin(self) -> int:
        """Whose independent applies this member's state stands for (``raftkv.guard.vouch``)."""
        vouch = self.applier.copy_vouch
        return vouch.origin if vouch is not None else self.member_id

    async def _handle_at(self, peer: int, payload: bytes) -> bytes:
        (index,) = _INDEX.unpack(payload)
        return self.applier.digest.digest_at(index) or b""

    # -- the leader's comparison ------------------------------------------------------------

    async def run(self) -> None:
        try:
            while True:
                await asyncio.sleep(self.interval)
                if self.applier.copy_vouch is not None:
                    await self.seek_confirmation()
                if not self.is_leader():
                    if self.verdicts.pending or self.verdicts.answered:
                        self.verdicts.stand_down()
                    continue
                self.verdicts.kick()
                try:
                    await self.check_once()
                except (PeerRequestError, TimeoutError) as exc:
                    log.debug("digest comparison skipped: %s", exc)
        finally:
            await self.verdicts.stop()

    async def seek_confirmation(self) -> bool:
        """This member holds an unconfirmed copy of another's state: ask the voters of other
        origins whether they hold its digest at the copy's index (or, when they no longer keep
        it, at a later one), and clear the vouch when one does (``raftkv.guard.vouch``).  True
        when it was confirmed now."""
        vouch = self.applier.copy_vouch
        if vouch is None:
            return False
        for peer in self.voters():
            if peer in (self.member_id, vouch.origin):
                continue
            try:
                reported = await self.range_of(peer)
                if reported.vouch is not None and reported.vouch.origin == vouch.origin:
                    continue  # another copy of the same state
                if reported.oldest <= vouch.index <= reported.latest:
                    at = vouch.index  # the copy's own state: a fault after it is not its
                else:  # it no longer keeps that index: any later one covers it
                    at = min(reported.latest, self.applier.digest.latest()[0])
                    if at < max(vouch.index, reported.oldest):
                        continue  # it has not applied the copy's index yet
                mine = self.applier.digest.digest_at(at)
                theirs = await self._peer_digest(peer, reported, at)
            except PeerRequestError:
                continue
            if mine is None or theirs != mine:
                continue  # a mismatch is the leader's comparison to settle
            if self.applier.confirm_copy(vouch):
                log.info(
                    "the copy of member %x's state at index %d this member holds is confirmed: "
                    "member %x holds the same apply digest at index %d",
                    vouch.origin,
                    vouch.index,
                    peer,
                    at,
                )
                return True
        return False

    async def check_once(self) -> list[int]:
        """One comparison round over every voter that answers; returns the members named."""
        voters = self.voters()
        own = self.own_range()
        ranges = {self.member_id: (own.oldest, own.latest)}
        vouches = {self.member_id: own.vouch}
        for peer in (*voters, *self.learners()):
            if peer == self.member_id:
                continue
            try:
                reported = await self.range_of(peer)
            except PeerRequestError:
                continue  # unreachable: judged as not reporting
            ranges[peer] = (reported.oldest, reported.latest)
            vouches[peer] = reported.vouch
        indexes = comparison_indexes(ranges, voters)
        if len(ranges) < 2 or not indexes or indexes[0] == 0:
            return []
        self.counters.checks += 1
        rnd = _Round(self, ranges)
        split = False
        for at in indexes:
            reports: dict[int, bytes] = {}
            for member in ranges:
                if rnd.covers(member, at):
                    value = await rnd.at(member, at)
                    if value is not None:
                        reports[member] = value
            # A member already named is no witness: its chain differs from its first
            # divergence on, whoever else diverged.  It is still located (``_decided``).
            witnesses = {m: v for m, v in reports.items() if not self._already_alarmed(m)}
            origins = await self._origins_at(rnd, witnesses, vouches)
            truth, _outliers = judge(witnesses, voters, origins)
            if truth is not None:
                self._split_logged = None
                outliers = sorted(m for m, v in reports.items() if v != truth)
                return await self._decided(rnd, at, truth, outliers, reports, split)
            if len(set(witnesses.values())) < 2:
                continue
            if not split:
                self.counters.apply_digest_mismatch += 1
            awaiting = awaits_voters(witnesses, voters, origins)
            if not awaiting and not tied_by_copies(witnesses, voters, origins):
                return await self._name_all(witnesses, at)
            if not split:
                split = True
                await self._hold(rnd, witnesses, at)
                self._log_split(at, witnesses, voters, origins, awaiting)
        if not split:
            self._split_logged = None
        return []

    async def _origins_at(
        self, rnd: _Round, reports: dict[int, bytes], vouches: dict[int, CopyVouch | None]
    ) -> dict[int, int]:
        """Whose voice each report is in this comparison (``judge``'s ``origins``).

        A member holding an unconfirmed copy (``raftkv.guard.vouch``) speaks for the copy's
        origin, unless a member reporting another digest here held the copy's own digest at
        the copy's index: then the two sides agreed on everything the copy carried, the
        dispute is about entries the member applied itself, and its report is its own."""
        origins = origins_of({m: vouches.get(m) for m in reports})
        if len(set(reports.values())) < 2:
            return origins
        for member, origin in origins.items():
            vouch = vouches.get(member)
            if origin == member or vouch is None or not rnd.covers(member, vouch.index):
                continue
            carried = await rnd.at(member, vouch.index)
            for other, value in reports.items():
                if value == reports[member] or not rnd.covers(other, vouch.index):
                    continue
                if carried is not None and await rnd.at(other, vouch.index) == carried:
                    origins[member] = member
                    break
        return origins

    def _log_split(
        self,
        at: int,
        reports: dict[int, bytes],
        voters: tuple[int, ...],
        origins: dict[int, int],
        awaiting: bool,
    ) -> None:
        parties = ", ".join(f"{m:x}" for m in sorted(reports))
        if (parties, awaiting) == self._split_logged:
            return  # said once per dispute, not every round
        self._split_logged = (parties, awaiting)
        if awaiting:
            missing = ", ".join(f"{m:x}" for m in sorted(set(voters) - set(reports)))
            log.warning(
                "apply digest mismatch at raft index %d among %s with no majority of "
                "voters: nobody named until voters %s report",
                at,
                parties,
                missing,
            )
            return
        copies = "; ".join(
            f"{m:x} holds an unconfirmed copy of {o:x}'s state"
            for m, o in sorted(origins.items())
            if o != m
        )
        log.error(
            "apply digest mismatch at raft index %d among %s that no vote can settle: %s, "
            "so no majority of independent voters holds one digest; nobody named: compare "
            "the members' data with `raftkv check data` and repair the diverged one",
            at,
            parties,
            copies,
        )

    async def _hold(self, rnd: _Round, reports: dict[int, bytes], at: int) -> None:
        """Keep each party's side of a mismatch at ``at`` until a majority settles it."""
        longest = sorted(reports, key=rnd.ranges.__getitem__)
        for member, mine in reports.items():
            if member in self._evidence or self._already_alarmed(member):
                continue
            firsts: dict[bytes, int] = {}
            for other in longest:
                theirs = reports[other]
                if theirs != mine and theirs not in firsts:
                    first = await self._first_divergence(rnd, member, other, at)
                    if first is not None:
                        firsts[theirs] = first
            self._evidence[member] = _Evidence(at, mine, firsts)
            self.counters.pending[member] = at

    async def _settle_evidence(self, rnd: _Round, at: int, holders: list[int]) -> list[int]:
        """The truth at ``at`` fixes it at every held mismatch's index up to ``at``: each party
        whose digest there was another one is named, whatever it holds now."""
        named = []
        for member, ev in sorted(self._evidence.items()):
            if ev.at > at:
                continue
            truth = None
            for holder in holders:
                if rnd.covers(holder, ev.at):
                    truth = await rnd.at(holder, ev.at)
                    if truth is not None:
                        break
            if truth is None:
                continue  # no truth holder keeps that index any more
            del self._evidence[member]
            self.counters.pending.pop(member, None)
            if ev.digest != truth and not self._already_alarmed(member):
                await self._name(member, ev.firsts.get(truth), ev.at, truth, ev.digest)
                named.append(member)
        return named

    async def _decided(
        self,
        rnd: _Round,
        at: int,
        truth: bytes,
        outliers: list[int],
        reports: dict[int, bytes],
        counted: bool,
    ) -> list[int]:
        """A majority of all voters holds ``truth`` at ``at``: name whoever left its chain."""
        holders = sorted((m for m, v in reports.items() if v == truth), key=rnd.ranges.__getitem__)
        source = holders[0]  # the truth with the longest history
        named = await self._settle_evidence(rnd, at, holders)
        suspects: dict[int, int] = {m: at for m in outliers if m not in named}
        source_oldest = rnd.ranges[source][0]
        for member, (_oldest, latest) in rnd.ranges.items():
            if member in reports or latest > at or latest < source_oldest:
                continue
            mine, theirs = await rnd.at(member, latest), await rnd.at(source, latest)
            if mine is None or theirs is None:
                continue
            if mine != theirs and member not in named:
                suspects[member] = latest
        if not suspects:
            if named and not counted:
                self.counters.apply_digest_mismatch += 1
            return named
        if not counted:
            self.counters.apply_digest_mismatch += 1
        for member, where in sorted(suspects.items()):
            self._evidence.pop(member, None)
            self.counters.pending.pop(member, None)
            if self._already_alarmed(member):
                if member not in self.counters.last_divergence:
                    await self._locate(rnd, member, source, where)
                continue
            first = await self._first_divergence(rnd, member, source, where)
            actual = await rnd.at(member, where)
            expected = await rnd.at(source, where)
            await self._name(member, first, where, expected, actual)
            named.append(member)
        return named

    async def _name_all(self, reports: dict[int, bytes], at: int) -> list[int]:
        """No majority of voters can agree on these reports: every reporter is suspect."""
        named = []
        for member in sorted(reports):
            self._evidence.pop(member, None)
            self.counters.pending.pop(member, None)
            if not self._already_alarmed(member):
                await self._name(member, at, at, None, reports[member])
                named.append(member)
        return named

    async def _name(
        self,
        member: int,
        first: int | None,
        at: int,
        expected: bytes | None,
        actual: bytes | None,
    ) -> None:
        """``first``: the first index where ``member`` left the truth's chain; None when the
        histories moved on before it could be found (``_locate`` tries again later)."""
        self.counters.corruption_detected += 1
        if first is not None:
            self.counters.last_divergence[member] = first
        revision = self.applier.revision_at.get(first) if first is not None else None
        log.error(
            "apply digest mismatch: member %x diverged at raft index %s (revision %s) "
            "(compared at index %d: expected %s, member has %s; %s)",
            member,
            first if first is not None else "unknown",
            revision if revision is not None else "unknown",
            at,
            expected.hex() if expected is not None else "no majority",
            actual.hex() if actual is not None else "nothing",
            "a majority of voters agrees on the expected digest"
            if expected is not None
            else "no majority of voters agrees: every member is suspect",
        )
        if expected is not None:  # first: the member may not be able to apply the alarm
            self.verdicts.name(member, at, first or 0, EVIDENCE_DIGEST)
        await self.raise_alarm(member)

    async def _locate(self, rnd: _Round, member: int, source: int, where: int) -> None:
        """``member`` was named before its first divergent index was known (by a state hash
        check, or by a leader before this one): find it now that a majority's digests show it."""
        first = await self._first_divergence(rnd, member, source, where)
        if first is None:
            return
        self.counters.last_divergence[member] = first
        revision = self.applier.revision_at.get(first)
        log.error(
            "member %x, named diverged before, first left the quorum's apply digests at raft "
            "index %d (revision %s)",
            member,
            first,
            revision if revision is not None else "unknown",
        )

    def _history_replaced(self, replaced: ApplyDigest, installed: ApplyDigest) -> None:
        """A backend swap (an installed snapshot, a repair) replaced this member's digest
        history with the one the new backend carries.  When the new state names this member
        diverged (its CORRUPT alarm) and nobody located it yet (a state hash check named it, or
        it was out of reach until its history was replaced), the replaced history is the last
        evidence of where it left the chain: compared here with the installed one, locally,
        before it is gone.  Only an exact answer is kept (the chains agree at the first index
        both keep and differ at the latest)."""
        me = self.member_id
        if not self._already_alarmed(me) or me in self.counters.last_divergence:
            return
        try:
            first = first_divergence(
                replaced, installed.digest_at, (installed.oldest_index(), installed.latest()[0])
            )
        except NoOverlapError:
            return
        if first is None or first == max(replaced.oldest_index(), installed.oldest_index()):
            return
        self.counters.last_divergence[me] = first
        revision = self.applier.revision_at.get(first)
        log.error(
            "this member (%x), named diverged, first left the apply digests of the state it "
            "installed at raft index %d (revision %s), found by comparing the history the "
            "install replaced",
            me,
            first,
            revision if revision is not None else "unknown",
        )

    def _already_alarmed(self, member: int) -> bool:
        return (member, int(pb.CORRUPT)) in self.applier.alarms

    def _corrupt_alarmed(self) -> list[int]:
        """Members of the configuration under a CORRUPT alarm (a removed one gets no verdict)."""
        known = {*self.voters(), *self.learners()}
        return [m for m, alarm in self.applier.alarms if alarm == pb.CORRUPT and m in known]

    async def confirm(
        self, index: int, receiver: int, timeout: float = CONFIRM_TIMEOUT
    ) -> CopyDecision:
        """Whether this member's state at ``index`` may be copied to ``receiver``.

        ``CONFIRMED`` once voters of a majority of distinct origins hold this member's digest
        at ``index`` (an unconfirmed copy of this member's state is not a second vote for it;
        the receiver does not count): a voter holding another digest is then outvoted, and
        the guard names it.  Without that majority, a voter that holds another digest at
        ``index``, or at its own latest index when it is behind (the receiver's own history
        too: a copy must not overwrite a witness against it), makes it ``REFUSED`` (the guard
        must settle who diverged first; Raft asks again later), and so does this member being
        a party to a mismatch no majority settled yet (``_evidence``).  Voters that have not
        applied ``index`` or do not answer are asked again until ``timeout``; then, with
        nobody disagreeing, the copy is sent all the same (as etcd sends it: a member down or
        lagging must not keep another from catching up), stamped with a ``CopyVouch`` of this
        member's origin."""
        if self.member_id in self._evidence:
            return self._refuse(
                receiver,
                "it is a party to an apply digest mismatch at index "
                f"{self._evidence[self.member_id].at} that no majority of voters settled yet",
            )
        mine = self.applier.digest.digest_at(index)
        voters = self.voters()
        quorum = len(voters) // 2 + 1
        own_origin = self.origin()
        agreed: set[int] = {own_origin} if self.member_id in voters else set()
        if mine is None:  # history moved on (another install): asked again later
            return CONFIRMED if len(agreed) >= quorum else REFUSED
        # A member already named is no witness (its chain differs from its divergence on).
        asked = [v for v in voters if v != self.member_id and not self._already_alarmed(v)]
        answered: dict[int, int | None] = {}  # final answers: origin, or None for a dispute
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            for peer in asked:
                if peer in answered:
                    continue
                try:
                    origin = await self._compare_for_copy(peer, index, mine, deadline)
                except PeerRequestError:
                    continue
                except _CopyDisputedError as exc:
                    answered[peer] = None
                    log.debug("member %x holds another apply digest at index %d", peer, exc.args[0])
                    continue
                if origin is not None:
                    answered[peer] = origin
                    if peer != receiver:
                        agreed.add(origin)
            if len(agreed) >= quorum:
                self._refusals.pop(receiver, None)
                return CONFIRMED
            disputed = [p for p, origin in answered.items() if origin is None]
            undecided = len(asked) - len(answered)
            if disputed and (len(agreed) + undecided < quorum or loop.time() >= deadline):
                return self._refuse(
                    receiver,
                    f"members {', '.join(f'{p:x}' for p in sorted(disputed))} hold another "
                    "apply digest and no majority of independent voters confirms this one",
                )
            if loop.time() >= deadline:
                self._refusals.pop(receiver, None)
                log.warning(
                    "sending %x this member's state at index %d unconfirmed: no majority of "
                    "independent voters could confirm its apply digest within %.1fs; the copy "
                    "counts as %x's state until a member of another origin confirms it",
                    receiver,
                    index,
                    timeout,
                    own_origin,
                )
                return CopyDecision(send=True, vouch=CopyVouch(own_origin, index))
            await asyncio.sleep(CONFIRM_RETRY)

    def _refuse(self, receiver: int, why: str) -> CopyDecision:
        """Say why this member's state is not copied to ``receiver``: once per reason, not at
        each of Raft's retries of the snapshot."""
        if self._refusals.get(receiver) != why:
            self._refusals[receiver] = why
            log.warning("not sending %x this member's state yet: %s", receiver, why)
        return REFUSED

    async def _compare_for_copy(
        self, peer: int, index: int, mine: bytes, deadline: float
    ) -> int | None:
        """``peer``'s word on this member's digest ``mine`` at ``index``: its origin when it
        holds ``mine`` there; None when it has nothing to say yet (behind without disagreeing,
        or it no longer keeps ``index``).  Raises ``_CopyDisputedError`` when it holds another
        digest there, or at its own latest index when it is behind (and this member still
        keeps that one); ``PeerRequestError`` when it does not answer."""
        loop = asyncio.get_running_loop()
        remaining = max(0.1, deadline - loop.time())
        reported = await self.range_of(peer, timeout=remaining)
        at = min(reported.latest, index)
        if at < reported.oldest:
            return None
        ours = mine if at == index else self.applier.digest.digest_at(at)
        if ours is None:
            return None  # older than this member keeps: nothing to compare
        theirs = await self._peer_digest(peer, reported, at, timeout=remaining)
        if theirs is None:
            return None
        if theirs != ours:
            raise _CopyDisputedError(at)
        if at < index:
            return None  # agrees so far; asked again once it applied ``index``
        return reported.vouch.origin if reported.vouch is not None else peer

    async def _peer_digest(
        self, peer: int, reported: DigestRange, index: int, timeout: float = REQUEST_TIMEOUT
    ) -> bytes | None:
        """``peer``'s digest at ``index``: the one its range ``reported`` already carries when
        ``index`` is its latest, else asked for (``digest_at``)."""
        if index == reported.latest:
            return reported.digest
        return await self.digest_at(peer, index, timeout=timeout)

    async def digest_at(
        self, member: int, index: int, timeout: float = REQUEST_TIMEOUT
    ) -> bytes | None:
        """``member``'s apply digest at ``index`` (this member's own without a request); None
        when it keeps none there.  Raises ``PeerRequestError`` when the peer does not answer."""
        if member == self.member_id:
            return self.applier.digest.digest_at(index)
        raw = await self.transport.request(member, "digest-at", _INDEX.pack(index), timeout)
        return raw or None

    async def _first_divergence(self, rnd: _Round, member: int, source: int, hi: int) -> int | None:
        """The first index in (lo, hi] where ``member`` left ``source``'s chain (the truth's),
        lo being the oldest index both keep; lo itself when they differ there already; None
        when they agree at ``hi``.  None when one of them no longer keeps an index the search
        needs (its history was reset by a snapshot, or evicted, since the round gathered the
        ranges): a digest it lacks says nothing about where it left the chain.  None too when either history was replaced
        during the search (an installed copy brings its sender's history, which may cover the
        same indexes: mixing two histories places the divergence anywhere).  A chain's digest
        at ``hi`` commits to every digest before it, so the same digests at ``hi`` before and
        after the search show that each member's lookups read one history."""
        lo = max(rnd.ranges[member][0], rnd.ranges[source][0])
        top = hi

        async def same(i: int) -> bool:
            mine, theirs = await rnd.at(member, i), await rnd.at(source, i)
            if mine is None or theirs is None:
                raise _HistoryMovedOnError
            return mine == theirs

        try:
            if await same(top):
                return None
            if not await same(lo):
                hi = lo
            while hi - lo > 1:  # invariant: same at lo, different at hi
                mid = (lo + hi) // 2
                if await same(mid):
                    lo = mid
                else:
                    hi = mid
        except _HistoryMovedOnError:
            return None
        for m in (member, source):
            if await self.digest_at(m, top) != await rnd.at(m, top):
                return None  # replaced meanwhile: located again by a later round
        return hi
