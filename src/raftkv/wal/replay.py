"""Reading a WAL back: the torn-tail rule and the replay of records into state.

Owns: the decision whether a damaged frame is a torn tail (repairable) or
corruption (fatal), and the reconstruction of (metadata, hard state, entries)
from the records after a snapshot marker.  Reads files; never modifies them
(repair is done by ``raftkv.wal.wal`` with the result of this module).

The torn-tail rule (etcd's: only the last segment's tail may be torn):
- any damaged frame in a segment that is not the last one is corruption;
- in the last segment, a damaged frame at offset X is a torn tail only when no
  valid frame (correct length field and CRC) exists anywhere after X; a valid
  frame after X means bytes that were once durably written are now bad, which
  is corruption.  A frame that is valid on its own but breaks the CRC chain or
  has an unknown type is always corruption.
Every corruption raises ``WALCorruptionError`` naming the file and the offset.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from raftkv.raft.codec import CodecError, decode_entry, decode_hard_state, decode_snapshot_metadata
from raftkv.raft.types import ConfState, Entry, HardState
from raftkv.wal.errors import (
    WALCorruptionError,
    WALGapError,
    WALSnapshotMismatchError,
    WALSnapshotNotFoundError,
)
from raftkv.wal.files import Segment, read_file
from raftkv.wal.record import (
    Damage,
    RecordType,
    SegmentScan,
    decode_u32,
    find_valid_frame,
    scan_segment,
)

_SELF_VALID_DAMAGE = ("crc chain broken", "unknown record type")


@dataclass(frozen=True, slots=True)
class WalSnapshot:
    """A snapshot marker in the WAL: replay may start from ``index``."""

    index: int = 0
    term: int = 0
    conf_state: ConfState = field(default_factory=ConfState)


@dataclass(frozen=True, slots=True)
class SegmentRead:
    """One scanned segment; ``torn`` is the accepted torn tail, if any."""

    segment: Segment
    scan: SegmentScan
    torn: Damage | None
    is_last: bool


def read_segments(segments: list[Segment], prev: int | None = None) -> Iterator[SegmentRead]:
    """Scan ``segments`` in order, chaining CRCs across them.

    Raises ``WALCorruptionError`` for any damage the torn-tail rule rejects, or
    for a segment that does not start with a CRC record.  One segment's bytes
    are held at a time.
    """
    for pos, seg in enumerate(segments):
        is_last = pos == len(segments) - 1
        buf = read_file(seg.path)
        scan = scan_segment(buf, prev)
        torn = None
        if scan.damage is not None:
            torn = _classify(seg, buf, scan.damage, is_last)
        if not scan.records:
            offset = torn.offset if torn is not None else 0
            raise WALCorruptionError(seg.path, offset, "segment holds no valid record")
        first = scan.records[0]
        if first.type != RecordType.CRC or decode_u32(first.data) != first.prev:
            raise WALCorruptionError(seg.path, 0, "segment does not start with a valid CRC record")
        prev = scan.records[-1].crc
        yield SegmentRead(seg, scan, torn, is_last)


def _classify(seg: Segment, buf: bytes, damage: Damage, is_last: bool) -> Damage:
    """Return ``damage`` if it is an acceptable torn tail, else raise."""
    if not is_last:
        raise WALCorruptionError(seg.path, damage.offset, f"{damage.reason} (not the last segment)")
    if damage.reason.startswith(_SELF_VALID_DAMAGE):
        raise WALCorruptionError(seg.path, damage.offset, damage.reason)
    after = find_valid_frame(buf, damage.offset + 8)
    if after is not None:
        raise WALCorruptionError(
            seg.path, damage.offset, f"{damage.reason}; a valid record follows at offset {after}"
        )
    return damage


@dataclass
class Replay:
    """State reconstructed from the WAL after a snapshot marker."""

    metadata: bytes
    hard_state: HardState
    entries: list[Entry]
    snapshots: list[WalSnapshot]
    last_index: int
    tail: Segment
    tail_end: int
    last_crc: int
    torn: Damage | None


def replay(segments: list[Segment], snap: WalSnapshot) -> Replay:
    """Replay ``segments`` (starting at the one that covers ``snap``).

    Entries with an index above ``snap.index`` are returned; a later entry
    replaces every entry at and after its index (the log was truncated by a
    new leader).  Raises ``WALSnapshotNotFoundError`` if no marker has
    ``snap.index``, ``WALSnapshotMismatchError`` if its term differs.
    """
    metadata: bytes | None = None
    hard_state = HardState()
    entries: list[Entry] = []
    snapshots: list[WalSnapshot] = []
    found = False
    last_index = snap.index
    base = snap.index
    last: SegmentRead | None = None
    for read in read_segments(segments):
        last = read
        path = read.segment.path
        for rec in read.scan.records:
            rtype = rec.type
            try:
                if rtype == RecordType.ENTRY:
                    e = decode_entry(rec.data)
                    if e.index > base:
                        pos = e.index - base - 1
                        if pos > len(entries):
                            expected = base + len(entries) + 1
                            if any(expected - 1 <= s.index < e.index for s in snapshots):
                                raise WALGapError(
                                    f"wal: entry {e.index} follows a snapshot marker; replay"
                                    f" from snapshot {snap.index} cannot fill {expected}.."
                                    f"{e.index - 1} ({path} at offset {rec.offset})"
                                )
                            raise WALCorruptionError(
                                path, rec.offset, f"entry index {e.index} skips {expected}"
                            )
                        del entries[pos:]
                        entries.append(e)
                    last_index = e.index
                elif rtype == RecordType.HARD_STATE:
                    hard_state = decode_hard_state(rec.data)
                elif rtype == RecordType.METADATA:
                    md = bytes(rec.data)
                    if metadata is not None and md != metadata:
                        raise WALCorruptionError(path, rec.offset, "metadata conflict")
                    metadata = md
                elif rtype == RecordType.SNAPSHOT:
                    meta = decode_snapshot_metadata(rec.data)
                    ws = WalSnapshot(meta.index, meta.term, meta.conf_state)
                    snapshots.append(ws)
                    if ws.index == snap.index:
                        if ws.term != snap.term:
                            raise WALSnapshotMismatchError(
                                f"wal: snapshot marker at index {ws.index} has term {ws.term},"
                                f" expected {snap.term} ({path} at offset {rec.offset})"
                            )
                        found = True
                    last_index = max(last_index, ws.index)
            except CodecError as exc:
                raise WALCorruptionError(
                    path, rec.offset, f"undecodable {rtype.name}: {exc}"
                ) from None
    assert last is not None, "replay needs at least one segment"
    if not found:
        raise WALSnapshotNotFoundError(
            f"wal: no snapshot marker at index {snap.index} term {snap.term}"
        )
    if metadata is None:
        raise WALCorruptionError(last.segment.path, None, "no metadata record")
    return Replay(
        metadata=metadata,
        hard_state=hard_state,
        entries=entries,
        snapshots=snapshots,
        last_index=last_index,
        tail=last.segment,
        tail_end=last.scan.end,
        last_crc=last.scan.records[-1].crc,
        torn=last.torn,
    )
