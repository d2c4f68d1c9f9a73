"""The guard's verdict, end to end without processes: a leader's ``VerdictSender`` names a member,
the named member's ``Fence`` checks who sent it, fences itself durably, refuses clients with
etcd's ``corrupt cluster``, and only a repair (``clear_verdict``) unfences it."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import stat
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from raftkv import errors
from raftkv.guard.state_hash import StateHash
from raftkv.peer.transport import PeerRequestError
from raftkv.proto import rpc_pb2 as pb
from raftkv.server.fencing import (
    EVIDENCE_ALARM,
    EVIDENCE_DIGEST,
    EVIDENCE_STATE_HASH,
    VERDICT_FILE,
    VERDICT_KIND,
    Fence,
    Verdict,
    VerdictError,
)
from raftkv.server.guard import VerdictSender
from raftkv.server.hash_check import CheckResult, StateHashChecker

LEADER, ME, OTHER, STRANGER = 0x1A, 0x2B, 0x3C, 0xBAD
CORRUPT = int(pb.CORRUPT)


def make_fence(
    verdict_dir: Path | None = None,
    alarms: set[tuple[int, int]] | None = None,
    members: tuple[int, ...] = (LEADER, ME, OTHER),
) -> Fence:
    active = alarms if alarms is not None else set()
    return Fence(
        member_id=ME,
        alarms=lambda: active,
        policy="member",
        is_learner=lambda: False,
        members=lambda: members,
        verdict_dir=str(verdict_dir) if verdict_dir is not None else None,
    )


def verdict(**fields: Any) -> Verdict:
    base: dict[str, Any] = dict(
        member_id=ME,
        leader_id=LEADER,
        term=7,
        at_index=40,
        first_index=38,
        evidence=EVIDENCE_DIGEST,
        reason="",
    )
    base.update(fields)
    return Verdict(**base)


def refused(fence: Fence) -> str:
    with pytest.raises(errors.EtcdError) as info:
        fence.check()
    return info.value.message


def handle(fence: Fence, frm: int, payload: bytes) -> dict[str, Any]:
    answer: dict[str, Any] = json.loads(asyncio.run(fence.handle_verdict(frm, payload)))
    return answer


# -- the verdict's encoding ------------------------------------------------------------------


def test_verdict_round_trips_and_describes_itself() -> None:
    v = verdict(reason="keys differ")
    assert Verdict.decode(v.encode()) == v
    text = v.describe()
    assert f"leader {LEADER:x} (term 7) named member {ME:x}" in text
    assert "diverged at raft index 38" in text and "apply digest at raft index 40" in text
    assert "first index unknown" in verdict(first_index=0).describe()


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"\xff\xfe",
        b"[1, 2]",
        b"{}",
        json.dumps({**json.loads(verdict().encode()), "term": -1}).encode(),
        json.dumps({**json.loads(verdict().encode()), "term": 2**64}).encode(),
        json.dumps({**json.loads(verdict().encode()), "at_index": "40"}).encode(),
        json.dumps({**json.loads(verdict().encode()), "first_index": True}).encode(),
        json.dumps({**json.loads(verdict().encode()), "evidence": "rumour"}).encode(),
        json.dumps({**json.loads(verdict().encode()), "reason": 3}).encode(),
        json.dumps({**json.loads(verdict().encode()), "reason": "x" * 2000}).encode(),
    ],
)
def test_a_malformed_verdict_raises_the_one_error(payload: bytes) -> None:
    with pytest.raises(VerdictError):
        Verdict.decode(payload)


# -- who may fence this member ----------------------------------------------------------------


def test_a_members_verdict_fences_as_the_alarm_does() -> None:
    fence = make_fence()
    assert not fence.is_fenced() and not fence.self_alarmed()
    assert handle(fence, LEADER, verdict().encode()) == {"fenced": True, "by": "verdict"}
    assert fence.verdict == verdict()
    assert fence.is_fenced() and fence.self_alarmed()
    assert refused(fence) == "etcdserver: corrupt cluster"  # the alarm's error, DataLoss
    with pytest.raises(errors.EtcdError):
        fence.check_voter()
    alarmed = make_fence(alarms={(ME, CORRUPT)})
    assert refused(alarmed) == refused(fence)


@pytest.mark.parametrize(
    ("frm", "v", "why"),
    [
        (STRANGER, verdict(leader_id=STRANGER), "is not a member of this cluster"),
        (ME, verdict(leader_id=ME), "from this member itself"),
        (OTHER, verdict(), f"sent by {OTHER:x} in the name of {LEADER:x}"),
        (LEADER, verdict(member_id=OTHER), f"it names member {OTHER:x}, not this one"),
    ],
)
def test_a_verdict_from_a_stranger_itself_or_for_another_is_dropped_and_logged_once(
    caplog: pytest.LogCaptureFixture, frm: int, v: Verdict, why: str
) -> None:
    fence = make_fence()
    with caplog.at_level(logging.DEBUG, logger="raftkv.fencing"):
        for _ in range(3):
            answer = handle(fence, frm, v.encode())
            assert answer["fenced"] is False and why in answer["dropped"]
    assert not fence.is_fenced() and fence.verdict is None
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and f"dropped a guard verdict from {frm:x}" in warnings[0].message


def test_a_malformed_verdict_is_dropped() -> None:
    fence = make_fence()
    answer = handle(fence, LEADER, b"{not json")
    assert answer["fenced"] is False and "malformed verdict" in answer["dropped"]
    assert not fence.is_fenced()


def test_a_verdict_can_only_fence_never_unfence(tmp_path: Path) -> None:
    fence = make_fence(tmp_path)
    handle(fence, LEADER, verdict().encode())
    # whatever arrives afterwards, from whoever: still fenced, the first verdict kept
    for frm, payload in [
        (LEADER, verdict(at_index=99, first_index=0, evidence=EVIDENCE_STATE_HASH).encode()),
        (OTHER, verdict(leader_id=OTHER, evidence=EVIDENCE_ALARM).encode()),
        (STRANGER, b'{"fenced": false}'),
        (LEADER, b""),
    ]:
        handle(fence, frm, payload)
        assert fence.is_fenced() and fence.verdict == verdict()
    assert make_fence(tmp_path).verdict == verdict()


def test_an_alarm_only_verdict_is_not_recorded_where_the_alarm_applied(tmp_path: Path) -> None:
    alarms = {(ME, CORRUPT)}
    fence = make_fence(tmp_path, alarms=alarms)
    answer = handle(fence, LEADER, verdict(evidence=EVIDENCE_ALARM).encode())
    assert answer == {"fenced": True, "by": "alarm"}
    assert fence.verdict is None and not (tmp_path / VERDICT_FILE).exists()
    # evidence of divergence is recorded even there: only a repair clears it
    assert handle(fence, LEADER, verdict().encode()) == {"fenced": True, "by": "verdict"}
    alarms.clear()  # `alarm disarm`
    assert fence.is_fenced()
    # and a member that could not apply the alarm records an alarm-only verdict
    other = make_fence(tmp_path / "x")
    (tmp_path / "x").mkdir()
    assert handle(other, LEADER, verdict(evidence=EVIDENCE_ALARM).encode())["by"] == "verdict"


# -- durability -----------------------------------------------------------------------------------


def test_an_accepted_verdict_survives_a_restart_until_repair(tmp_path: Path) -> None:
    fence = make_fence(tmp_path)
    handle(fence, LEADER, verdict().encode())
    path = tmp_path / VERDICT_FILE
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert Verdict.decode(path.read_bytes()) == verdict()
    assert not (tmp_path / (VERDICT_FILE + ".tmp")).exists()

    restarted = make_fence(tmp_path)
    assert restarted.verdict == verdict() and restarted.is_fenced()

    restarted.clear_verdict(unfenced_at=50)
    assert not path.exists() and not restarted.is_fenced()
    assert not make_fence(tmp_path).is_fenced()


def test_an_unreadable_verdict_file_fences_all_the_same(tmp_path: Path) -> None:
    (tmp_path / VERDICT_FILE).write_bytes(b"\x00garbage")
    fence = make_fence(tmp_path)
    assert fence.is_fenced()
    assert fence.verdict is not None and "unreadable verdict file" in fence.verdict.reason
    fence.clear_verdict(unfenced_at=1)
    assert not fence.is_fenced() and not (tmp_path / VERDICT_FILE).exists()


def test_a_verdict_that_cannot_be_made_durable_fences_and_is_retried(tmp_path: Path) -> None:
    missing = tmp_path / "member"
    fence = make_fence(missing)
    with pytest.raises(OSError):
        asyncio.run(fence.handle_verdict(LEADER, verdict().encode()))
    assert fence.is_fenced()  # in memory at once
    missing.mkdir()
    assert handle(fence, LEADER, verdict(at_index=41).encode())["fenced"] is True
    assert make_fence(missing).verdict == verdict()  # the first verdict, now on disk


def test_a_verdict_older_than_the_last_repair_is_stale(tmp_path: Path) -> None:
    fence = make_fence(tmp_path)
    handle(fence, LEADER, verdict().encode())
    fence.clear_verdict(unfenced_at=60)
    answer = handle(fence, LEADER, verdict(at_index=59, evidence=EVIDENCE_ALARM).encode())
    assert answer["fenced"] is False and "stale" in answer["dropped"]
    assert not fence.is_fenced()
    # new evidence after the repair fences again
    assert handle(fence, LEADER, verdict(at_index=60).encode())["fenced"] is True


# -- the leader's side --------------------------------------------------------------------------


class Wire:
    """Peer requests delivered to each member's fence (or failing, for the unreachable)."""

    def __init__(self, fences: dict[int, Fence]) -> None:
        self.fences = fences
        self.down: set[int] = set()
        self.sent: list[tuple[int, Verdict]] = []

    async def request(self, peer: int, kind: str, payload: bytes, timeout: float) -> bytes:
        assert kind == VERDICT_KIND
        self.sent.append((peer, Verdict.decode(payload)))
        if peer in self.down:
            raise PeerRequestError(f"peer {peer:x} is not connected")
        return await self.fences[peer].handle_verdict(LEADER, payload)


def make_sender(wire: Wire, alarmed: set[int], term: list[int]) -> VerdictSender:
    return VerdictSender(
        member_id=LEADER,
        transport=wire,  # type: ignore[arg-type]
        term=lambda: term[0],
        alarmed=lambda: alarmed,
        applied_index=lambda: 70,
        first_index=lambda m: 38 if m == ME else 0,
    )


def test_the_leader_retries_until_the_named_member_answers_then_stops() -> None:
    async def main() -> None:
        fence = make_fence()
        wire = Wire({ME: fence})
        alarmed: set[int] = set()
        sender = make_sender(wire, alarmed, [7])
        wire.down.add(ME)
        sender.name(ME, 40, 38, EVIDENCE_DIGEST)
        sender.name(LEADER, 40, 38, EVIDENCE_DIGEST)  # never itself: its alarm applies
        await sender.deliver()
        await sender.deliver()
        assert not fence.is_fenced() and ME in sender.pending
        wire.down.clear()
        await sender.deliver()
        assert fence.verdict == verdict() and not sender.pending
        alarmed.add(ME)  # its alarm applied on the leader
        before = len(wire.sent)
        for _ in range(3):
            sender.name(ME, 41, 38, EVIDENCE_DIGEST)
            await sender.deliver()
        assert len(wire.sent) == before  # answered in this term: not sent again
        assert all(peer == ME for peer, _v in wire.sent)
        await sender.stop()

    asyncio.run(main())


def test_a_new_leader_sends_alarmed_members_a_verdict_once_per_term() -> None:
    async def main() -> None:
        fences = {ME: make_fence(), OTHER: make_fence(alarms={(ME, CORRUPT)})}
        wire = Wire(fences)
        term = [8]
        sender = make_sender(wire, {ME}, term)
        await sender.deliver()
        await sender.deliver()
        assert wire.sent == [(ME, verdict(term=8, at_index=70, evidence=EVIDENCE_ALARM))]
        assert fences[ME].is_fenced()
        term[0] = 9
        await sender.deliver()
        assert len(wire.sent) == 2  # a new term, one more (cheap) round
        sender.stand_down()
        assert not sender.pending and not sender.answered

    asyncio.run(main())


def test_after_a_repair_the_member_can_be_named_again_in_the_same_term() -> None:
    async def main() -> None:
        fence = make_fence()
        wire = Wire({ME: fence})
        alarmed: set[int] = set()
        sender = make_sender(wire, alarmed, [7])
        sender.name(ME, 40, 38, EVIDENCE_DIGEST)
        await sender.deliver()
        alarmed.add(ME)
        await sender.deliver()
        # repaired: the member unfenced at index 80, its alarm cleared on the leader
        fence.clear_verdict(unfenced_at=80)
        alarmed.clear()
        await sender.deliver()
        sender.name(ME, 90, 85, EVIDENCE_STATE_HASH)
        await sender.deliver()
        assert fence.verdict == verdict(at_index=90, first_index=85, evidence=EVIDENCE_STATE_HASH)

    asyncio.run(main())


def test_the_state_hash_check_names_through_the_verdicts_only_with_a_majority() -> None:
    good = StateHash(50, 9, -1, 1234, b"l", b"m", b"a")
    bad = StateHash(50, 9, -1, 4321, b"l", b"m", b"a")
    results: list[CheckResult] = [
        CheckResult(50, {LEADER: good, OTHER: good, ME: bad}, good.value, (ME,), ()),
        CheckResult(50, {LEADER: good, OTHER: bad, ME: good}, None, (LEADER, OTHER, ME), ()),
    ]
    alarms: list[int] = []
    named: list[tuple[Any, ...]] = []

    async def raise_alarm(member: int) -> None:
        alarms.append(member)

    async def main() -> None:
        checker = StateHashChecker(
            member_id=LEADER,
            applier=SimpleNamespace(on_checkpoint=None),  # type: ignore[arg-type]
            transport=SimpleNamespace(register_handler=lambda kind, h: None),  # type: ignore[arg-type]
            voters=lambda: (LEADER, ME, OTHER),
            is_leader=lambda: True,
            leader=lambda: LEADER,
            propose_checkpoint=lambda: asyncio.sleep(0, 50),
            wait_applied=lambda index: asyncio.sleep(0),
            raise_alarm=raise_alarm,
            period=0,
            request_timeout=1,
        )
        checker.on_named = lambda *args: named.append(args)

        async def compare(index: int) -> CheckResult:
            return results.pop(0)

        checker.compare = compare  # type: ignore[method-assign]
        await checker._compare_and_alarm(50, "periodic")
        await checker._compare_and_alarm(50, "periodic")

    asyncio.run(main())
    assert named == [(ME, 50, 0, EVIDENCE_STATE_HASH, "keys differ")]
    assert alarms == [ME, LEADER, OTHER, ME]  # no majority: alarms only, no verdicts
