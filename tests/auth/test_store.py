"""raftkv.auth.store: every rule of etcd 3.5's authStore, on a real backend, with every write
in the apply digest."""

from __future__ import annotations

import random
import struct
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from raftkv import errors
from raftkv.auth.passwords import encode_hash, hash_password
from raftkv.auth.permissions import PermType
from raftkv.auth.store import (
    INITIAL_REVISION,
    K_ENABLED,
    K_REVISION,
    ROLES_PREFIX,
    USERS_PREFIX,
    AuthStatus,
    AuthStore,
    needs_admin_permission,
)
from raftkv.auth.tokens import AuthInfo, SimpleTokenProvider
from raftkv.guard.digest import ApplyDigest, EffectRecorder
from raftkv.mvcc.backend import BUCKET_AUTH, Backend, BackendConfig
from raftkv.proto import auth_pb2

R, W, RW = PermType.READ, PermType.WRITE, PermType.READWRITE
Effect = tuple[bytes, bytes | None]


class SpyRecorder(EffectRecorder):
    """An EffectRecorder that also lists the auth effects it was given."""

    __slots__ = ("effects",)

    def __init__(self, chain: ApplyDigest) -> None:
        super().__init__(chain)
        self.effects: list[Effect] = []

    def auth(self, key: bytes, value: bytes | None) -> None:
        super().auth(key, value)
        self.effects.append((key, value))


class Member:
    """One member's backend, auth store and apply digest; ``apply`` runs one entry."""

    def __init__(self, path: Path, tokens: SimpleTokenProvider | None = None) -> None:
        self.path = path
        self.backend = Backend(path, BackendConfig(map_size=64 << 20))
        self.tokens = tokens or SimpleTokenProvider(now=lambda: 0.0, rng=random.Random(1))
        self.store = AuthStore(self.backend, self.tokens)
        self.digest = ApplyDigest()
        self.rec = SpyRecorder(self.digest)
        self.index = 0

    def apply(self, op: str, *args: Any, **kwargs: Any) -> list[Effect]:
        """Apply ``store.<op>(tx, rec, *args)`` as entry ``index + 1``; the effects recorded.
        A refused request raises after its (empty) effects were folded in, as the applier
        does."""
        self.index += 1
        self.rec.effects = []
        try:
            with self.backend.write() as tx:
                getattr(self.store, op)(tx, self.rec, *args, **kwargs)
        finally:
            self.rec.finish(self.index)
            self.digest.commit()
        return self.rec.effects

    def bucket(self) -> dict[bytes, bytes]:
        return dict(self.backend.items(BUCKET_AUTH))

    def close(self) -> None:
        self.backend.close()


@pytest.fixture
def member(tmp_path: Path) -> Iterator[Member]:
    m = Member(tmp_path / "m")
    yield m
    m.close()


def hashed(password: str) -> str:
    return encode_hash(hash_password(password, 4))


def setup_root(m: Member, password: str = "rootpw") -> None:
    m.apply("user_add", "root", hashed(password))
    m.apply("user_grant_role", "root", "root")


def enabled(m: Member) -> None:
    setup_root(m)
    m.apply("auth_enable")


def perm(key: bytes, end: bytes = b"", kind: int = R) -> auth_pb2.Permission:
    return auth_pb2.Permission(permType=kind, key=key, range_end=end)  # type: ignore[arg-type]


def refused(m: Member, err: type[errors.EtcdError], op: str, *args: Any, **kw: Any) -> None:
    """``op`` raises ``err`` and changes nothing, in the backend or in the digest's effects."""
    before, status = m.bucket(), m.store.status()
    with pytest.raises(err):
        m.apply(op, *args, **kw)
    assert m.rec.effects == []
    assert m.bucket() == before
    assert m.store.status() == status


# -- a fresh store --------------------------------------------------------------------------


def test_fresh_store(member: Member) -> None:
    assert member.store.status() == AuthStatus(False, INITIAL_REVISION) == AuthStatus(False, 1)
    assert member.store.user_list() == []
    assert member.store.role_list() == []
    assert member.bucket() == {}  # nothing written outside apply


def test_every_write_is_in_the_digest_and_the_bucket(member: Member) -> None:
    effects = member.apply("user_add", "alice", hashed("pw"))
    assert [k for k, _ in effects] == [USERS_PREFIX + b"alice", K_REVISION]
    assert dict(effects) == member.bucket()
    assert member.store.revision == 2
    assert member.bucket()[K_REVISION] == struct.pack(">Q", 2)


# -- enable / disable -----------------------------------------------------------------------


def test_enable_needs_root_user_with_root_role(member: Member) -> None:
    refused(member, errors.ERR_ROOT_USER_NOT_EXIST, "auth_enable")
    member.apply("user_add", "root", hashed("pw"))
    refused(member, errors.ERR_ROOT_ROLE_NOT_EXIST, "auth_enable")
    member.apply("user_grant_role", "root", "root")  # the root role need not exist
    assert member.store.role_list() == []
    revision = member.store.revision
    assert member.apply("auth_enable") == [(K_ENABLED, b"\x01")]
    assert member.store.status() == AuthStatus(True, revision)  # etcd does not bump it
    assert member.tokens.enabled


def test_enable_and_disable_twice_change_nothing(member: Member) -> None:
    assert member.apply("auth_disable") == []
    enabled(member)
    assert member.apply("auth_enable") == []
    revision = member.store.revision
    assert member.apply("auth_disable") == [
        (K_ENABLED, b"\x00"),
        (K_REVISION, struct.pack(">Q", revision + 1)),
    ]
    assert member.store.status() == AuthStatus(False, revision + 1)
    assert not member.tokens.enabled
    assert member.apply("auth_disable") == []


# -- users ------------------------------------------------------------------------------------


def test_user_add_rules(member: Member) -> None:
    refused(member, errors.ERR_USER_EMPTY, "user_add", "", hashed("pw"))
    member.apply("user_add", "alice", hashed("pw"))
    refused(member, errors.ERR_USER_ALREADY_EXIST, "user_add", "alice", hashed("pw"))
    refused(member, errors.ERR_NO_PASSWORD_USER, "user_add", "bob", "not base64!")
    member.apply("user_add", "nopw", "ignored!", no_password=True)
    assert member.store.user_list() == ["alice", "nopw"]


def test_user_record_is_etcds_encoding(member: Member) -> None:
    hash_bytes = hash_password("pw", 4)
    member.apply("user_add", "alice", encode_hash(hash_bytes))
    member.apply("user_add", "nopw", "", no_password=True)
    stored = member.bucket()
    # name, password, then an empty options message (etcd always stores the options)
    assert stored[USERS_PREFIX + b"alice"] == (
        b"\x0a\x05alice" + b"\x12" + bytes([len(hash_bytes)]) + hash_bytes + b"\x22\x00"
    )
    assert stored[USERS_PREFIX + b"nopw"] == b"\x0a\x04nopw\x22\x02\x08\x01"


def test_user_delete_rules(member: Member) -> None:
    refused(member, errors.ERR_USER_NOT_FOUND, "user_delete", "ghost")
    enabled(member)
    refused(member, errors.ERR_INVALID_AUTH_MGMT, "user_delete", "root")
    member.apply("user_add", "alice", hashed("pw"))
    token = member.store.authenticate("alice", index=7, prefix="abcdefghijklmnop")
    assert member.store.auth_info_from_token(token) is not None
    effects = member.apply("user_delete", "alice")
    assert effects[0] == (USERS_PREFIX + b"alice", None)
    assert member.store.user("alice") is None
    with pytest.raises(errors.ERR_INVALID_AUTH_TOKEN):  # its tokens died with it
        member.store.auth_info_from_token(token)
    member.apply("auth_disable")
    member.apply("user_delete", "root")  # allowed while disabled


def test_change_password(member: Member) -> None:
    refused(member, errors.ERR_USER_NOT_FOUND, "user_change_password", "ghost", hashed("x"))
    enabled(member)
    member.apply("user_add", "alice", hashed("old"))
    member.apply("user_grant_role", "alice", "root")
    token = member.store.authenticate("alice", index=9, prefix="A" * 16)
    refused(member, errors.ERR_NO_PASSWORD_USER, "user_change_password", "alice", "%%%")
    member.apply("user_change_password", "alice", hashed("new"))
    assert member.store.check_password("alice", "new") == member.store.revision
    with pytest.raises(errors.ERR_AUTH_FAILED):
        member.store.check_password("alice", "old")
    assert member.store.user_get("alice") == ["root"]  # roles and options kept
    user = member.store.user("alice")
    assert user is not None and user.HasField("options")
    with pytest.raises(errors.ERR_INVALID_AUTH_TOKEN):
        member.store.auth_info_from_token(token)
    # a change to "" (no hash) leaves a password nothing matches
    member.apply("user_change_password", "alice", "")
    for attempt in ("", "new"):
        with pytest.raises(errors.ERR_AUTH_FAILED):
            member.store.check_password("alice", attempt)


def test_change_password_of_a_no_password_user_keeps_none(member: Member) -> None:
    member.apply("user_add", "svc", "", no_password=True)
    before = member.bucket()[USERS_PREFIX + b"svc"]
    member.apply("user_change_password", "svc", hashed("x"))
    assert member.bucket()[USERS_PREFIX + b"svc"] == before


def test_grant_role(member: Member) -> None:
    refused(member, errors.ERR_USER_NOT_FOUND, "user_grant_role", "ghost", "r")
    member.apply("user_add", "alice", hashed("pw"))
    refused(member, errors.ERR_ROLE_NOT_FOUND, "user_grant_role", "alice", "r")
    for role in ("zeta", "alpha", "mid"):
        member.apply("role_add", role)
        member.apply("user_grant_role", "alice", role)
    assert member.store.user_get("alice") == ["alpha", "mid", "zeta"]  # kept sorted
    assert member.apply("user_grant_role", "alice", "mid") == []  # held already: no change
    member.apply("user_grant_role", "alice", "root")
    assert member.store.user_get("alice") == ["alpha", "mid", "root", "zeta"]
    assert member.store.is_admin("alice")


def test_revoke_role(member: Member) -> None:
    refused(member, errors.ERR_USER_NOT_FOUND, "user_revoke_role", "ghost", "r")
    setup_root(member)
    member.apply("role_add", "r")
    member.apply("user_add", "alice", hashed("pw"))
    refused(member, errors.ERR_ROLE_NOT_GRANTED, "user_revoke_role", "alice", "r")
    member.apply("user_grant_role", "alice", "r")
    member.apply("user_revoke_role", "alice", "r")
    assert member.store.user_get("alice") == []
    member.apply("auth_enable")
    refused(member, errors.ERR_INVALID_AUTH_MGMT, "user_revoke_role", "root", "root")
    member.apply("auth_disable")
    member.apply("user_revoke_role", "root", "root")
    assert not member.store.is_admin("root")


def test_user_get_and_list(member: Member) -> None:
    with pytest.raises(errors.ERR_USER_NOT_FOUND):
        member.store.user_get("ghost")
    for name in ("b", "a", "\u00e9", "C"):
        member.apply("user_add", name, hashed("pw"))
    assert member.store.user_list() == ["C", "a", "b", "\u00e9"]  # key (byte) order


# -- roles ------------------------------------------------------------------------------------


def test_role_add(member: Member) -> None:
    refused(member, errors.ERR_ROLE_EMPTY, "role_add", "")
    member.apply("role_add", "root")  # a role like any other
    refused(member, errors.ERR_ROLE_ALREADY_EXIST, "role_add", "root")
    member.apply("role_add", "a")
    assert member.store.role_list() == ["a", "root"]
    assert member.store.role_get("a") == []
    assert member.bucket()[ROLES_PREFIX + b"a"] == b"\x0a\x01a"


def test_role_delete_revokes_it_from_users(member: Member) -> None:
    refused(member, errors.ERR_ROLE_NOT_FOUND, "role_delete", "ghost")
    member.apply("role_add", "r")
    member.apply("role_add", "keep")
    for user in ("u2", "u1", "u3"):
        member.apply("user_add", user, hashed("pw"))
    for user in ("u1", "u2"):
        member.apply("user_grant_role", user, "r")
        member.apply("user_grant_role", user, "keep")
    effects = member.apply("role_delete", "r")
    assert [k for k, _ in effects] == [
        ROLES_PREFIX + b"r",
        USERS_PREFIX + b"u1",
        USERS_PREFIX + b"u2",
        K_REVISION,
    ]
    assert member.store.user_get("u1") == member.store.user_get("u2") == ["keep"]
    assert member.store.role_list() == ["keep"]


def test_root_role_cannot_be_deleted_while_enabled(member: Member) -> None:
    member.apply("role_add", "root")
    enabled(member)
    refused(member, errors.ERR_INVALID_AUTH_MGMT, "role_delete", "root")
    member.apply("auth_disable")
    member.apply("role_delete", "root")
    assert not member.store.is_admin("root")


def test_grant_permission_rules(member: Member) -> None:
    refused(member, errors.ERR_PERMISSION_NOT_GIVEN, "role_grant_permission", "r", None)
    refused(member, errors.ERR_INVALID_AUTH_MGMT, "role_grant_permission", "r", perm(b""))
    refused(member, errors.ERR_INVALID_AUTH_MGMT, "role_grant_permission", "r", perm(b"b", b"a"))
    refused(member, errors.ERR_ROLE_NOT_FOUND, "role_grant_permission", "r", perm(b"a"))


def test_grant_permission_replaces_same_range_and_sorts_by_key(member: Member) -> None:
    member.apply("role_add", "r")
    member.apply("role_grant_permission", "r", perm(b"m", b"n", R))
    member.apply("role_grant_permission", "r", perm(b"a", b"", W))
    member.apply("role_grant_permission", "r", perm(b"m", b"\x00", R))  # same key, new range
    member.apply("role_grant_permission", "r", perm(b"m", b"n", RW))  # same range: new type
    got = [(p.key, p.range_end, int(p.permType)) for p in member.store.role_get("r")]
    assert got == [(b"a", b"", W), (b"m", b"n", RW), (b"m", b"\x00", R)]


def test_revoke_permission(member: Member) -> None:
    refused(member, errors.ERR_ROLE_NOT_FOUND, "role_revoke_permission", "r", b"a", b"")
    member.apply("role_add", "r")
    member.apply("role_grant_permission", "r", perm(b"a", b"c"))
    member.apply("role_grant_permission", "r", perm(b"x"))
    refused(member, errors.ERR_PERMISSION_NOT_GRANTED, "role_revoke_permission", "r", b"a", b"")
    member.apply("role_revoke_permission", "r", b"a", b"c")
    assert [p.key for p in member.store.role_get("r")] == [b"x"]
    with pytest.raises(errors.ERR_ROLE_NOT_FOUND):
        member.store.role_get("ghost")


# -- checks ----------------------------------------------------------------------------------


def reader_setup(m: Member) -> AuthInfo:
    enabled(m)
    m.apply("role_add", "app")
    m.apply("role_grant_permission", "app", perm(b"app/", b"app0", R))
    m.apply("role_grant_permission", "app", perm(b"app/w", b"", W))
    m.apply("user_add", "alice", hashed("pw"))
    m.apply("user_grant_role", "alice", "app")
    return AuthInfo("alice", m.store.revision)


def test_everything_is_permitted_while_disabled(member: Member) -> None:
    member.store.check(None, b"k", b"", W)
    member.store.is_admin_permitted(None)
    member.store.check_user_get(None, "x")
    assert member.store.auth_info_from_token("whatever") is None


def test_range_checks(member: Member) -> None:
    alice = reader_setup(member)
    store = member.store
    store.is_range_permitted(alice, b"app/x", b"")
    store.is_range_permitted(alice, b"app/", b"app0")
    store.is_put_permitted(alice, b"app/w")
    store.is_delete_range_permitted(alice, b"app/w", b"")
    with pytest.raises(errors.ERR_PERMISSION_DENIED):
        store.is_put_permitted(alice, b"app/x")
    with pytest.raises(errors.ERR_PERMISSION_DENIED):
        store.is_range_permitted(alice, b"app/", b"\x00")
    store.check(alice, b"app/w", b"", RW)  # READ by the prefix, WRITE by the key
    with pytest.raises(errors.ERR_PERMISSION_DENIED):
        store.check(alice, b"app/x", b"", RW)
    # root may do anything
    store.check(AuthInfo("root", store.revision), b"anything", b"\x00", RW)


def test_check_errors(member: Member) -> None:
    alice = reader_setup(member)
    store = member.store
    with pytest.raises(errors.ERR_USER_EMPTY):
        store.check(None, b"app/x", b"", R)
    with pytest.raises(errors.ERR_USER_EMPTY):
        store.check(AuthInfo("alice", 0), b"app/x", b"", R)
    with pytest.raises(errors.ERR_PERMISSION_DENIED):
        store.check(AuthInfo("ghost", store.revision), b"app/x", b"", R)
    member.apply("role_add", "other")  # any change makes older tokens stale
    with pytest.raises(errors.ERR_AUTH_OLD_REVISION):
        store.check(alice, b"app/x", b"", R)
    store.check(AuthInfo("alice", store.revision + 5), b"app/x", b"", R)  # newer is fine


def test_permissions_follow_changes(member: Member) -> None:
    reader_setup(member)
    store = member.store
    store.check(AuthInfo("alice", store.revision), b"app/x", b"", R)
    member.apply("role_revoke_permission", "app", b"app/", b"app0")
    with pytest.raises(errors.ERR_PERMISSION_DENIED):
        store.check(AuthInfo("alice", store.revision), b"app/x", b"", R)
    member.apply("role_add", "all")
    member.apply("role_grant_permission", "all", perm(b"\x00", b"\x00", RW))
    member.apply("user_grant_role", "alice", "all")
    store.check(AuthInfo("alice", store.revision), b"zzz", b"\x00", W)
    member.apply("role_delete", "all")
    with pytest.raises(errors.ERR_PERMISSION_DENIED):
        store.check(AuthInfo("alice", store.revision), b"zzz", b"", W)


def test_admin_checks(member: Member) -> None:
    alice = reader_setup(member)
    store = member.store
    store.is_admin_permitted(AuthInfo("root", 0))  # no revision check, as etcd
    with pytest.raises(errors.ERR_USER_EMPTY):
        store.is_admin_permitted(None)
    with pytest.raises(errors.ERR_USER_EMPTY):
        store.is_admin_permitted(AuthInfo("", 3))
    with pytest.raises(errors.ERR_USER_NOT_FOUND):
        store.is_admin_permitted(AuthInfo("ghost", 3))
    with pytest.raises(errors.ERR_PERMISSION_DENIED):
        store.is_admin_permitted(alice)
    store.check_user_get(alice, "alice")
    with pytest.raises(errors.ERR_PERMISSION_DENIED):
        store.check_user_get(alice, "root")
    store.check_role_get(alice, "app")
    with pytest.raises(errors.ERR_PERMISSION_DENIED):
        store.check_role_get(alice, "root")
    store.check_role_get(AuthInfo("root", 1), "app")
    assert store.has_role("alice", "app")
    assert not store.has_role("ghost", "app")


def test_admin_requests_are_etcds() -> None:
    assert needs_admin_permission("auth_user_add")
    assert needs_admin_permission("auth_status")
    assert not needs_admin_permission("auth_user_get")
    assert not needs_admin_permission("auth_role_get")
    assert not needs_admin_permission("authenticate")
    assert not needs_admin_permission("put")


# -- passwords and tokens ----------------------------------------------------------------------


def test_check_password(member: Member) -> None:
    with pytest.raises(errors.ERR_AUTH_NOT_ENABLED):
        member.store.check_password("root", "rootpw")
    enabled(member)
    member.apply("user_add", "svc", "", no_password=True)
    assert member.store.check_password("root", "rootpw") == member.store.revision
    with pytest.raises(errors.ERR_AUTH_FAILED):
        member.store.check_password("root", "nope")
    with pytest.raises(errors.ERR_AUTH_FAILED):
        member.store.check_password("ghost", "rootpw")
    with pytest.raises(errors.ERR_NO_PASSWORD_USER) as info:
        member.store.check_password("svc", "")
    assert errors.to_status(info.value) == (
        grpc.StatusCode.UNKNOWN,
        "auth: authentication failed, password was given for no password user",
    )


def test_authenticate_and_token_info(member: Member) -> None:
    with pytest.raises(errors.ERR_AUTH_NOT_ENABLED):
        member.store.authenticate("root", index=1, prefix="p")
    enabled(member)
    member.apply("user_add", "svc", "", no_password=True)
    with pytest.raises(errors.ERR_AUTH_FAILED):
        member.store.authenticate("svc", index=1, prefix="p")
    with pytest.raises(errors.ERR_AUTH_FAILED):
        member.store.authenticate("ghost", index=1, prefix="p")
    prefix = member.tokens.gen_token_prefix()
    token = member.store.authenticate("root", index=42, prefix=prefix)
    assert token == f"{prefix}.42"
    info = member.store.auth_info_from_token(token)
    assert info == AuthInfo("root", member.store.revision)
    assert member.store.auth_info_from_token("Bearer " + token) == info
    assert member.store.auth_info_from_token(None) is None
    with pytest.raises(errors.ERR_INVALID_AUTH_TOKEN):
        member.store.auth_info_from_token("bogus.token")
    member.apply("auth_disable")  # every token dies
    member.apply("auth_enable")
    with pytest.raises(errors.ERR_INVALID_AUTH_TOKEN):
        member.store.auth_info_from_token(token)


def test_no_token_provider_issues_nothing(tmp_path: Path) -> None:
    backend = Backend(tmp_path / "b", BackendConfig(map_size=64 << 20))
    try:
        store = AuthStore(backend, bcrypt_cost=99)
        assert store.bcrypt_cost == 10
        rec = EffectRecorder(ApplyDigest())
        with backend.write() as tx:
            store.user_add(tx, rec, "root", hashed("pw"))
            store.user_grant_role(tx, rec, "root", "root")
            store.auth_enable(tx, rec)
        with pytest.raises(errors.ERR_AUTH_FAILED):
            store.authenticate("root", index=1, prefix="")
        with pytest.raises(errors.ERR_INVALID_AUTH_TOKEN):
            store.auth_info_from_token("x.1")
    finally:
        backend.close()


# -- persistence and determinism ----------------------------------------------------------------


def test_reload_and_digest_bytes(member: Member) -> None:
    reader_setup(member)
    member.apply("user_add", "svc", "", no_password=True)
    again = AuthStore(member.backend, SimpleTokenProvider())
    assert again.records() == member.store.records()
    assert again.digest_bytes() == member.store.digest_bytes()
    assert again.status() == member.store.status()
    assert isinstance(again.tokens, SimpleTokenProvider) and again.tokens.enabled
    assert dict(member.store.records()) == member.bucket()


def test_digest_bytes_of_a_fresh_store_has_the_defaults(member: Member, tmp_path: Path) -> None:
    assert member.store.records() == [
        (K_ENABLED, b"\x00"),
        (K_REVISION, struct.pack(">Q", 1)),
    ]
    fresh = member.store.digest_bytes()
    member.apply("role_add", "r")
    assert member.store.digest_bytes() != fresh
    member.apply("role_delete", "r")  # the same users and roles, a later revision
    assert member.store.digest_bytes() != fresh
    other = Member(tmp_path / "other")
    try:
        assert other.store.digest_bytes() == fresh
    finally:
        other.close()


def test_corrupt_record_is_reported(member: Member) -> None:
    with member.backend.write() as tx:
        tx.put(BUCKET_AUTH, USERS_PREFIX + b"x", b"\xff\xff")
    with pytest.raises(ValueError, match="authUsers/x"):
        AuthStore(member.backend)


NAMES = ["root", "a", "b", ""]
KEYS = [b"", b"a", b"b", b"\x00"]


def _op(rng: random.Random) -> tuple[str, tuple[Any, ...], dict[str, Any]]:
    name, role = rng.choice(NAMES), rng.choice(NAMES)
    key, end = rng.choice(KEYS[1:]), rng.choice(KEYS)
    choices: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = [
        ("auth_enable", (), {}),
        ("auth_disable", (), {}),
        ("user_add", (name, "JDJhJA=="), {"no_password": rng.random() < 0.3}),
        ("user_delete", (name,), {}),
        ("user_change_password", (name, rng.choice(["", "eA==", "!"])), {}),
        ("user_grant_role", (name, role), {}),
        ("user_revoke_role", (name, role), {}),
        ("role_add", (role,), {}),
        ("role_delete", (role,), {}),
        ("role_grant_permission", (role, perm(key, end, rng.choice([R, W, RW]))), {}),
        ("role_revoke_permission", (role, key, end), {}),
    ]
    return rng.choice(choices)


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 2**32), st.integers(1, 40))
def test_replicas_applying_the_same_entries_stay_identical(seed: int, count: int) -> None:
    rng = random.Random(seed)
    ops = [_op(rng) for _ in range(count)]
    with tempfile.TemporaryDirectory() as tmp:
        members = [Member(Path(tmp) / f"m{i}") for i in range(2)]
        try:
            for op, args, kwargs in ops:
                outcomes: list[type[errors.EtcdError] | None] = []
                for m in members:
                    try:
                        m.apply(op, *args, **kwargs)
                        outcomes.append(None)
                    except errors.EtcdError as exc:
                        outcomes.append(type(exc))
                assert outcomes[0] == outcomes[1]
            a, b = members
            assert a.digest.latest() == b.digest.latest()
            assert a.store.digest_bytes() == b.store.digest_bytes()
            assert a.bucket() == b.bucket()
            reloaded = AuthStore(a.backend)
            assert reloaded.records() == a.store.records()
            stored = a.bucket()
            assert {k: v for k, v in a.store.records() if k in stored} == stored
        finally:
            for m in members:
                m.close()
