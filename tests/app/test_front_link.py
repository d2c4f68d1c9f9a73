"""The front link's framing (``raftkv.app.front_link``): frames split anywhere in the byte
stream come out whole and in order, a broken stream is refused, a token survives the trip."""

from __future__ import annotations

import random

import pytest

from raftkv.app.front_link import (
    HEAD,
    HELLO,
    FrameReader,
    LinkContext,
    LinkError,
    request_body,
    split_request,
)


def frame(call_id: int, code: int, body: bytes) -> bytes:
    return HEAD.pack(HEAD.size - 4 + len(body), call_id, code) + body


def test_frames_split_at_every_byte_come_out_whole_and_in_order() -> None:
    frames = [(i, i % 5, bytes([i]) * (i * 37 % 300)) for i in range(1, 60)]
    stream = b"".join(frame(*f) for f in frames)
    rng = random.Random(7)
    for _ in range(20):
        reader = FrameReader()
        got = []
        pos = 0
        while pos < len(stream):
            step = rng.randint(1, 64)
            got += reader.feed(stream[pos : pos + step])
            pos += step
        assert got == frames
    one_byte = FrameReader()
    assert [f for b in stream for f in one_byte.feed(bytes([b]))] == frames


def test_an_empty_body_and_the_hello_frame() -> None:
    reader = FrameReader()
    assert reader.feed(frame(4242, HELLO, b"")) == [(4242, HELLO, b"")]


@pytest.mark.parametrize("length", [0, 4, (1 << 31) + 1])
def test_a_length_out_of_range_breaks_the_link(length: int) -> None:
    reader = FrameReader()
    with pytest.raises(LinkError, match=f"frame length {length} at offset 0"):
        reader.feed(HEAD.pack(length, 1, 1) + b"x" * 8)


@pytest.mark.parametrize("token", [None, "tok.en-42", "ü" * 300])
def test_the_token_and_request_survive_the_trip(token: str | None) -> None:
    head, request = request_body(token, b"\x0a\x03key")
    assert split_request(head + request) == (token, b"\x0a\x03key")
    metadata = LinkContext(token).invocation_metadata()
    assert metadata == ((("token", token),) if token else ())


@pytest.mark.parametrize("body", [b"", b"\x00", b"\x00\x05abc"])
def test_a_request_shorter_than_its_token_is_refused(body: bytes) -> None:
    with pytest.raises(ValueError, match="shorter than its token"):
        split_request(body)
