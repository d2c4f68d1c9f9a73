"""The WAL metadata record's conventional content: member ID and cluster ID.

Owns: the 16-byte layout ``member_id:u64 cluster_id:u64`` (little-endian) that
the server stores as the WAL metadata, like etcd's ``etcdserverpb.Metadata``.
The WAL itself treats metadata as opaque bytes.
"""

from __future__ import annotations

import struct

_METADATA = struct.Struct("<QQ")


def encode_metadata(member_id: int, cluster_id: int) -> bytes:
    return _METADATA.pack(member_id, cluster_id)


def decode_metadata(data: bytes) -> tuple[int, int] | None:
    """``(member_id, cluster_id)``, or None if ``data`` is not in this layout."""
    if len(data) != _METADATA.size:
        return None
    member_id, cluster_id = _METADATA.unpack(data)
    return int(member_id), int(cluster_id)
