"""Committed Raft entries as a member's proposals encode them, for tests that drive an applier."""

from __future__ import annotations

from raftkv.proto import rpc_pb2 as pb
from raftkv.raft.types import Entry
from raftkv.server.requests import RequestKind, encode_request


def put_entry(index: int, term: int, key: bytes, value: bytes) -> Entry:
    """A Put of ``key`` = ``value`` at (``index``, ``term``); its request ID is ``index``."""
    req = pb.PutRequest(key=key, value=value)
    return Entry(term, index, data=encode_request(RequestKind.PUT, index, req.SerializeToString()))


def put_entries(first: int, last: int, term: int = 1) -> list[Entry]:
    """Puts of ``k<index>`` at ``first`` .. ``last``, each value naming the term (so entries of
    two terms at one index differ)."""
    return [
        put_entry(index, term, f"k{index}".encode(), f"term {term}".encode())
        for index in range(first, last + 1)
    ]
