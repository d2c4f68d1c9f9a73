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
    assert decode_request(data) == (RequestKind.TXN, 0xDEADBEEF, b"body")


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
