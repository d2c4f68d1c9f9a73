"""raftkv.auth.passwords: bcrypt as etcd (Go's x/crypto/bcrypt) uses it."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from raftkv.auth.passwords import (
    DEFAULT_COST,
    MAX_COST,
    MIN_COST,
    PasswordTooLongError,
    check_password,
    decode_hash,
    effective_cost,
    encode_hash,
    hash_password,
    hashed_for_change_password,
    hashed_for_user_add,
)

FAST = MIN_COST
# A hash made by Go's bcrypt (x/crypto/bcrypt's own test vector).
GO_HASH = b"$2a$10$XajjQvNhvvRt5GSeFk1xFeyqRrsxkhBkUiQeg0dt.wU1qD4aFDcga"


def test_etcd_cost_facts() -> None:
    assert (DEFAULT_COST, MIN_COST, MAX_COST) == (10, 4, 31)
    assert effective_cost(4) == 4
    assert effective_cost(31) == 31
    assert effective_cost(3) == DEFAULT_COST
    assert effective_cost(32) == DEFAULT_COST
    assert effective_cost(0) == DEFAULT_COST


def test_hash_is_go_format_and_verifies() -> None:
    hashed = hash_password("s3cret", FAST)
    assert hashed.startswith(b"$2a$04$")
    assert len(hashed) == 60
    assert check_password(hashed, "s3cret")
    assert check_password(hashed, b"s3cret")
    assert not check_password(hashed, "s3cret ")
    assert hash_password("s3cret", FAST) != hashed  # a new salt each time


def test_default_cost() -> None:
    assert hash_password("x").startswith(b"$2a$10$")


def test_verifies_a_hash_made_by_go() -> None:
    assert check_password(GO_HASH, "allmine")
    assert not check_password(GO_HASH, "allyours")


def test_cost_out_of_range_is_refused() -> None:
    with pytest.raises(ValueError, match="cost"):
        hash_password("x", 3)
    with pytest.raises(ValueError, match="cost"):
        hash_password("x", 32)


def test_seventy_two_bytes_at_most() -> None:
    hashed = hash_password("a" * 72, FAST)
    with pytest.raises(PasswordTooLongError) as info:
        hash_password("a" * 73, FAST)
    assert str(info.value) == "bcrypt: password length exceeds 72 bytes"
    # verification, as Go's, looks at the first 72 bytes only
    assert check_password(hashed, "a" * 80)
    # bytes, not characters
    with pytest.raises(PasswordTooLongError):
        hash_password("\u00e9" * 37, FAST)


def test_nul_bytes_count() -> None:
    hashed = hash_password(b"a\x00b", FAST)
    assert check_password(hashed, b"a\x00b")
    assert not check_password(hashed, b"a")


def test_malformed_or_empty_hash_matches_nothing() -> None:
    assert not check_password(b"", "")
    assert not check_password(b"", "x")
    assert not check_password(b"garbage", "x")
    assert not check_password(b"$2a$04$short", "x")


def test_base64_form_of_a_request() -> None:
    hashed = hash_password("pw", FAST)
    text = encode_hash(hashed)
    assert text == base64.b64encode(hashed).decode()
    assert decode_hash(text) == hashed
    assert decode_hash("") == b""
    assert decode_hash("Zm9v\r\n") == b"foo"  # Go ignores CR and LF
    assert decode_hash("Zm9") is None  # padding required
    assert decode_hash("Zm9v!") is None
    assert decode_hash("Zm9v\u00e9") is None


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=40))
def test_decode_hash_returns_bytes_or_none(text: str) -> None:
    out = decode_hash(text)
    assert out is None or isinstance(out, bytes)


def test_request_fields_as_etcd_fills_them() -> None:
    added = hashed_for_user_add("pw", False, FAST)
    hashed = decode_hash(added)
    assert hashed is not None and check_password(hashed, "pw")
    # etcd hashes an empty password on UserAdd ...
    empty = decode_hash(hashed_for_user_add("", False, FAST))
    assert empty is not None and check_password(empty, "")
    # ... but not for a no-password user, nor on a change to ""
    assert hashed_for_user_add("pw", True, FAST) == ""
    assert hashed_for_change_password("", FAST) == ""
    changed = decode_hash(hashed_for_change_password("new", FAST))
    assert changed is not None and check_password(changed, "new")
