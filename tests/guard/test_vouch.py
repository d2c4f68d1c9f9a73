"""Unconfirmed copies count as their origin's voice, not as votes of their own
(``raftkv.guard.vouch`` and the origin-aware ``judge``)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from raftkv.guard.digest import awaits_voters, judge, tied_by_copies
from raftkv.guard.vouch import CONFIRMED, REFUSED, CopyDecision, CopyVouch, origins_of

A, B, C, D, E = 1, 2, 3, 4, 5


def test_vouch_round_trips_and_rejects_malformed_records() -> None:
    vouch = CopyVouch(0x2E1259D415F2A040, 104)
    assert CopyVouch.decode(vouch.encode()) == vouch
    assert CopyVouch.decode_optional(CopyVouch.encode_optional(None)) is None
    assert CopyVouch.decode_optional(CopyVouch.encode_optional(vouch)) == vouch
    with pytest.raises(ValueError, match="bytes"):
        CopyVouch.decode(b"\x00" * 15)
    with pytest.raises(ValueError, match="member 0"):
        CopyVouch.decode(bytes(16))


def test_decisions() -> None:
    assert (REFUSED.send, CONFIRMED.send, CONFIRMED.vouch) == (False, True, None)
    unconfirmed = CopyDecision(send=True, vouch=CopyVouch(A, 9))
    assert (unconfirmed.send, unconfirmed.vouch) == (True, CopyVouch(A, 9))


def test_a_copy_of_the_faulty_member_does_not_outvote_the_healthy_one() -> None:
    # A's apply fault went to B in an unconfirmed copy; C applied correctly.
    origins = origins_of({A: None, B: CopyVouch(A, 104), C: None})
    reports = {A: "bad", B: "bad", C: "good"}
    assert judge(reports, (A, B, C)) == ("bad", [C])  # counted per member: C named
    assert judge(reports, (A, B, C), origins) == (None, [A, B, C])
    assert not awaits_voters(reports, (A, B, C), origins)
    assert tied_by_copies(reports, (A, B, C), origins)


def test_a_copy_that_agrees_with_an_independent_voter_counts() -> None:
    # B holds A's copy but A diverged after it: C confirms B's chain, A is named.
    origins = origins_of({A: None, B: CopyVouch(A, 104), C: None})
    assert judge({A: "x", B: "y", C: "y"}, (A, B, C), origins) == ("y", [A])
    assert not tied_by_copies({A: "x", B: "y", C: "y"}, (A, B, C), origins)


def test_the_origin_missing_keeps_the_dispute_pending() -> None:
    origins = origins_of({B: CopyVouch(A, 104), C: None})
    reports = {B: "bad", C: "good"}
    assert judge(reports, (A, B, C), origins) == (None, [B, C])
    assert awaits_voters(reports, (A, B, C), origins)


def test_a_healthy_majority_still_names_the_origin_and_its_copies() -> None:
    origins = origins_of({A: None, B: CopyVouch(A, 7), C: None, D: None, E: None})
    reports = {A: "bad", B: "bad", C: "good", D: "good", E: "good"}
    assert judge(reports, (A, B, C, D, E), origins) == ("good", [A, B])
    assert not tied_by_copies(reports, (A, B, C, D, E), origins)


def test_three_different_states_are_no_tie_of_copies() -> None:
    origins = origins_of({A: None, B: None, C: None})
    assert not tied_by_copies({A: 1, B: 2, C: 3}, (A, B, C), origins)


@given(
    st.lists(st.sampled_from("xyz"), min_size=1, max_size=7),
    st.data(),
)
def test_never_two_truths(values: list[str], data: st.DataObject) -> None:
    """Whatever copies vouch for, at most one value reaches a majority of voters."""
    members = list(range(1, len(values) + 1))
    origins = {m: data.draw(st.sampled_from(members)) for m in members}
    reports = dict(zip(members, values, strict=True))
    quorum = len(members) // 2 + 1
    reached = [
        v
        for v in set(values)
        if len({origins[m] for m, got in reports.items() if got == v}) >= quorum
    ]
    assert len(reached) <= 1
    truth, _outliers = judge(reports, members, origins)
    assert truth == (reached[0] if reached else None)
