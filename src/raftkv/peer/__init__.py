"""Member-to-member transport: raft messages, snapshot streaming, hash queries.

Owns: the public names of the peer layer; see ``transport`` for the contracts.
"""

from __future__ import annotations

from raftkv.peer.outgoing import PeerRefusedError, PeerRequestError, PeerStats
from raftkv.peer.snapshot import snapshot_db_name
from raftkv.peer.transport import FaultHooks, PeerTransport, TransportStats

__all__ = [
    "FaultHooks",
    "PeerRefusedError",
    "PeerRequestError",
    "PeerStats",
    "PeerTransport",
    "TransportStats",
    "snapshot_db_name",
]
