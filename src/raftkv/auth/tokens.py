"""Auth tokens as etcd 3.5 issues and checks them (``server/auth/{simple_token,jwt,options,
nop}.go``, ``NewTokenProvider`` of ``store.go``).  Tokens are member-local, never replicated.

Owns: parsing etcd's ``--auth-token`` spec, the three providers and their shared interface.

``--auth-token`` is ``TYPE[,NAME=VALUE]...`` (etcd's ``decomposeOpts``).  ``simple`` (the
default) ignores its options; ``jwt`` reads ``sign-method`` (required: RS/PS/ES/HS 256, 384 or
512), ``pub-key`` and ``priv-key`` (PEM files; for HS* the private key file's bytes are the
shared secret) and ``ttl`` (a Go duration, default ``5m``), and ignores other names; an empty
type is the no-op provider.  ``new_token_provider`` returns a provider or raises
``AuthTokenError`` with etcd's text (the constants below: ``auth: invalid auth options`` for bad
syntax, a duplicate name, an unknown type, an unreadable file, a bad ttl or sign method;
golang-jwt's PEM texts; ``unsupported signing method: ...`` for ``none`` and ``EdDSA``).  A JWT
provider given only a public key verifies tokens but cannot issue them.

- ``SimpleTokenProvider``: 16 random ASCII letters (``gen_token_prefix``, chosen by the member
  proposing the Authenticate request) + ``.`` + the Raft index of the entry that issued it.  A
  member knows a token once it applied that index: the caller waits until
  ``simple_token_index(token)`` is applied before ``info`` (etcd's ``indexWaiter``).  A token
  lives ``--auth-token-ttl`` seconds (default 300; 0 means the default) after its last use;
  ``disable`` forgets every token, ``invalidate_user`` a user's.
- ``JwtTokenProvider``: claims ``username``, ``revision`` (the auth revision when issued) and
  ``exp`` (now + ttl, Unix seconds), checked as golang-jwt v4 checks them (``exp``, ``iat``,
  ``nbf`` when present, to the second, no leeway).  The signatures are PyJWT's algorithms; the
  compact form and the claims are written and read here, as golang-jwt does, so tokens are
  byte-identical to etcd's for the deterministic algorithms (HS*, RS*).
- ``NopTokenProvider``: ``--auth-token ""``.

Clocks and randomness are injected (``now``: seconds, monotonic for simple tokens and Unix time
for JWTs by default; ``rng``).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
import random
import re
import secrets
import string
import time
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple, Protocol

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from jwt.algorithms import Algorithm, get_default_algorithms

from raftkv import errors


class AuthInfo(NamedTuple):
    """Who a request comes from and the auth revision its token (or the store) vouches for."""

    username: str
    revision: int


class AuthTokenError(ValueError):
    """An ``--auth-token`` spec etcd would refuse at start; the message is etcd's."""


class TokenAssignError(Exception):
    """A token cannot be issued (etcd answers Authenticate with this text, code Unknown)."""


INVALID_AUTH_OPTS = "auth: invalid auth options"
MISSING_KEY = "auth: missing key data"
KEY_MISMATCH = "auth: public and private keys don't match"
VERIFY_ONLY = "auth: token signing attempted with verify-only key"
KEY_MUST_BE_PEM = "invalid key: Key must be a PEM encoded PKCS1 or PKCS8 key"
NOT_RSA_PRIVATE = "key is not a valid RSA private key"
NOT_RSA_PUBLIC = "key is not a valid RSA public key"
NOT_EC_PRIVATE = "key is not a valid ECDSA private key"
NOT_EC_PUBLIC = "key is not a valid ECDSA public key"
INVALID_KEY = "key is invalid"

DEFAULT_SIMPLE_TOKEN_TTL = 300.0
"""Seconds: etcd's ``--auth-token-ttl`` default."""
DEFAULT_JWT_TTL_NS = 5 * 60 * 10**9
"""etcd's JWT ``ttl`` default (5m)."""
SIMPLE_TOKEN_LENGTH = 16
_LETTERS = string.ascii_lowercase + string.ascii_uppercase


class TokenProvider(Protocol):
    """What the auth store needs of a token provider (etcd's ``TokenProvider``)."""

    def enable(self) -> None: ...

    def disable(self) -> None: ...

    def invalidate_user(self, username: str) -> None: ...

    def gen_token_prefix(self) -> str:
        """The random part of a simple token, chosen at propose time; ``""`` for the others."""
        ...

    def assign(self, username: str, revision: int, *, index: int = 0, prefix: str = "") -> str:
        """A new token for ``username`` (at apply: ``index`` of the Authenticate entry and the
        ``prefix`` it carries, used by simple tokens).  Raises ``TokenAssignError`` or, for the
        no-op provider, ``ERR_AUTH_FAILED``."""
        ...

    def info(self, token: str, revision: int) -> AuthInfo | None:
        """Who ``token`` belongs to (simple tokens report ``revision``, the store's current
        one; JWTs their own claim); None when it is not a valid token.  Never raises."""
        ...


# -- the --auth-token spec ----------------------------------------------------------------


def decompose_options(spec: str) -> tuple[str, dict[str, str]]:
    """etcd's ``decomposeOpts``: (type, options) of an ``--auth-token`` spec."""
    kind, *pairs = spec.split(",")
    options: dict[str, str] = {}
    for pair in pairs:
        parts = pair.split("=")
        if len(parts) != 2 or parts[0] in options:
            raise AuthTokenError(INVALID_AUTH_OPTS)
        options[parts[0]] = parts[1]
    return kind, options


def new_token_provider(
    spec: str,
    *,
    simple_ttl: float = DEFAULT_SIMPLE_TOKEN_TTL,
    now: Callable[[], float] | None = None,
    rng: random.Random | None = None,
    read_file: Callable[[str], bytes] | None = None,
) -> TokenProvider:
    """The provider ``spec`` (``--auth-token``) names; raises ``AuthTokenError`` only.

    ``simple_ttl`` is ``--auth-token-ttl``; ``now`` overrides both providers' clocks;
    ``read_file`` reads a key file (default: the file system).
    """
    kind, options = decompose_options(spec)
    if kind == "simple":
        return SimpleTokenProvider(simple_ttl, now=now or time.monotonic, rng=rng)
    if kind == "jwt":
        return JwtTokenProvider.from_options(
            options, read_file=read_file or _read_file, now=now or time.time
        )
    if kind == "":
        return NopTokenProvider()
    raise AuthTokenError(INVALID_AUTH_OPTS)


def _read_file(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


_UNITS_NS = {
    "ns": 1,
    "us": 10**3,
    "\u00b5s": 10**3,
    "\u03bcs": 10**3,
    "ms": 10**6,
    "s": 10**9,
    "m": 60 * 10**9,
    "h": 3600 * 10**9,
}


def parse_go_duration(text: str) -> int:
    """Nanoseconds of a Go duration (``time.ParseDuration``: ``300ms``, ``-1.5h``, ``2h45m``,
    ``0``); raises ``ValueError`` for anything Go refuses."""
    bad = ValueError(f"time: invalid duration {text!r}")
    s, neg = text, False
    if s[:1] in ("-", "+"):
        neg, s = s[0] == "-", s[1:]
    if s == "0":
        return 0
    if not s:
        raise bad
    total = 0
    while s:
        i = 0
        while i < len(s) and "0" <= s[i] <= "9":
            i += 1
        whole, pre, s = int(s[:i] or "0"), i > 0, s[i:]
        if whole > 1 << 63:
            raise bad
        frac, scale, post = 0, 1.0, False
        if s.startswith("."):
            s = s[1:]
            i, overflow = 0, False
            while i < len(s) and "0" <= s[i] <= "9":
                digit = ord(s[i]) - ord("0")
                if not overflow and frac <= ((1 << 63) - 1) // 10 and frac * 10 + digit <= 1 << 63:
                    frac, scale = frac * 10 + digit, scale * 10
                else:  # Go keeps the digits that fit and ignores the rest
                    overflow = True
                i += 1
            post, s = i > 0, s[i:]
        if not pre and not post:
            raise bad
        i = 0
        while i < len(s) and s[i] != "." and not "0" <= s[i] <= "9":
            i += 1
        unit = _UNITS_NS.get(s[:i])
        if unit is None or whole > (1 << 63) // unit:
            raise bad
        value = whole * unit + (int(float(frac) * (float(unit) / scale)) if frac else 0)
        s = s[i:]
        total += value
        if value > 1 << 63 or total > 1 << 63:
            raise bad
    if not neg and total > (1 << 63) - 1:
        raise bad
    return -total if neg else total


# -- keys -----------------------------------------------------------------------------------

_PEM = re.compile(rb"-----BEGIN ([^\r\n]*?)-----[ \t]*\r?\n(.*?)-----END \1-----", re.DOTALL)
_NIST_CURVES = frozenset(("secp224r1", "secp256r1", "secp384r1", "secp521r1"))
_PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


def _pem_der(data: bytes) -> bytes:
    """The bytes of the first PEM block (Go's ``pem.Decode``: headers skipped, a block whose
    base64 is bad is passed over); raises golang-jwt's not-PEM error."""
    for match in _PEM.finditer(data):
        lines = match.group(2).split(b"\n")
        while lines and b":" in lines[0]:  # RFC 1421 headers ("Proc-Type: ...")
            lines.pop(0)
        body = re.sub(rb"[ \t\r\n]", b"", b"".join(lines))
        try:
            return base64.b64decode(body, validate=True)
        except binascii.Error:
            continue
    raise AuthTokenError(KEY_MUST_BE_PEM)


def _private_key(data: bytes, want: type[Any], not_it: str) -> Any:
    der = _pem_der(data)
    try:
        key = serialization.load_der_private_key(der, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise AuthTokenError("x509: failed to parse private key") from None
    if isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name not in _NIST_CURVES:
        raise AuthTokenError("x509: unknown elliptic curve")
    if not isinstance(key, want):
        raise AuthTokenError(not_it)
    return key


def _public_key(data: bytes, want: type[Any], not_it: str) -> Any:
    """A PKIX public key or a certificate's (golang-jwt v4 takes no PKCS#1 public key)."""
    der = _pem_der(data)
    key: Any
    try:
        if _inner_tag(der) == 0x02:  # SEQUENCE { INTEGER n, INTEGER e }: PKCS#1, not PKIX
            raise ValueError("PKCS#1 public key")
        key = serialization.load_der_public_key(der)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        try:
            key = x509.load_der_x509_certificate(der).public_key()
        except (ValueError, TypeError, UnsupportedAlgorithm):
            raise AuthTokenError("x509: failed to parse public key") from None
    if isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name not in _NIST_CURVES:
        raise AuthTokenError("x509: unknown elliptic curve")
    if not isinstance(key, want):
        raise AuthTokenError(not_it)
    return key


def _inner_tag(der: bytes) -> int | None:
    """The tag of the first element inside a DER SEQUENCE; None if ``der`` is not one."""
    if len(der) < 2 or der[0] != 0x30:
        return None
    n = der[1]
    offset = 2 + (n & 0x7F if n & 0x80 else 0)
    return der[offset] if offset < len(der) else None


class _Method(NamedTuple):
    family: str  # "RS", "PS", "ES", "HS"
    hash_bits: int


_METHODS = {
    f"{family}{bits}": _Method(family, bits)
    for family in ("RS", "PS", "ES", "HS")
    for bits in (256, 384, 512)
}
_UNSUPPORTED = {"none": "*jwt.signingMethodNone", "EdDSA": "*jwt.SigningMethodEd25519"}
_EC_CURVE_BITS = {256: 256, 384: 384, 512: 521}


def _load_key(method: _Method, private: bytes, public: bytes) -> Any:
    """etcd's ``jwtOptions.Key``: the signing key (or the public key alone: verify-only)."""
    if method.family == "HS":
        if not private:
            raise AuthTokenError(MISSING_KEY)
        return private
    rsa_family = method.family in ("RS", "PS")
    want_priv: type[Any] = rsa.RSAPrivateKey if rsa_family else ec.EllipticCurvePrivateKey
    want_pub: type[Any] = rsa.RSAPublicKey if rsa_family else ec.EllipticCurvePublicKey
    not_priv = NOT_RSA_PRIVATE if rsa_family else NOT_EC_PRIVATE
    not_pub = NOT_RSA_PUBLIC if rsa_family else NOT_EC_PUBLIC
    priv = _private_key(private, want_priv, not_priv) if private else None
    pub = _public_key(public, want_pub, not_pub) if public else None
    if priv is None:
        if pub is None:
            raise AuthTokenError(MISSING_KEY)
        return pub
    if pub is not None and _all_differs(method, priv.public_key(), pub):
        raise AuthTokenError(KEY_MISMATCH)
    return priv


def _all_differs(method: _Method, mine: Any, given: Any) -> bool:
    """etcd's mismatch test, which needs every compared part to differ (so it seldom fires)."""
    a, b = mine.public_numbers(), given.public_numbers()
    if method.family == "ES":
        return bool(mine.curve.name != given.curve.name and a.x != b.x and a.y != b.y)
    return bool(a.e != b.e and a.n != b.n)


# -- providers -------------------------------------------------------------------------------


class _Stateless:
    """A provider that keeps no token: nothing to enable, disable or invalidate, no prefix."""

    def enable(self) -> None:
        pass

    def disable(self) -> None:
        pass

    def invalidate_user(self, username: str) -> None:
        pass

    def gen_token_prefix(self) -> str:
        return ""


class NopTokenProvider(_Stateless):
    """``--auth-token ""``: knows no token and issues none."""

    def assign(self, username: str, revision: int, *, index: int = 0, prefix: str = "") -> str:
        raise errors.ERR_AUTH_FAILED()

    def info(self, token: str, revision: int) -> AuthInfo | None:
        return None


_INDEX = re.compile(r"[0-9]+")


def simple_token_index(token: str) -> int | None:
    """The Raft index that issued a simple token; None when ``token`` is not one."""
    parts = token.split(".")
    if len(parts) != 2 or not _INDEX.fullmatch(parts[1]):
        return None
    index = int(parts[1])
    return index if index < 1 << 64 else None


class SimpleTokenProvider:
    """etcd's simple tokens: an in-memory table token -> (user, expiry)."""

    def __init__(
        self,
        ttl: float = DEFAULT_SIMPLE_TOKEN_TTL,
        *,
        now: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self.ttl = ttl if ttl > 0 else DEFAULT_SIMPLE_TOKEN_TTL
        self._now = now
        self._rng = rng if rng is not None else secrets.SystemRandom()
        self._enabled = False
        self._tokens: dict[str, tuple[str, float]] = {}

    @property
    def enabled(self) -> bool:
        return self._enabled

    def enable(self) -> None:
        self._enabled = True

    def disable(self) -> None:
        self._enabled = False
        self._tokens = {}

    def invalidate_user(self, username: str) -> None:
        self._tokens = {t: e for t, e in self._tokens.items() if e[0] != username}

    def gen_token_prefix(self) -> str:
        return "".join(self._rng.choice(_LETTERS) for _ in range(SIMPLE_TOKEN_LENGTH))

    def assign(self, username: str, revision: int, *, index: int = 0, prefix: str = "") -> str:
        """``prefix.index``; remembered only while enabled (etcd returns it all the same)."""
        token = f"{prefix}.{index}"
        if not self._enabled:
            return token
        if token in self._tokens:  # etcd panics: two entries cannot carry the same prefix
            raise RuntimeError("failed to assign already-used simple token to a user")
        self._tokens[token] = (username, self._now() + self.ttl)
        return token

    def info(self, token: str, revision: int) -> AuthInfo | None:
        """The token's user, its life extended by ``ttl``; None if unknown or expired."""
        if simple_token_index(token) is None:
            return None
        entry = self._tokens.get(token)
        if entry is None:
            return None
        now = self._now()
        if now > entry[1]:
            del self._tokens[token]
            return None
        self._tokens[token] = (entry[0], now + self.ttl)
        return AuthInfo(entry[0], revision)

    def sweep(self) -> int:
        """Forget expired tokens (etcd's once-a-second keeper); returns how many."""
        now = self._now()
        expired = [t for t, (_user, until) in self._tokens.items() if now > until]
        for token in expired:
            del self._tokens[token]
        return len(expired)


class JwtTokenProvider(_Stateless):
    """etcd's JWT tokens: stateless, signed with the configured key."""

    def __init__(
        self,
        sign_method: str,
        key: Any,
        ttl_ns: int = DEFAULT_JWT_TTL_NS,
        *,
        now: Callable[[], float] = time.time,
    ) -> None:
        """``key``: bytes for HS*, else a ``cryptography`` RSA/EC private key (or public key:
        verify-only).  Raises ``AuthTokenError`` for an unknown method."""
        method = _METHODS.get(sign_method)
        if method is None:
            raise AuthTokenError(INVALID_AUTH_OPTS)
        self.sign_method = sign_method
        self.ttl_ns = ttl_ns
        self._method = method
        self._key = key
        self._now = now
        self._alg: Algorithm = get_default_algorithms()[sign_method]
        self._hash: Any = {256: hashes.SHA256, 384: hashes.SHA384, 512: hashes.SHA512}[
            method.hash_bits
        ]
        self.verify_only = isinstance(key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey)
        self._verify_key: Any = key.public_key() if isinstance(key, _PrivateKey) else key

    @classmethod
    def from_options(
        cls,
        options: Mapping[str, str],
        *,
        read_file: Callable[[str], bytes] = _read_file,
        now: Callable[[], float] = time.time,
    ) -> JwtTokenProvider:
        """etcd's ``newTokenProviderJWT``; raises ``AuthTokenError`` only."""
        try:
            ttl = options.get("ttl", "")
            ttl_ns = parse_go_duration(ttl) if ttl else DEFAULT_JWT_TTL_NS
            public = read_file(options["pub-key"]) if options.get("pub-key") else b""
            private = read_file(options["priv-key"]) if options.get("priv-key") else b""
        except (ValueError, OSError):
            raise AuthTokenError(INVALID_AUTH_OPTS) from None
        name = options.get("sign-method", "")
        if name in _UNSUPPORTED:
            raise AuthTokenError(f"unsupported signing method: {_UNSUPPORTED[name]}")
        method = _METHODS.get(name)
        if method is None:
            raise AuthTokenError(INVALID_AUTH_OPTS)
        return cls(name, _load_key(method, private, public), ttl_ns, now=now)

    def assign(self, username: str, revision: int, *, index: int = 0, prefix: str = "") -> str:
        """A signed token: header ``{"alg":..,"typ":"JWT"}``, claims ``exp``, ``revision``,
        ``username`` (as Go's encoding/json writes them)."""
        if self.verify_only:
            raise TokenAssignError(VERIFY_ONLY)
        if self._method.family == "ES" and not self._curve_fits(self._key):
            raise TokenAssignError(INVALID_KEY)
        exp = math.floor(self._now() + self.ttl_ns / 1e9)
        header = f'{{"alg":"{self.sign_method}","typ":"JWT"}}'
        claims = f'{{"exp":{exp},"revision":{revision},"username":{go_json_string(username)}}}'
        signing_input = _b64(header.encode()) + "." + _b64(claims.encode())
        signature = self._alg.sign(signing_input.encode("ascii"), self._key)
        return signing_input + "." + _b64(signature)

    def info(self, token: str, revision: int) -> AuthInfo | None:
        """The token's ``username`` and ``revision`` claims if it is valid now."""
        parts = token.split(".")
        if len(parts) != 3:
            return None
        header, claims, signature = (_go_json(parts[0]), _go_json(parts[1]), _unb64(parts[2]))
        if not isinstance(header, dict) or not isinstance(claims, dict) or signature is None:
            return None
        if header.get("alg") != self.sign_method:
            return None
        if not self._verify(f"{parts[0]}.{parts[1]}".encode("ascii"), signature):
            return None
        now = math.floor(self._now())
        try:
            exp, iat, nbf = (_claim_time(claims, name) for name in ("exp", "iat", "nbf"))
        except ValueError:
            return None
        if (exp is not None and now >= exp) or any(t is not None and now < t for t in (iat, nbf)):
            return None
        username, rev = claims.get("username"), claims.get("revision")
        if not isinstance(username, str) or not isinstance(rev, float) or not 0 <= rev < 2.0**64:
            return None
        return AuthInfo(username, int(rev))

    def _verify(self, message: bytes, signature: bytes) -> bool:
        key = self._verify_key
        if self._method.family == "PS":  # golang-jwt verifies PSS with any salt length
            try:
                pss = padding.PSS(mgf=padding.MGF1(self._hash()), salt_length=padding.PSS.AUTO)
                key.verify(signature, message, pss, self._hash())
            except (InvalidSignature, ValueError):
                return False
            return True
        if self._method.family == "ES" and not self._curve_fits(key):
            return False
        try:
            return bool(self._alg.verify(message, key, signature))
        except (ValueError, TypeError):
            return False

    def _curve_fits(self, key: Any) -> bool:
        return bool(key.curve.key_size == _EC_CURVE_BITS[self._method.hash_bits])


# -- Go's JSON and base64url ----------------------------------------------------------------


def _claim_time(claims: dict[str, Any], name: str) -> int | None:
    """golang-jwt v4's reading of a time claim: None when absent or 0, else the whole second
    (floored) of the number; ``ValueError`` when it is not a number (the token is invalid)."""
    if name not in claims:
        return None
    value = claims[name]
    if not isinstance(value, float):
        raise ValueError(f"claim {name} is not a number")
    return None if value == 0 else math.floor(value)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


_B64URL = re.compile(r"[A-Za-z0-9_-]*")


def _unb64(text: str) -> bytes | None:
    """Go's ``base64.RawURLEncoding.DecodeString`` (no padding); None if invalid."""
    if not _B64URL.fullmatch(text) or len(text) % 4 == 1:
        return None
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _go_number(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # Go cannot hold it in a float64: the token is refused
        raise ValueError(text)
    return value


def _no_constant(text: str) -> float:
    raise ValueError(text)


def _go_json(segment: str) -> Any:
    """A JSON segment decoded as Go does into ``interface{}`` (every number a float64);
    None when it does not decode."""
    data = _unb64(segment)
    if data is None:
        return None
    try:
        return json.loads(
            data.decode("utf-8"),
            parse_int=_go_number,
            parse_float=_go_number,
            parse_constant=_no_constant,
        )
    except (ValueError, RecursionError):
        return None


_GO_ESCAPES = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}
_GO_ESCAPES |= {"\b": "\\b", "\f": "\\f"}  # since Go 1.22


def go_json_string(text: str) -> str:
    """``text`` as Go's ``json.Marshal`` writes a string (HTML-safe escapes, U+2028/2029
    escaped, lone surrogates replaced by U+FFFD)."""
    out = ['"']
    for ch in text:
        code = ord(ch)
        if ch in _GO_ESCAPES:
            out.append(_GO_ESCAPES[ch])
        elif code < 0x20 or ch in "<>&" or code in (0x2028, 0x2029):
            out.append(f"\\u{code:04x}")
        elif 0xD800 <= code <= 0xDFFF:
            out.append("\ufffd")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def token_fingerprint(token: str) -> str:
    """etcd's ``redactToken``: the first 12 hex digits of the token's SHA-256, for logs."""
    return hashlib.sha256(token.encode()).hexdigest()[:12]
