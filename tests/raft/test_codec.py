"""Tests of raftkv.raft.codec: round trips, exact layouts, and the decoder
contract (a record or CodecError, never anything else)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from raftkv.raft import codec
from raftkv.raft.codec import CodecError
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

FUZZ = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])

u64 = st.integers(min_value=0, max_value=2**64 - 1)
small_bytes = st.binary(max_size=64)
entries_st = st.builds(
    Entry, term=u64, index=u64, type=st.sampled_from(EntryType), data=small_bytes
)
hard_states = st.builds(HardState, term=u64, vote=u64, commit=u64)
conf_states = st.builds(
    ConfState,
    voters=st.lists(u64, max_size=5).map(tuple),
    learners=st.lists(u64, max_size=5).map(tuple),
)
metas = st.builds(SnapshotMetadata, index=u64, term=u64, conf_state=conf_states)
snapshots = st.builds(Snapshot, metadata=metas, data=small_bytes)
conf_changes = st.builds(
    ConfChange, type=st.sampled_from(ConfChangeType), node_id=u64, context=small_bytes
)
messages = st.builds(
    Message,
    type=st.sampled_from(MessageType),
    to=u64,
    frm=u64,
    term=u64,
    log_term=u64,
    index=u64,
    entries=st.lists(entries_st, max_size=4).map(tuple),
    commit=u64,
    snapshot=st.none() | snapshots,
    reject=st.booleans(),
    reject_hint=u64,
    context=small_bytes,
)

# (encoder, decoder, strategy) for every record type.
CODECS: list[tuple[str, Callable[[Any], bytes], Callable[[bytes], Any], Any]] = [
    ("entry", codec.encode_entry, codec.decode_entry, entries_st),
    (
        "entries",
        codec.encode_entries,
        codec.decode_entries,
        st.lists(entries_st, max_size=6),
    ),
    ("hard_state", codec.encode_hard_state, codec.decode_hard_state, hard_states),
    ("conf_state", codec.encode_conf_state, codec.decode_conf_state, conf_states),
    (
        "snapshot_metadata",
        codec.encode_snapshot_metadata,
        codec.decode_snapshot_metadata,
        metas,
    ),
    ("snapshot", codec.encode_snapshot, codec.decode_snapshot, snapshots),
    ("conf_change", codec.encode_conf_change, codec.decode_conf_change, conf_changes),
    ("message", codec.encode_message, codec.decode_message, messages),
]
RECORD_TYPES = (Entry, list, HardState, ConfState, SnapshotMetadata, Snapshot, ConfChange, Message)


def _decode_or_codec_error(dec: Callable[[bytes], Any], data: bytes) -> None:
    """The decoder contract: a record of the right type, or CodecError."""
    try:
        record = dec(data)
    except CodecError as exc:
        assert str(exc)
        return
    assert isinstance(record, RECORD_TYPES)


DECODERS = [(name, dec) for name, _enc, dec, _st in CODECS]


@pytest.mark.parametrize(("name", "enc", "dec", "strategy"), CODECS, ids=[c[0] for c in CODECS])
def test_round_trip(
    name: str, enc: Callable[[Any], bytes], dec: Callable[[bytes], Any], strategy: Any
) -> None:
    @FUZZ
    @given(strategy)
    def check(record: Any) -> None:
        data = enc(record)
        assert dec(data) == record
        assert dec(bytearray(data)) == record
        assert dec(memoryview(data)) == record

    check()


@pytest.mark.parametrize(("name", "dec"), DECODERS, ids=[d[0] for d in DECODERS])
def test_random_bytes_decode_or_codec_error(name: str, dec: Callable[[bytes], Any]) -> None:
    @FUZZ
    @given(st.binary(max_size=200))
    def check(data: bytes) -> None:
        _decode_or_codec_error(dec, data)

    check()


@pytest.mark.parametrize(("name", "enc", "dec", "strategy"), CODECS, ids=[c[0] for c in CODECS])
def test_mutated_encodings_decode_or_codec_error(
    name: str, enc: Callable[[Any], bytes], dec: Callable[[bytes], Any], strategy: Any
) -> None:
    """Truncations, extensions and byte flips of valid encodings."""

    @FUZZ
    @given(strategy, st.data())
    def check(record: Any, data: st.DataObject) -> None:
        raw = bytearray(enc(record))
        action = data.draw(st.sampled_from(["truncate", "extend", "flip"]))
        if action == "truncate" and raw:
            del raw[data.draw(st.integers(0, len(raw) - 1)) :]
        elif action == "extend":
            raw += data.draw(st.binary(min_size=1, max_size=16))
        elif raw:
            pos = data.draw(st.integers(0, len(raw) - 1))
            raw[pos] ^= data.draw(st.integers(1, 255))
        _decode_or_codec_error(dec, bytes(raw))

    check()


def test_truncated_encodings_are_errors_for_fixed_records() -> None:
    hs = codec.encode_hard_state(HardState(3, 2, 1))
    assert len(hs) == codec.HARD_STATE_SIZE == 24
    for n in range(len(hs)):
        with pytest.raises(CodecError):
            codec.decode_hard_state(hs[:n])
    with pytest.raises(CodecError):
        codec.decode_hard_state(hs + b"\0")
    m = codec.encode_message(Message(MessageType.MSG_APP, entries=(Entry(1, 2, data=b"abc"),)))
    for n in range(len(m)):
        with pytest.raises(CodecError):
            codec.decode_message(m[:n])
    with pytest.raises(CodecError, match="trailing"):
        codec.decode_message(m + b"x")


def test_entry_layout_is_compact_and_stable() -> None:
    e = Entry(term=2, index=7, type=EntryType.CONF_CHANGE, data=b"hi")
    raw = codec.encode_entry(e)
    assert raw == (2).to_bytes(8, "little") + (7).to_bytes(8, "little") + b"\x01hi"
    assert codec.encoded_entry_size(e) == len(raw) == codec.ENTRY_HEADER_SIZE + 2
    buf = bytearray(40)
    end = codec.encode_entry_into(buf, 5, e)
    assert end == 5 + len(raw) and bytes(buf[5:end]) == raw
    assert codec.decode_entry(memoryview(buf)[5:end]) == e


def test_unknown_enum_values_are_codec_errors() -> None:
    raw = bytearray(codec.encode_entry(Entry(1, 1)))
    raw[16] = 2
    with pytest.raises(CodecError, match="entry type"):
        codec.decode_entry(bytes(raw))
    cc = bytearray(codec.encode_conf_change(ConfChange(ConfChangeType.ADD_NODE, 1)))
    cc[0] = 4
    with pytest.raises(CodecError, match="conf change type"):
        codec.decode_conf_change(bytes(cc))
    msg = bytearray(codec.encode_message(Message(MessageType.MSG_HUP)))
    msg[0] = 19
    with pytest.raises(CodecError, match="message type"):
        codec.decode_message(bytes(msg))
    msg[0] = 0
    msg[1] = 0x04
    with pytest.raises(CodecError, match="flags"):
        codec.decode_message(bytes(msg))


def test_huge_counts_are_rejected_without_allocating() -> None:
    raw = bytearray(codec.encode_conf_state(ConfState((1,), ())))
    raw[0:4] = (2**32 - 1).to_bytes(4, "little")
    with pytest.raises(CodecError, match="exceeds"):
        codec.decode_conf_state(bytes(raw))
    ents = bytearray(codec.encode_entries([Entry(1, 1)]))
    ents[0:4] = (2**32 - 1).to_bytes(4, "little")
    with pytest.raises(CodecError, match="exceeds"):
        codec.decode_entries(bytes(ents))


@pytest.mark.parametrize(
    "call",
    [
        lambda: codec.encode_entry(Entry(-1, 1)),
        lambda: codec.encode_entry(Entry(2**64, 1)),
        lambda: codec.encode_entry_into(bytearray(64), 0, Entry(1, -5)),
        lambda: codec.encode_entries([Entry(1, 2**64)]),
        lambda: codec.encode_hard_state(HardState(term=-1)),
        lambda: codec.encode_conf_state(ConfState(voters=(-1,))),
        lambda: codec.encode_snapshot(Snapshot(SnapshotMetadata(index=-1))),
        lambda: codec.encode_conf_change(ConfChange(ConfChangeType.ADD_NODE, -1)),
        lambda: codec.encode_message(Message(MessageType.MSG_APP, to=-1)),
    ],
)
def test_unencodable_values_raise_value_error_not_codec_error(call: Callable[[], object]) -> None:
    with pytest.raises(ValueError) as info:
        call()
    assert not isinstance(info.value, CodecError)


def test_message_with_snapshot_and_entries() -> None:
    snap = Snapshot(SnapshotMetadata(10, 3, ConfState((1, 2, 3), (4,))), b"state")
    m = Message(
        MessageType.MSG_SNAP,
        to=2,
        frm=1,
        term=3,
        snapshot=snap,
        reject=True,
        reject_hint=9,
        context=b"ctx",
        entries=(Entry(3, 11, data=b"a"), Entry(3, 12, EntryType.CONF_CHANGE, b"b")),
    )
    assert codec.decode_message(codec.encode_message(m)) == m
    empty = Message(MessageType.MSG_HEARTBEAT, snapshot=Snapshot())
    decoded = codec.decode_message(codec.encode_message(empty))
    assert decoded.snapshot == Snapshot() and decoded == empty
