"""Password hashing as etcd does it: bcrypt, hashed by the member that proposes the request.

Owns the bcrypt cost rules, hashing, the base64 form a request carries and verification.

Where each step runs (etcd 3.5's ``EtcdServer.UserAdd`` / ``UserChangePassword`` and
``authStore.CheckPassword``):

- at propose time, on the member that received the request: ``hashed_for_user_add`` /
  ``hashed_for_change_password`` turn the client's password into the ``hashedPassword`` field
  the entry carries (base64 of the bcrypt hash; the clear password never enters the log).  A
  user added without ``no_password`` gets a hash even of an empty password; a password change
  to ``""`` carries no hash, and the store then keeps an empty hash nothing matches;
- at apply time, ``decode_hash`` recovers the hash (deterministic: every member stores the same
  bytes; a field that is not base64 is etcd's ``ErrNoPasswordUser``);
- at authentication, outside apply: ``check_password``.

bcrypt facts (Go's ``golang.org/x/crypto/bcrypt`` as etcd 3.5 builds with it): hashes carry the
``$2a$`` prefix; cost 4 to 31, default 10 (etcd's ``--bcrypt-cost``; etcd replaces a cost
outside that range by the default: ``effective_cost``); a password longer than 72 bytes cannot
be hashed (``PasswordTooLongError``, Go's text), while verification looks only at its first 72
bytes, as Go's does.  Passwords are UTF-8 encoded.
"""

from __future__ import annotations

import base64
import binascii

import bcrypt

DEFAULT_COST = 10
"""Go's ``bcrypt.DefaultCost``: etcd's ``--bcrypt-cost`` default."""
MIN_COST = 4
MAX_COST = 31
MAX_PASSWORD_BYTES = 72


class PasswordTooLongError(ValueError):
    """The password exceeds bcrypt's 72 bytes (etcd answers with this text, code Unknown)."""

    def __init__(self) -> None:
        super().__init__("bcrypt: password length exceeds 72 bytes")


def effective_cost(cost: int) -> int:
    """The cost etcd's auth store uses for a configured ``--bcrypt-cost``: the default when the
    value is outside ``MIN_COST..MAX_COST``."""
    return cost if MIN_COST <= cost <= MAX_COST else DEFAULT_COST


def _utf8(password: str | bytes) -> bytes:
    return password.encode() if isinstance(password, str) else password


def hash_password(password: str | bytes, cost: int = DEFAULT_COST) -> bytes:
    """A new ``$2a$`` bcrypt hash of ``password`` (a random salt: run it at propose time only).

    Raises ``PasswordTooLongError`` past 72 bytes and ``ValueError`` for a cost outside
    ``MIN_COST..MAX_COST``.
    """
    data = _utf8(password)
    if not MIN_COST <= cost <= MAX_COST:
        raise ValueError(f"bcrypt cost {cost} is outside {MIN_COST}..{MAX_COST}")
    if len(data) > MAX_PASSWORD_BYTES:
        raise PasswordTooLongError()
    return bytes(bcrypt.hashpw(data, bcrypt.gensalt(rounds=cost, prefix=b"2a")))


def check_password(hashed: bytes, password: str | bytes) -> bool:
    """Whether ``password`` matches the bcrypt ``hashed``; False for an empty or malformed
    hash (Go's ``CompareHashAndPassword`` error), never raises."""
    data = _utf8(password)[:MAX_PASSWORD_BYTES]
    if not hashed:
        return False
    try:
        return bool(bcrypt.checkpw(data, hashed))
    except ValueError:
        return False


def encode_hash(hashed: bytes) -> str:
    """The ``hashedPassword`` field of a request: standard base64 with padding."""
    return base64.b64encode(hashed).decode("ascii")


def decode_hash(text: str) -> bytes | None:
    """The hash a request's ``hashedPassword`` carries (``b""`` for ``""``); None when it is
    not base64 (Go's ``base64.StdEncoding.DecodeString``: padding required, CR and LF
    ignored)."""
    cleaned = text.replace("\r", "").replace("\n", "")
    try:
        return base64.b64decode(cleaned.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        return None


def hashed_for_user_add(password: str, no_password: bool, cost: int = DEFAULT_COST) -> str:
    """The ``hashedPassword`` of a UserAdd entry (etcd hashes even an empty password; a
    ``no_password`` user has none).  Raises as ``hash_password``."""
    if no_password:
        return ""
    return encode_hash(hash_password(password, cost))


def hashed_for_change_password(password: str, cost: int = DEFAULT_COST) -> str:
    """The ``hashedPassword`` of a UserChangePassword entry: none for an empty password (the
    store then keeps an empty hash, which no password matches).  Raises as ``hash_password``."""
    if not password:
        return ""
    return encode_hash(hash_password(password, cost))
