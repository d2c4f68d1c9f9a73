"""Who vouches for a member's state: its own applies, or an unconfirmed copy of another's.

A member's apply digests are an independent witness only if it applied the entries itself.  A
member that installed a backend copy (a Raft snapshot, a repair) holds the sender's state: when
a majority of voters confirmed the sender's digest at the copy's index first
(``ConsistencyGuard.confirm``), the copy is as good as the member's own applies.  When no
majority could (voters down or cut off: the leader sends it all the same, as etcd does, so a
lagging member can catch up), the copy is stamped with a ``CopyVouch``: the member whose state
it is (its *origin*) and the copy's index.  Until an independent member confirms it, the
receiver's digest and state hash are that origin's second voice, not a second vote:

- the guard and the state hash check count votes by distinct origins (``origins_of``, and
  ``judge``'s ``origins``), so a fault of the origin not yet detected cannot outvote a healthy
  voter through its copies.  In the guard a copy's report is its own again when a member on
  the other side of the dispute held the copy's digest at the copy's index: the dispute is
  then about entries the copy's holder applied itself.  Where every witness agrees, copies are
  counted as members (there is nothing for them to outvote);
- the stamp lives in the copy's meta bucket (``META_COPY_VOUCH``), so it is installed
  atomically with the state it describes, survives restarts, and travels on with every further
  copy of that state (a defragmentation, a repair from it, a snapshot it sends on unconfirmed);
- the receiver clears it once a voter of another origin holds its digest at the copy's index
  (or, when that voter no longer keeps it, at a later one: the chains agree there, so they
  agree on everything the copy carried) (``ConsistencyGuard.seek_confirmation``).  The
  clearing is written with the next apply batch; a crash before it only means the
  confirmation is found again;
- a sender never sends unconfirmed when a voter disagrees with its digest (``REFUSED``); a
  member under a CORRUPT alarm is no witness either way.

What it cannot do: when the only other voter's state is disputed (three voters: the origin,
its copy and one more), the two sides are one voice each and nobody is named; the guard says
so in its log and an operator compares the members' files (``raftkv check data``).

Members of a version without stamps report none and count as independent, as before.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from dataclasses import dataclass

META_COPY_VOUCH = b"copyVouch"
"""Key in the backend's meta bucket: u64 origin member ID, u64 index of the copy."""

_VOUCH = struct.Struct(">QQ")
ENCODED_SIZE = _VOUCH.size


@dataclass(frozen=True, slots=True)
class CopyVouch:
    """This state is ``origin``'s, as it was at ``index``, and no majority confirmed it."""

    origin: int
    index: int

    def encode(self) -> bytes:
        return _VOUCH.pack(self.origin, self.index)

    @classmethod
    def decode(cls, raw: bytes) -> CopyVouch:
        """Raises ValueError on a malformed record."""
        if len(raw) != _VOUCH.size:
            raise ValueError(f"copy vouch record of {len(raw)} bytes, want {_VOUCH.size}")
        origin, index = _VOUCH.unpack(raw)
        if origin == 0:
            raise ValueError("copy vouch record names member 0")
        return cls(origin, index)

    @staticmethod
    def encode_optional(vouch: CopyVouch | None) -> bytes:
        """The wire form of a member's vouch: its record, or 16 zero bytes for none."""
        return vouch.encode() if vouch is not None else bytes(_VOUCH.size)

    @classmethod
    def decode_optional(cls, raw: bytes) -> CopyVouch | None:
        return None if raw == bytes(_VOUCH.size) else cls.decode(raw)


@dataclass(frozen=True, slots=True)
class CopyDecision:
    """Whether this member's state at a backend copy's index may become another member's,
    and how the copy is stamped: ``vouch`` None for a confirmed copy (no stamp)."""

    send: bool
    vouch: CopyVouch | None = None


REFUSED = CopyDecision(send=False)
"""A voter holds another digest, or the sender is party to an unsettled mismatch."""
CONFIRMED = CopyDecision(send=True)
"""Voters of a majority of distinct origins hold the sender's digest at the copy's index."""


def origins_of(vouches: Mapping[int, CopyVouch | None]) -> dict[int, int]:
    """member -> the member whose independent applies its state stands for (itself, or the
    origin of the unconfirmed copy it holds)."""
    return {m: (v.origin if v is not None else m) for m, v in vouches.items()}
