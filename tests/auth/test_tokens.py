"""raftkv.auth.tokens: etcd's --auth-token spec, simple tokens and JWTs (golang-jwt v4's rules).

JWT keys are made here with ``cryptography``; clocks and randomness are injected."""

from __future__ import annotations

import base64
import contextlib
import datetime
import hashlib
import hmac
import json
import random
from collections.abc import Callable

import jwt as pyjwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from hypothesis import given, settings
from hypothesis import strategies as st

from raftkv import errors
from raftkv.auth.tokens import (
    DEFAULT_JWT_TTL_NS,
    INVALID_AUTH_OPTS,
    KEY_MISMATCH,
    KEY_MUST_BE_PEM,
    MISSING_KEY,
    NOT_EC_PRIVATE,
    NOT_RSA_PUBLIC,
    VERIFY_ONLY,
    AuthInfo,
    AuthTokenError,
    JwtTokenProvider,
    NopTokenProvider,
    SimpleTokenProvider,
    TokenAssignError,
    decompose_options,
    go_json_string,
    new_token_provider,
    parse_go_duration,
    simple_token_index,
    token_fingerprint,
)

PEM = serialization.Encoding.PEM
NO_ENC = serialization.NoEncryption()


def _priv_pem(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey, pkcs8: bool = False) -> bytes:
    fmt = (
        serialization.PrivateFormat.PKCS8
        if pkcs8
        else serialization.PrivateFormat.TraditionalOpenSSL
    )
    return key.private_bytes(PEM, fmt, NO_ENC)


def _pub_pem(key: rsa.RSAPublicKey | ec.EllipticCurvePublicKey) -> bytes:
    return key.public_bytes(PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


RSA_A = rsa.generate_private_key(public_exponent=65537, key_size=2048)
RSA_B = rsa.generate_private_key(public_exponent=3, key_size=2048)
RSA_C = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_KEYS = {
    256: ec.generate_private_key(ec.SECP256R1()),
    384: ec.generate_private_key(ec.SECP384R1()),
    512: ec.generate_private_key(ec.SECP521R1()),
}
SECRET = b"a shared secret of more than 64 bytes, for HS512 as well as HS256..."


def _certificate(key: rsa.RSAPrivateKey) -> bytes:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "etcd")])
    start = datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(start)
        .not_valid_after(start + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(PEM)


FILES: dict[str, bytes] = {
    "rsa.key": _priv_pem(RSA_A),
    "rsa8.key": _priv_pem(RSA_A, pkcs8=True),
    "rsa.pub": _pub_pem(RSA_A.public_key()),
    "rsa.crt": _certificate(RSA_A),
    "rsa1.pub": RSA_A.public_key().public_bytes(PEM, serialization.PublicFormat.PKCS1),
    "rsab.pub": _pub_pem(RSA_B.public_key()),
    "rsac.pub": _pub_pem(RSA_C.public_key()),
    "hs.key": SECRET,
    "junk": b"not a key",
    **{f"ec{bits}.key": _priv_pem(k) for bits, k in EC_KEYS.items()},
    **{f"ec{bits}8.key": _priv_pem(k, pkcs8=True) for bits, k in EC_KEYS.items()},
    **{f"ec{bits}.pub": _pub_pem(k.public_key()) for bits, k in EC_KEYS.items()},
}


def read(path: str) -> bytes:
    try:
        return FILES[path]
    except KeyError:
        raise FileNotFoundError(path) from None


class Clock:
    def __init__(self, t: float = 1_700_000_000.25) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def jwt_provider(spec: str, clock: Callable[[], float] | None = None) -> JwtTokenProvider:
    provider = new_token_provider(spec, read_file=read, now=clock or Clock())
    assert isinstance(provider, JwtTokenProvider)
    return provider


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hs256(claims: object, header: object = None, secret: bytes = SECRET) -> str:
    """A token signed as golang-jwt would, with any header and claims."""
    head = b64(json.dumps(header or {"alg": "HS256", "typ": "JWT"}).encode())
    body = b64(json.dumps(claims).encode())
    sig = hmac.new(secret, f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64(sig)}"


# -- the spec ----------------------------------------------------------------------------------


def test_decompose_options_as_etcd() -> None:
    assert decompose_options("simple") == ("simple", {})
    assert decompose_options("") == ("", {})
    assert decompose_options("jwt,a=1,b=") == ("jwt", {"a": "1", "b": ""})
    assert decompose_options("jwt,=x") == ("jwt", {"": "x"})
    for bad in ("jwt,a", "jwt,a=b=c", "jwt,a=1,a=2", "simple,", "jwt,,a=1"):
        with pytest.raises(AuthTokenError, match=INVALID_AUTH_OPTS):
            decompose_options(bad)


def test_provider_kinds() -> None:
    assert isinstance(new_token_provider("simple"), SimpleTokenProvider)
    assert isinstance(new_token_provider("simple,whatever=1"), SimpleTokenProvider)
    assert isinstance(new_token_provider(""), NopTokenProvider)
    assert isinstance(jwt_provider("jwt,priv-key=hs.key,sign-method=HS256"), JwtTokenProvider)
    for bad in ("Simple", "jwt2", "simple ", "none"):
        with pytest.raises(AuthTokenError, match=INVALID_AUTH_OPTS):
            new_token_provider(bad)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("jwt", INVALID_AUTH_OPTS),  # sign-method is required
        ("jwt,sign-method=rs256,priv-key=rsa.key", INVALID_AUTH_OPTS),  # case matters
        ("jwt,sign-method=RS256,priv-key=missing", INVALID_AUTH_OPTS),
        ("jwt,sign-method=RS256,priv-key=rsa.key,ttl=5", INVALID_AUTH_OPTS),
        ("jwt,sign-method=RS256,priv-key=rsa.key,ttl=5 m", INVALID_AUTH_OPTS),
        (
            "jwt,sign-method=none,priv-key=hs.key",
            "unsupported signing method: *jwt.signingMethodNone",
        ),
        ("jwt,sign-method=EdDSA", "unsupported signing method: *jwt.SigningMethodEd25519"),
        ("jwt,sign-method=RS256", MISSING_KEY),
        ("jwt,sign-method=HS256,pub-key=rsa.pub", MISSING_KEY),
        ("jwt,sign-method=ES256,priv-key=", MISSING_KEY),
        ("jwt,sign-method=RS256,priv-key=junk", KEY_MUST_BE_PEM),
        ("jwt,sign-method=RS256,priv-key=hs.key", KEY_MUST_BE_PEM),
        ("jwt,sign-method=ES256,priv-key=rsa8.key", NOT_EC_PRIVATE),
        ("jwt,sign-method=RS256,pub-key=ec256.pub", NOT_RSA_PUBLIC),
        ("jwt,sign-method=RS256,pub-key=rsa1.pub", "x509: failed to parse public key"),
        ("jwt,sign-method=RS256,priv-key=rsa.key,pub-key=rsab.pub", KEY_MISMATCH),
    ],
)
def test_bad_specs_name_etcds_error(spec: str, message: str) -> None:
    with pytest.raises(AuthTokenError) as info:
        new_token_provider(spec, read_file=read)
    assert str(info.value) == message


def test_mismatch_needs_both_halves_to_differ_as_in_etcd() -> None:
    # same public exponent, different modulus: etcd's check lets it through (signs with priv)
    provider = jwt_provider("jwt,sign-method=RS256,priv-key=rsa.key,pub-key=rsac.pub")
    token = provider.assign("u", 1)
    assert provider.info(token, 0) == AuthInfo("u", 1)


SPEC_PARTS = st.lists(
    st.one_of(
        st.sampled_from(["sign-method", "pub-key", "priv-key", "ttl", "foo", ""]).flatmap(
            lambda name: st.one_of(
                st.sampled_from(
                    [
                        *("RS256", "PS512", "ES384", "HS256", "none", "EdDSA", "", "x"),
                        *sorted(FILES),
                        *("5m", "0", "-1s", "1.5h", "x", "1e3s"),
                    ]
                ),
                st.text(max_size=6),
            ).map(lambda value: f"{name}={value}")
        ),
        st.text(max_size=8),
    ),
    max_size=5,
)


@settings(max_examples=500, deadline=None)
@given(st.sampled_from(["simple", "jwt", "", "x"]), SPEC_PARTS)
def test_spec_gives_a_provider_or_the_one_error(kind: str, parts: list[str]) -> None:
    spec = ",".join([kind, *parts])
    try:
        provider = new_token_provider(spec, read_file=read)
    except AuthTokenError:
        return
    assert isinstance(provider, SimpleTokenProvider | JwtTokenProvider | NopTokenProvider)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=40))
def test_any_text_gives_a_provider_or_the_one_error(spec: str) -> None:
    with contextlib.suppress(AuthTokenError):
        new_token_provider(spec, read_file=read)


# -- Go durations ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "ns"),
    [  # from Go's time package tests
        ("0", 0),
        ("5s", 5 * 10**9),
        ("30s", 30 * 10**9),
        ("1478s", 1478 * 10**9),
        ("-5s", -5 * 10**9),
        ("+5s", 5 * 10**9),
        ("-0", 0),
        ("+0", 0),
        ("5.0s", 5 * 10**9),
        ("5.6s", 5600 * 10**6),
        ("5.s", 5 * 10**9),
        (".5s", 500 * 10**6),
        ("1.0s", 10**9),
        ("1.00s", 10**9),
        ("1.004s", 1004 * 10**6),
        ("1.0040s", 1004 * 10**6),
        ("100.00100s", 100001 * 10**6),
        ("10ns", 10),
        ("11us", 11 * 10**3),
        ("12\u00b5s", 12 * 10**3),
        ("12\u03bcs", 12 * 10**3),
        ("13ms", 13 * 10**6),
        ("14s", 14 * 10**9),
        ("15m", 15 * 60 * 10**9),
        ("16h", 16 * 3600 * 10**9),
        ("3h30m", (3 * 3600 + 30 * 60) * 10**9),
        ("10.5s4m", (4 * 60 + 10) * 10**9 + 500 * 10**6),
        ("-2m3.4s", -(2 * 60 * 10**9 + 3400 * 10**6)),
        ("1h2m3s4ms5us6ns", 3723004005006),
        ("39h9m14.425s", 140954425 * 10**6),
        ("52763797000ns", 52763797000),
        ("0.3333333333333333333h", 20 * 60 * 10**9),
        ("9007199254740993ns", (1 << 53) + 1),
        ("9223372036854775807ns", (1 << 63) - 1),
        ("9223372036854775.807us", (1 << 63) - 1),
        ("9223372036s854ms775us807ns", (1 << 63) - 1),
        ("-9223372036854775808ns", -(1 << 63)),
        ("-9223372036854775.808us", -(1 << 63)),
        ("-9223372036s854ms775us808ns", -(1 << 63)),
        ("-2562047h47m16.854775808s", -(1 << 63)),
        ("0.100000000000000000000h", 6 * 60 * 10**9),
        ("0.830103483285477580700h", 49 * 60 * 10**9 + 48372539827),
    ],
)
def test_go_durations(text: str, ns: int) -> None:
    assert parse_go_duration(text) == ns


@pytest.mark.parametrize(
    "text",
    [
        "",
        "3",
        "-",
        "s",
        ".",
        "-.",
        ".s",
        "+.s",
        "1d",
        "\x85\x85",
        "\xffff",
        "hello \xffff world",
        "9223372036854775808ns",
        "9223372036854775.808us",
        "9223372036854ms775us808ns",
        "-9223372036854775809ns",
        "3000000h",
        "1 s",
    ],
)
def test_go_durations_refused(text: str) -> None:
    with pytest.raises(ValueError, match="time: invalid duration"):
        parse_go_duration(text)


# -- simple tokens ------------------------------------------------------------------------------


def test_simple_token_prefix_and_index() -> None:
    provider = SimpleTokenProvider(rng=random.Random(7))
    prefix = provider.gen_token_prefix()
    assert len(prefix) == 16 and prefix.isascii() and prefix.isalpha()
    assert SimpleTokenProvider(rng=random.Random(7)).gen_token_prefix() == prefix
    assert simple_token_index(f"{prefix}.123") == 123
    assert simple_token_index(f"{prefix}.007") == 7
    for bad in ("abc", "a.b.c", "a.", "a.-1", "a.+1", "a.1_0", "a.\u0661", f"a.{1 << 64}"):
        assert simple_token_index(bad) is None
    assert simple_token_index(f"a.{(1 << 64) - 1}") == (1 << 64) - 1


def test_simple_token_life() -> None:
    clock = Clock(100.0)
    provider = SimpleTokenProvider(ttl=10, now=clock)
    assert provider.assign("u", 3, index=5, prefix="p") == "p.5"
    assert provider.info("p.5", 9) is None  # not enabled: nothing remembered
    provider.enable()
    token = provider.assign("u", 3, index=6, prefix="p")
    assert provider.info(token, 9) == AuthInfo("u", 9)  # the store's revision, not the token's
    clock.t += 10
    assert provider.info(token, 9) is not None  # used at its deadline: extended
    clock.t += 9.5
    assert provider.info(token, 9) is not None
    clock.t += 10.5
    assert provider.info(token, 9) is None  # idle past its ttl
    provider.assign("v", 3, index=7, prefix="p")
    with pytest.raises(RuntimeError):  # etcd panics: one entry, one token
        provider.assign("v", 3, index=7, prefix="p")


def test_simple_token_invalidation_and_sweep() -> None:
    clock = Clock(0.0)
    provider = SimpleTokenProvider(ttl=0, now=clock)  # 0: etcd's default, 300 s
    assert provider.ttl == 300
    provider.enable()
    a1 = provider.assign("a", 1, index=1, prefix="x")
    b1 = provider.assign("b", 1, index=2, prefix="x")
    provider.invalidate_user("a")
    assert provider.info(a1, 1) is None
    assert provider.info(b1, 1) == AuthInfo("b", 1)
    clock.t = 1000
    assert provider.sweep() == 1
    b2 = provider.assign("b", 1, index=3, prefix="x")
    provider.disable()
    provider.enable()
    assert provider.info(b2, 1) is None


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=30))
def test_simple_info_never_raises(token: str) -> None:
    provider = SimpleTokenProvider(now=lambda: 0.0)
    provider.enable()
    provider.assign("u", 1, index=1, prefix="abc")
    assert provider.info(token, 1) in (None, AuthInfo("u", 1))


def test_nop_provider() -> None:
    provider = NopTokenProvider()
    with pytest.raises(errors.ERR_AUTH_FAILED):
        provider.assign("u", 1)
    assert provider.info("x.1", 1) is None
    assert provider.gen_token_prefix() == ""


# -- JWT ---------------------------------------------------------------------------------------

METHODS = [
    ("RS256", "priv-key=rsa.key"),
    ("RS384", "priv-key=rsa8.key,pub-key=rsa.pub"),
    ("RS512", "priv-key=rsa.key"),
    ("PS256", "priv-key=rsa.key"),
    ("PS384", "priv-key=rsa8.key"),
    ("PS512", "priv-key=rsa.key,pub-key=rsa.crt"),
    ("ES256", "priv-key=ec256.key,pub-key=ec256.pub"),
    ("ES384", "priv-key=ec3848.key"),
    ("ES512", "priv-key=ec512.key"),
    ("HS256", "priv-key=hs.key"),
    ("HS384", "priv-key=hs.key,pub-key=ec256.pub"),
    ("HS512", "priv-key=hs.key"),
]


def _verify_key(method: str) -> bytes | rsa.RSAPublicKey | ec.EllipticCurvePublicKey:
    if method.startswith("HS"):
        return SECRET
    if method.startswith("ES"):
        return EC_KEYS[int(method[2:])].public_key()
    return RSA_A.public_key()


@pytest.mark.parametrize(("method", "keys"), METHODS)
def test_jwt_round_trip(method: str, keys: str) -> None:
    clock = Clock()
    provider = jwt_provider(f"jwt,sign-method={method},{keys},ttl=10m", clock)
    assert provider.ttl_ns == 600 * 10**9
    assert provider.gen_token_prefix() == ""
    token = provider.assign("alice", 42)
    assert provider.info(token, 0) == AuthInfo("alice", 42)
    claims = pyjwt.decode(
        token,
        _verify_key(method),
        algorithms=[method],
        options={"verify_exp": False},
    )
    assert claims == {"exp": int(clock.t) + 600, "revision": 42, "username": "alice"}
    header = json.loads(base64.urlsafe_b64decode(token.split(".")[0] + "=="))
    assert header == {"alg": method, "typ": "JWT"}


def test_jwt_is_byte_identical_to_golang_jwt() -> None:
    provider = jwt_provider("jwt,sign-method=HS256,priv-key=hs.key", Clock(1000.9))
    token = provider.assign("root", 7)
    head, body, sig = token.split(".")
    assert head == "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9"  # {"alg":"HS256","typ":"JWT"}
    assert base64.urlsafe_b64decode(body + "==") == b'{"exp":1300,"revision":7,"username":"root"}'
    want = hmac.new(SECRET, f"{head}.{body}".encode(), hashlib.sha256).digest()
    assert sig == b64(want)
    assert DEFAULT_JWT_TTL_NS == 300 * 10**9


def test_go_json_strings() -> None:
    assert go_json_string("a<b>&c") == '"a\\u003cb\\u003e\\u0026c"'
    assert go_json_string('q"\\\n\r\t\b\f\x01') == '"q\\"\\\\\\n\\r\\t\\b\\f\\u0001"'
    assert go_json_string("\u2028\u2029\u00e9") == '"\\u2028\\u2029\u00e9"'
    assert go_json_string("\ud800") == '"\ufffd"'


def test_jwt_expiry_to_the_second() -> None:
    clock = Clock(1000.0)
    provider = jwt_provider("jwt,sign-method=RS256,priv-key=rsa.key,ttl=1m", clock)
    token = provider.assign("u", 1)  # exp = 1060
    clock.t = 1059.999
    assert provider.info(token, 0) is not None
    clock.t = 1060.0
    assert provider.info(token, 0) is None
    # a ttl of 0 (or less) issues tokens already expired, as etcd's
    zero = jwt_provider("jwt,sign-method=HS256,priv-key=hs.key,ttl=0", Clock(5.0))
    assert zero.info(zero.assign("u", 1), 0) is None


def test_verify_only_provider() -> None:
    full = jwt_provider("jwt,sign-method=ES256,priv-key=ec256.key")
    verifier = jwt_provider("jwt,sign-method=ES256,pub-key=ec256.pub")
    assert verifier.verify_only and not full.verify_only
    token = full.assign("u", 2)
    assert verifier.info(token, 0) == AuthInfo("u", 2)
    with pytest.raises(TokenAssignError, match=VERIFY_ONLY):
        verifier.assign("u", 2)
    rsa_verifier = jwt_provider("jwt,sign-method=PS256,pub-key=rsa.crt")
    assert rsa_verifier.info(
        jwt_provider("jwt,sign-method=PS256,priv-key=rsa.key").assign("v", 3), 0
    )


def test_curve_must_fit_the_method() -> None:
    provider = jwt_provider("jwt,sign-method=ES384,priv-key=ec256.key")  # etcd starts ...
    with pytest.raises(TokenAssignError, match="key is invalid"):  # ... and fails to sign
        provider.assign("u", 1)


def test_jwt_refuses_foreign_tokens() -> None:
    clock = Clock(1000.0)
    hs = jwt_provider("jwt,sign-method=HS256,priv-key=hs.key", clock)
    rs = jwt_provider("jwt,sign-method=RS256,priv-key=rsa.key", clock)
    token = rs.assign("u", 1)
    assert hs.info(token, 0) is None  # another algorithm
    head, body, sig = token.split(".")
    assert rs.info(f"{head}.{body}.{sig[:-4]}AAAA", 0) is None
    assert rs.info(f"{head}.{b64(b'{}')}.{sig}", 0) is None
    assert rs.info(token + ".", 0) is None
    other = pyjwt.encode({"username": "u", "revision": 1}, RSA_C, algorithm="RS256")
    assert rs.info(other, 0) is None  # signed by a stranger
    assert hs.info(hs256({"username": "u", "revision": 1}, secret=b"x" * 40), 0) is None


@pytest.mark.parametrize(
    ("claims", "ok"),
    [
        ({"username": "u", "revision": 3}, True),  # no exp: valid, as golang-jwt v4
        ({"username": "u", "revision": 3, "exp": 0}, True),  # 0 counts as absent
        ({"username": "u", "revision": 3, "exp": 1001}, True),
        ({"username": "u", "revision": 3, "exp": 1000.9}, False),  # floored to 1000
        ({"username": "u", "revision": 3, "exp": "2000"}, False),
        ({"username": "u", "revision": 3, "exp": None}, False),
        ({"username": "u", "revision": 3, "iat": 1000}, True),
        ({"username": "u", "revision": 3, "iat": 1001}, False),
        ({"username": "u", "revision": 3, "nbf": 1001}, False),
        ({"username": "u", "revision": 3, "nbf": 999.5}, True),
        ({"username": "u", "revision": 3.7}, True),
        ({"username": "u", "revision": -1}, False),
        ({"username": "u", "revision": 2**64}, False),
        ({"username": "u", "revision": "3"}, False),
        ({"username": "u", "revision": True}, False),
        ({"username": 5, "revision": 3}, False),
        ({"revision": 3}, False),
        ({"username": "u"}, False),
        ([1, 2], False),
        ("u", False),
    ],
)
def test_claims_as_golang_jwt_reads_them(claims: object, ok: bool) -> None:
    provider = jwt_provider("jwt,sign-method=HS256,priv-key=hs.key", Clock(1000.5))
    info = provider.info(hs256(claims), 0)
    assert (info is not None) is ok
    if info is not None:
        assert info == AuthInfo("u", 3)


def test_header_must_name_the_method() -> None:
    provider = jwt_provider("jwt,sign-method=HS256,priv-key=hs.key")
    claims = {"username": "u", "revision": 1}
    assert provider.info(hs256(claims, {"alg": "HS256"}), 0) is not None
    assert provider.info(hs256(claims, {"typ": "JWT"}), 0) is None
    assert provider.info(hs256(claims, {"alg": "none"}), 0) is None
    assert provider.info(hs256(claims, ["HS256"]), 0) is None


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=60))
def test_jwt_info_never_raises_on_text(token: str) -> None:
    provider = jwt_provider("jwt,sign-method=HS256,priv-key=hs.key")
    assert provider.info(token, 0) is None


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=8,
)
CLAIMS = st.fixed_dictionaries(
    {},
    optional={
        "username": JSON | st.text(max_size=5),
        "revision": JSON | st.integers(0, 2**64),
        "exp": JSON,
        "iat": JSON,
        "nbf": JSON,
    },
)


@settings(max_examples=300, deadline=None)
@given(CLAIMS | JSON)
def test_jwt_info_on_signed_garbage_returns_info_or_none(claims: object) -> None:
    provider = jwt_provider("jwt,sign-method=HS256,priv-key=hs.key")
    info = provider.info(hs256(claims), 0)  # NaN and Infinity (not JSON for Go) included
    assert info is None or (isinstance(info.username, str) and 0 <= info.revision < 2**64)


def test_fingerprint_is_etcds_redaction() -> None:
    assert token_fingerprint("abc") == hashlib.sha256(b"abc").hexdigest()[:12]
