"""The front link's framing (``raftkv.app.front_link``): frames split anywhere in the byte
stream come out whole and in order, a broken stream is refused, the caller's token and
certificate CN survive the trip (into the member's servicer context)."""

from __future__ import annotations

import random

import pytest

from raftkv.app.front_link import (
    HEAD,
    HELLO,
    FrameReader,
    LinkError,
    request_body,
    split_request,
)
from raftkv.app.fronts import link_context


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
@pytest.mark.parametrize("cn", [None, "alice"])
def test_the_callers_fields_and_the_request_survive_the_trip(
    token: str | None, cn: str | None
) -> None:
    head, request = request_body(token, cn, b"\x0a\x03key")
    assert split_request(head + request) == (token, cn, b"\x0a\x03key")
    context = link_context(token, cn)
    assert context.invocation_metadata() == ((("token", token),) if token else ())
    assert context.auth_context() == ({"x509_common_name": [b"alice"]} if cn else {})


@pytest.mark.parametrize(
    ("body", "short"),
    [
        (b"", "token length"),
        (b"\x00", "token length"),
        (b"\x00\x05abc", "token"),
        (b"\x00\x00", "CN length"),
        (b"\x00\x00\x00\x03ab", "CN"),
    ],
)
def test_a_request_shorter_than_its_fields_is_refused(body: bytes, short: str) -> None:
    with pytest.raises(ValueError, match=f"shorter than its {short}$"):
        split_request(body)
