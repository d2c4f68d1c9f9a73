"""Member and cluster IDs, derived as etcd derives them.

Contract: the same peer URLs and cluster token give the same member ID on every machine, so all
initial members agree on the IDs without talking.  A member added later mixes in the time it was
added (the caller passes it), as etcd does, so re-adding the same URLs gives a new ID.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable


def member_id(peer_urls: Iterable[str], cluster_token: str, added_at: int | None = None) -> int:
    digest = hashlib.sha1()
    digest.update("".join(sorted(peer_urls)).encode())
    digest.update(cluster_token.encode())
    if added_at is not None:
        digest.update(str(added_at).encode())
    value = int.from_bytes(digest.digest()[:8], "big")
    return value or 1


def cluster_id(member_ids: Iterable[int]) -> int:
    digest = hashlib.sha1()
    for mid in sorted(member_ids):
        digest.update(mid.to_bytes(8, "big"))
    return int.from_bytes(digest.digest()[:8], "big") or 1


def format_id(value: int) -> str:
    """IDs are shown in hex, as etcd's types.ID.String()."""
    return f"{value:x}"
