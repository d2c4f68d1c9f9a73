"""Read and write bbolt database files (the subset etcd uses), in pure Python.

bbolt (go.etcd.io/bbolt) is the B+tree file behind etcd's backend and the files
``etcdctl snapshot save`` writes (the database followed by a 32-byte SHA-256 of it). No Python
library reads or writes it; this package does, for root-level buckets of key/value pairs:

- ``write_bolt(f, buckets, *, page_size=4096, txid=2) -> int`` writes a complete database
  from sorted streams, looking like a freshly compacted bbolt file (``writer``);
- ``BoltReader(path, *, length=None)`` reads one through mmap: ``buckets()``, ``items()``,
  ``get()``, ``count()`` and ``check()``, a full structural check (``reader``);
- ``BoltFormatError(path, offset, reason)`` is the one error a malformed file raises.

The on-disk format (little-endian pages, metas with their FNV-1a 64 checksum, branch and leaf
elements, bucket headers, inline buckets, the freelist, overflow pages) is described in
``layout``'s docstring.
"""

from __future__ import annotations

from raftkv.backup.bbolt.layout import BoltFormatError
from raftkv.backup.bbolt.reader import BoltReader
from raftkv.backup.bbolt.writer import write_bolt

__all__ = ["BoltFormatError", "BoltReader", "write_bolt"]
