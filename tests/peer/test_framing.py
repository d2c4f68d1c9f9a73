"""The frame format: round trips, corruption detection, and the decoder contract
("returns a frame or raises FrameError / ConnectionClosedError, nothing else")."""

from __future__ import annotations

import asyncio
import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from raftkv.peer import framing
from raftkv.peer.framing import (
    ConnectionClosedError,
    ErrorCode,
    FrameError,
    FrameKind,
    Hello,
    HelloOk,
    StreamKind,
)


def read_all(data: bytes) -> list[tuple[FrameKind, bytes]]:
    """Every frame in ``data`` (which must end exactly at a frame boundary)."""

    async def main() -> list[tuple[FrameKind, bytes]]:
        reader = asyncio.StreamReader()
        reader.feed_data(data)
        reader.feed_eof()
        out = []
        while True:
            try:
                out.append(await framing.read_frame(reader))
            except ConnectionClosedError:
                return out

    return asyncio.run(main())


def test_frames_round_trip() -> None:
    frames = [
        framing.encode_frame(FrameKind.MESSAGES, framing.encode_batch_payload([b"a", b"", b"xyz"])),
        framing.encode_frame(FrameKind.SNAP_ACK, b""),
        framing.encode_request(42, "hash", b"\x00\x01"),
        framing.encode_response(42, False, b"boom"),
    ]
    got = read_all(b"".join(frames))
    assert [k for k, _ in got] == [
        FrameKind.MESSAGES,
        FrameKind.SNAP_ACK,
        FrameKind.REQUEST,
        FrameKind.RESPONSE,
    ]
    assert [bytes(m) for m in framing.decode_batch_payload(got[0][1])] == [b"a", b"", b"xyz"]
    assert framing.decode_request(got[2][1]) == (42, "hash", b"\x00\x01")
    assert framing.decode_response(got[3][1]) == (42, False, b"boom")


def test_handshake_round_trip_and_bad_magic() -> None:
    h = Hello(framing.PROTOCOL_VERSION, StreamKind.SNAPSHOT, 0xABC, 1, 2)
    [(kind, payload)] = read_all(framing.encode_hello(h))
    assert kind is FrameKind.HELLO and framing.decode_hello(payload) == h
    with pytest.raises(FrameError, match="magic"):
        framing.decode_hello(b"XXXX" + payload[4:])
    ok = HelloOk(1, 0xABC, 2)
    [(_, payload)] = read_all(framing.encode_hello_ok(ok))
    assert framing.decode_hello_ok(payload) == ok
    [(_, payload)] = read_all(framing.encode_error(ErrorCode.CLUSTER_ID_MISMATCH))
    assert framing.decode_error(payload) == (ErrorCode.CLUSTER_ID_MISMATCH, "cluster ID mismatch")


@pytest.mark.parametrize("position", [0, 1, 3, 4, 5, 8, 9, 20, -1])
def test_any_flipped_byte_is_detected(position: int) -> None:
    good = framing.encode_frame(FrameKind.MESSAGES, bytes(range(40)))
    frame = bytearray(good)
    frame[position] ^= 0x10
    # Followed by intact frames, as on a live stream: nothing at or after the bad frame
    # may come out (a grown length swallows later frames and fails the CRC, or waits).
    try:
        got = read_all(bytes(frame) + good * 3)
    except FrameError:
        return
    assert got == []


def test_truncated_frame_is_a_closed_connection() -> None:
    frame = framing.encode_frame(FrameKind.MESSAGES, b"0123456789")
    assert read_all(frame[:-1]) == []


def test_oversized_length_is_rejected_before_reading() -> None:
    header = (framing.MAX_FRAME_PAYLOAD + 1).to_bytes(4, "big") + b"\x04" + b"\x00" * 4
    with pytest.raises(FrameError, match="exceeds"):
        read_all(header)
    with pytest.raises(ValueError):
        framing.encode_frame(FrameKind.MESSAGES, bytes(framing.MAX_FRAME_PAYLOAD + 1))


def test_malformed_payloads_raise_frame_error() -> None:
    bad_batches = [b"", b"\x00\x00\x00\x01", b"\x00\x00\x00\x01\x00\x00\x00\x05ab", b"\x00" * 5]
    for payload in bad_batches:
        with pytest.raises(FrameError):
            framing.decode_batch_payload(payload)
    with pytest.raises(FrameError):
        framing.decode_request(b"\x00" * 9 + b"\x05a")
    with pytest.raises(FrameError):
        framing.decode_response(b"\x00" * 8 + b"\x07")
    with pytest.raises(FrameError):
        framing.decode_snap_end(b"\x00" * 11)
    with pytest.raises(FrameError):
        framing.decode_error(b"\xee oops")


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_reader_returns_frames_or_raises_the_documented_errors(data: bytes) -> None:
    try:
        frames = read_all(data)
    except FrameError:
        return
    for kind, payload in frames:
        assert isinstance(kind, FrameKind) and isinstance(payload, bytes)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=120))
def test_payload_decoders_return_or_raise_frame_error(data: bytes) -> None:
    decoders = [
        framing.decode_hello,
        framing.decode_hello_ok,
        framing.decode_error,
        framing.decode_batch_payload,
        framing.decode_request,
        framing.decode_response,
        framing.decode_snap_begin,
        framing.decode_snap_chunk,
        framing.decode_snap_end,
    ]
    for decode in decoders:
        with contextlib.suppress(FrameError):
            decode(data)
