"""The entry-data encoding of requests and the request ID generator."""

from __future__ import annotations

import pytest

from raftkv.server.requests import (
    RequestDecodeError,
    RequestIdGenerator,
    RequestKind,
    decode_request,
    encode_request,
)


def test_round_trip() -> None:
    data = encode_request(RequestKind.TXN, 0xDEADBEEF, b"body")
    assert decode_request(data)[:3] == (RequestKind.TXN, 0xDEADBEEF, b"body")


@pytest.mark.parametrize("data", [b"", b"\x01" * 8, b"\xff" + b"\x00" * 8])
def test_garbage_is_refused(data: bytes) -> None:
    with pytest.raises(RequestDecodeError):
        decode_request(data)


def test_ids_are_unique_and_carry_the_member_prefix() -> None:
    gen = RequestIdGenerator(0xABCD1234, now_ms=1_700_000_000_000)
    ids = [gen.next() for _ in range(10_000)]
    assert len(set(ids)) == len(ids)
    assert all(i >> 48 == 0x1234 for i in ids)
    other = RequestIdGenerator(0xABCD1235, now_ms=1_700_000_000_000)
    assert not set(ids) & {other.next() for _ in range(10_000)}


def test_format_2_carries_the_user_and_auth_revision() -> None:
    data = encode_request(RequestKind.PUT, 7, b"body", "alice", 42)
    assert data[0] == 0x82
    assert decode_request(data) == (RequestKind.PUT, 7, b"body", "alice", 42)
    assert decode_request(encode_request(RequestKind.PUT, 7, b"body")).username == ""


@pytest.mark.parametrize(
    "data",
    [
        b"\x82\x01" + bytes(8),  # shorter than the header
        b"\x82\x01" + bytes(16) + b"\x00\x09ab",  # ends inside the user name
        b"\x82\x01" + bytes(16) + b"\x00\x02\xff\xfe",  # user name not UTF-8
    ],
)
def test_a_broken_format_2_header_is_refused(data: bytes) -> None:
    with pytest.raises(RequestDecodeError):
        decode_request(data)
