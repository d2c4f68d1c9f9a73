"""Compact binary encoding of the Raft records in ``raftkv.raft.types``.

Owns: the byte layout of Entry, HardState, ConfState, SnapshotMetadata,
Snapshot, Message and ConfChange.  Pure: only ``struct``, no I/O.

Contracts:
- every integer is unsigned little-endian; node IDs, terms and indexes are
  64-bit, counts and lengths of variable parts are 32-bit (64-bit for snapshot
  data);
- a decoder takes any bytes-like object and either returns the record or raises
  ``CodecError`` (a ``ValueError``), never anything else; trailing bytes are an
  error, so a record must be decoded from exactly its own bytes;
- an encoder given a value that cannot be represented (negative or >= 2**64
  integer, unknown enum) raises a plain ``ValueError``: that is a caller bug,
  not bad input;
- the layouts carry no magic or version: containers (WAL records, snapshot
  files, the peer transport) version what they store.

Layouts (``<`` = little-endian)::

    Entry            term:Q index:Q type:B  data:rest
    entries          count:I  { term:Q index:Q type:B len:I data }*
    HardState        term:Q vote:Q commit:Q
    ConfState        nvoters:I nlearners:I voters:Q* learners:Q*
    SnapshotMetadata index:Q term:Q ConfState
    Snapshot         SnapshotMetadata datalen:Q data
    ConfChange       type:B node_id:Q context:rest
    Message          type:B flags:B to:Q frm:Q term:Q log_term:Q index:Q commit:Q
                     reject_hint:Q ctxlen:I nentries:I context entries*
                     [Snapshot if flags & HAS_SNAPSHOT]
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import TypeAlias

from raftkv.raft.types import (
    ConfChange,
    ConfChangeType,
    ConfState,
    Entry,
    EntryType,
    HardState,
    Message,
    MessageType,
    Snapshot,
    SnapshotMetadata,
)

Buffer: TypeAlias = bytes | bytearray | memoryview


class CodecError(ValueError):
    """The bytes given to a decoder are not a valid encoding of the record."""


_ENTRY_HDR = struct.Struct("<QQB")  # term, index, type
_ENTRIES_ITEM_HDR = struct.Struct("<QQBI")  # term, index, type, data length
_COUNT = struct.Struct("<I")
_HARD_STATE = struct.Struct("<QQQ")
_CONF_STATE_HDR = struct.Struct("<II")
_SNAP_META_HDR = struct.Struct("<QQ")
_U64 = struct.Struct("<Q")
_CONF_CHANGE_HDR = struct.Struct("<BQ")
_MSG_HDR = struct.Struct("<BBQQQQQQQII")

ENTRY_HEADER_SIZE = _ENTRY_HDR.size
HARD_STATE_SIZE = _HARD_STATE.size

_MSG_FLAG_REJECT = 0x01
_MSG_FLAG_HAS_SNAPSHOT = 0x02
_MSG_FLAGS_ALL = _MSG_FLAG_REJECT | _MSG_FLAG_HAS_SNAPSHOT

# Tuple lookups turn a raw byte into an enum member without a try/except per call.
_ENTRY_TYPES: tuple[EntryType, ...] = tuple(EntryType)
_CONF_CHANGE_TYPES: tuple[ConfChangeType, ...] = tuple(ConfChangeType)
_MESSAGE_TYPES: tuple[MessageType, ...] = tuple(MessageType)
assert all(t.value == i for i, t in enumerate(_ENTRY_TYPES))
assert all(t.value == i for i, t in enumerate(_CONF_CHANGE_TYPES))
assert all(t.value == i for i, t in enumerate(_MESSAGE_TYPES))


def _entry_type(raw: int) -> EntryType:
    if raw >= len(_ENTRY_TYPES):
        raise CodecError(f"unknown entry type {raw}")
    return _ENTRY_TYPES[raw]


# ---------------------------------------------------------------------------
# Entry (hot path)


def encoded_entry_size(entry: Entry) -> int:
    """Size of ``encode_entry(entry)``."""
    return ENTRY_HEADER_SIZE + len(entry.data)


def encode_entry_into(buf: bytearray | memoryview, offset: int, entry: Entry) -> int:
    """Write ``encode_entry(entry)`` at ``buf[offset:]``; returns the offset after it.

    ``buf`` must have room for ``encoded_entry_size(entry)`` bytes.
    """
    try:
        _ENTRY_HDR.pack_into(buf, offset, entry.term, entry.index, entry.type)
    except struct.error as exc:
        raise ValueError(f"entry not encodable: {entry!r}: {exc}") from None
    start = offset + ENTRY_HEADER_SIZE
    end = start + len(entry.data)
    buf[start:end] = entry.data
    return end


def encode_entry(entry: Entry) -> bytes:
    try:
        return _ENTRY_HDR.pack(entry.term, entry.index, entry.type) + entry.data
    except struct.error as exc:
        raise ValueError(f"entry not encodable: {entry!r}: {exc}") from None


def decode_entry(buf: Buffer) -> Entry:
    if len(buf) < ENTRY_HEADER_SIZE:
        raise CodecError(f"entry too short: {len(buf)} bytes")
    term, index, etype = _ENTRY_HDR.unpack_from(buf, 0)
    return Entry(term, index, _entry_type(etype), bytes(buf[ENTRY_HEADER_SIZE:]))


def encode_entries(entries: Sequence[Entry]) -> bytes:
    parts: list[bytes] = [_COUNT.pack(len(entries))]
    pack = _ENTRIES_ITEM_HDR.pack
    try:
        for e in entries:
            parts.append(pack(e.term, e.index, e.type, len(e.data)))
            parts.append(e.data)
    except struct.error as exc:
        raise ValueError(f"entries not encodable: {exc}") from None
    return b"".join(parts)


def _decode_entries_at(mv: memoryview, off: int, count: int) -> tuple[tuple[Entry, ...], int]:
    """Decode ``count`` length-prefixed entries from ``mv[off:]``."""
    out: list[Entry] = []
    unpack = _ENTRIES_ITEM_HDR.unpack_from
    hdr = _ENTRIES_ITEM_HDR.size
    total = len(mv)
    # Each entry needs at least its header: reject absurd counts before looping.
    if count * hdr > total - off:
        raise CodecError(f"entry count {count} exceeds the {total - off} bytes left")
    for _ in range(count):
        if off + hdr > total:
            raise CodecError("truncated entry header")
        term, index, etype, n = unpack(mv, off)
        off += hdr
        end = off + n
        if end > total:
            raise CodecError(f"entry data length {n} exceeds the {total - off} bytes left")
        out.append(Entry(term, index, _entry_type(etype), bytes(mv[off:end])))
        off = end
    return tuple(out), off


def decode_entries(buf: Buffer) -> list[Entry]:
    mv = memoryview(buf).cast("B")
    if len(mv) < _COUNT.size:
        raise CodecError("entries too short")
    (count,) = _COUNT.unpack_from(mv, 0)
    entries, off = _decode_entries_at(mv, _COUNT.size, count)
    if off != len(mv):
        raise CodecError(f"{len(mv) - off} trailing bytes after entries")
    return list(entries)


# ---------------------------------------------------------------------------
# HardState


def encode_hard_state(hs: HardState) -> bytes:
    try:
        return _HARD_STATE.pack(hs.term, hs.vote, hs.commit)
    except struct.error as exc:
        raise ValueError(f"hard state not encodable: {hs!r}: {exc}") from None


def decode_hard_state(buf: Buffer) -> HardState:
    if len(buf) != HARD_STATE_SIZE:
        raise CodecError(f"hard state must be {HARD_STATE_SIZE} bytes, got {len(buf)}")
    term, vote, commit = _HARD_STATE.unpack_from(buf, 0)
    return HardState(term, vote, commit)


# ---------------------------------------------------------------------------
# ConfState, SnapshotMetadata, Snapshot


def _conf_state_parts(cs: ConfState) -> list[bytes]:
    nv, nl = len(cs.voters), len(cs.learners)
    return [
        _CONF_STATE_HDR.pack(nv, nl),
        struct.pack(f"<{nv}Q", *cs.voters),
        struct.pack(f"<{nl}Q", *cs.learners),
    ]


def _decode_conf_state_at(mv: memoryview, off: int) -> tuple[ConfState, int]:
    total = len(mv)
    if off + _CONF_STATE_HDR.size > total:
        raise CodecError("truncated conf state header")
    nv, nl = _CONF_STATE_HDR.unpack_from(mv, off)
    off += _CONF_STATE_HDR.size
    if (nv + nl) * 8 > total - off:
        raise CodecError(f"conf state of {nv}+{nl} members exceeds the {total - off} bytes left")
    voters = struct.unpack_from(f"<{nv}Q", mv, off)
    off += nv * 8
    learners = struct.unpack_from(f"<{nl}Q", mv, off)
    off += nl * 8
    return ConfState(voters, learners), off


def encode_conf_state(cs: ConfState) -> bytes:
    try:
        return b"".join(_conf_state_parts(cs))
    except struct.error as exc:
        raise ValueError(f"conf state not encodable: {cs!r}: {exc}") from None


def decode_conf_state(buf: Buffer) -> ConfState:
    mv = memoryview(buf).cast("B")
    cs, off = _decode_conf_state_at(mv, 0)
    if off != len(mv):
        raise CodecError(f"{len(mv) - off} trailing bytes after conf state")
    return cs


def _snapshot_metadata_parts(meta: SnapshotMetadata) -> list[bytes]:
    return [_SNAP_META_HDR.pack(meta.index, meta.term), *_conf_state_parts(meta.conf_state)]


def _decode_snapshot_metadata_at(mv: memoryview, off: int) -> tuple[SnapshotMetadata, int]:
    if off + _SNAP_META_HDR.size > len(mv):
        raise CodecError("truncated snapshot metadata")
    index, term = _SNAP_META_HDR.unpack_from(mv, off)
    cs, off = _decode_conf_state_at(mv, off + _SNAP_META_HDR.size)
    return SnapshotMetadata(index, term, cs), off


def encode_snapshot_metadata(meta: SnapshotMetadata) -> bytes:
    try:
        return b"".join(_snapshot_metadata_parts(meta))
    except struct.error as exc:
        raise ValueError(f"snapshot metadata not encodable: {meta!r}: {exc}") from None


def decode_snapshot_metadata(buf: Buffer) -> SnapshotMetadata:
    mv = memoryview(buf).cast("B")
    meta, off = _decode_snapshot_metadata_at(mv, 0)
    if off != len(mv):
        raise CodecError(f"{len(mv) - off} trailing bytes after snapshot metadata")
    return meta


def _snapshot_parts(snap: Snapshot) -> list[bytes]:
    return [*_snapshot_metadata_parts(snap.metadata), _U64.pack(len(snap.data)), snap.data]


def _decode_snapshot_at(mv: memoryview, off: int) -> tuple[Snapshot, int]:
    meta, off = _decode_snapshot_metadata_at(mv, off)
    if off + 8 > len(mv):
        raise CodecError("truncated snapshot data length")
    (n,) = _U64.unpack_from(mv, off)
    off += 8
    end = off + n
    if end > len(mv):
        raise CodecError(f"snapshot data length {n} exceeds the {len(mv) - off} bytes left")
    return Snapshot(meta, bytes(mv[off:end])), end


def encode_snapshot(snap: Snapshot) -> bytes:
    try:
        return b"".join(_snapshot_parts(snap))
    except struct.error as exc:
        raise ValueError(f"snapshot not encodable: {exc}") from None


def decode_snapshot(buf: Buffer) -> Snapshot:
    mv = memoryview(buf).cast("B")
    snap, off = _decode_snapshot_at(mv, 0)
    if off != len(mv):
        raise CodecError(f"{len(mv) - off} trailing bytes after snapshot")
    return snap


# ---------------------------------------------------------------------------
# ConfChange


def encode_conf_change(cc: ConfChange) -> bytes:
    try:
        return _CONF_CHANGE_HDR.pack(cc.type, cc.node_id) + cc.context
    except struct.error as exc:
        raise ValueError(f"conf change not encodable: {cc!r}: {exc}") from None


def decode_conf_change(buf: Buffer) -> ConfChange:
    if len(buf) < _CONF_CHANGE_HDR.size:
        raise CodecError(f"conf change too short: {len(buf)} bytes")
    ctype, node_id = _CONF_CHANGE_HDR.unpack_from(buf, 0)
    if ctype >= len(_CONF_CHANGE_TYPES):
        raise CodecError(f"unknown conf change type {ctype}")
    return ConfChange(_CONF_CHANGE_TYPES[ctype], node_id, bytes(buf[_CONF_CHANGE_HDR.size :]))


# ---------------------------------------------------------------------------
# Message


def encode_message(m: Message) -> bytes:
    flags = (_MSG_FLAG_REJECT if m.reject else 0) | (
        _MSG_FLAG_HAS_SNAPSHOT if m.snapshot is not None else 0
    )
    try:
        parts: list[bytes] = [
            _MSG_HDR.pack(
                m.type,
                flags,
                m.to,
                m.frm,
                m.term,
                m.log_term,
                m.index,
                m.commit,
                m.reject_hint,
                len(m.context),
                len(m.entries),
            ),
            m.context,
        ]
        pack = _ENTRIES_ITEM_HDR.pack
        for e in m.entries:
            parts.append(pack(e.term, e.index, e.type, len(e.data)))
            parts.append(e.data)
        if m.snapshot is not None:
            parts.extend(_snapshot_parts(m.snapshot))
    except struct.error as exc:
        raise ValueError(f"message not encodable: {exc}") from None
    return b"".join(parts)


def decode_message(buf: Buffer) -> Message:
    mv = memoryview(buf).cast("B")
    total = len(mv)
    if total < _MSG_HDR.size:
        raise CodecError(f"message too short: {total} bytes")
    (
        mtype,
        flags,
        to,
        frm,
        term,
        log_term,
        index,
        commit,
        reject_hint,
        ctxlen,
        nentries,
    ) = _MSG_HDR.unpack_from(mv, 0)
    if mtype >= len(_MESSAGE_TYPES):
        raise CodecError(f"unknown message type {mtype}")
    if flags & ~_MSG_FLAGS_ALL:
        raise CodecError(f"unknown message flags {flags:#x}")
    off = _MSG_HDR.size
    if off + ctxlen > total:
        raise CodecError(f"message context length {ctxlen} exceeds the {total - off} bytes left")
    context = bytes(mv[off : off + ctxlen])
    off += ctxlen
    entries, off = _decode_entries_at(mv, off, nentries)
    snapshot: Snapshot | None = None
    if flags & _MSG_FLAG_HAS_SNAPSHOT:
        snapshot, off = _decode_snapshot_at(mv, off)
    if off != total:
        raise CodecError(f"{total - off} trailing bytes after message")
    return Message(
        type=_MESSAGE_TYPES[mtype],
        to=to,
        frm=frm,
        term=term,
        log_term=log_term,
        index=index,
        entries=entries,
        commit=commit,
        snapshot=snapshot,
        reject=bool(flags & _MSG_FLAG_REJECT),
        reject_hint=reject_hint,
        context=context,
    )
