"""Auth on real members, driven by Debian's etcdctl, the etcd3 Python client and raw gRPC:
users, roles and permissions; denied reads, writes and watches; a revoked permission closing
an open watch; JWT tokens; every member restarted with auth on and still identical."""

from __future__ import annotations

import json
import queue
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from raftkv.proto import rpc_pb2 as pb
from raftkv.proto import rpc_pb2_grpc as pb_grpc
from tests.cluster.harness import Cluster, ClusterTLS, require_etcdctl
from tests.cluster.test_repair import raftkv_cli
from tests.compat.servers import run_etcd3
from tests.tls_certs import make_peer_certs

ROOT = "--user=root:rootpw"
ALICE = "--user=alice:alicepw"
FAST_BCRYPT = ["--bcrypt-cost=4"]  # etcd's minimum: tests need not pay cost 10 per user


def _setup_users(c: Cluster, endpoint: str | None = None) -> None:
    """root, role ``reader`` (read /app/ prefix) granted to alice; auth enabled (through
    ``endpoint``, default every member)."""
    for args in (
        ["user", "add", "root:rootpw"],
        ["role", "add", "reader"],
        ["role", "grant-permission", "reader", "read", "/app/", "--prefix"],
        ["user", "add", "alice:alicepw"],
        ["user", "grant-role", "alice", "reader"],
        ["put", "/app/a", "1"],
        ["put", "/secret", "s"],
    ):
        c.etcdctl(*args, endpoints=endpoint)
    assert "Authentication Enabled" in c.etcdctl("auth", "enable", endpoints=endpoint).stdout


def _fails(c: Cluster, *args: str, endpoint: str | None = None) -> str:
    res = c.etcdctl(*args, endpoints=endpoint, check=False)
    assert res.returncode != 0, res.stdout
    return res.stderr.strip().splitlines()[-1]


def test_users_roles_and_permissions_on_three_members(
    make_cluster: Callable[..., Cluster],
) -> None:
    c = make_cluster(3, FAST_BCRYPT)
    _setup_users(c)
    for m in c.members:  # every member applied the same auth state
        ep = m.endpoint
        assert c.etcdctl("get", "/app/a", "--print-value-only", ALICE, endpoints=ep).stdout == "1\n"
        assert _fails(c, "get", "/secret", ALICE, endpoint=ep) == (
            "Error: etcdserver: permission denied"
        )
    assert _fails(c, "put", "/app/a", "2", ALICE) == "Error: etcdserver: permission denied"
    assert _fails(c, "get", "/app/a") == "Error: etcdserver: user name is empty"
    assert _fails(c, "get", "/app/a", "--user=alice:wrong") == (
        "Error: etcdserver: authentication failed, invalid user ID or password"
    )
    assert _fails(c, "user", "list", ALICE) == "Error: etcdserver: permission denied"
    assert len(c.etcdctl("member", "list", ALICE).stdout.splitlines()) == 3  # no root needed
    assert _fails(c, "defrag", ALICE).endswith("(etcdserver: permission denied)")
    assert c.etcdctl("user", "list", ROOT).stdout.split() == ["alice", "root"]
    assert "Roles: reader" in c.etcdctl("user", "get", "alice", ALICE).stdout
    # A grant takes effect at one Raft index on every member.
    c.etcdctl("role", "grant-permission", "reader", "readwrite", "/app/", "--prefix", ROOT)
    c.etcdctl("put", "/app/a", "2", ALICE)
    for m in c.members:
        out = c.etcdctl(
            "get", "/app/a", "--print-value-only", "--consistency=s", ALICE, endpoints=m.endpoint
        )
        assert out.stdout == "2\n"
    # Auth state is replicated state: compared by the guard and the state hashes.
    assert c.etcdctl("alarm", "list", ROOT).stdout == ""


def test_etcd3_python_client_authenticates(
    tmp_path: Path, make_cluster: Callable[..., Cluster]
) -> None:
    certs = make_peer_certs(tmp_path / "certs", ("m1", "client"))
    c = make_cluster(1, FAST_BCRYPT, tls=ClusterTLS(certs, peer=False))
    _setup_users(c)
    tls_env = {
        "ETCD3_CA": str(certs.ca),
        "ETCD3_CERT": str(certs.cert("client")),
        "ETCD3_KEY": str(certs.key("client")),
    }
    out = json.loads(run_etcd3("auth", [c.members[0].endpoint], extra_env=tls_env))
    assert out["read"] == {"value": "1"}
    denied = {
        "type": "RpcError",
        "code": "PERMISSION_DENIED",
        "details": "etcdserver: permission denied",
    }
    assert out["write"] == denied
    assert out["read_other"] == denied


def _token(channel: grpc.Channel, user: str, password: str) -> str:
    auth = pb_grpc.AuthStub(channel)
    resp = auth.Authenticate(pb.AuthenticateRequest(name=user, password=password), timeout=10)
    return str(resp.token)


def test_a_revoked_permission_cancels_an_open_watch(
    make_cluster: Callable[..., Cluster],
) -> None:
    c = make_cluster(3, FAST_BCRYPT)
    _setup_users(c)
    channel = grpc.insecure_channel(c.members[1].endpoint)
    try:
        token = _token(channel, "alice", "alicepw")
        requests: queue.Queue[pb.WatchRequest | None] = queue.Queue()

        def gen():  # type: ignore[no-untyped-def]
            while (item := requests.get()) is not None:
                yield item

        responses: queue.Queue[pb.WatchResponse] = queue.Queue()
        stream = pb_grpc.WatchStub(channel).Watch(gen(), metadata=[("token", token)])

        def pump() -> None:
            try:
                for resp in stream:
                    responses.put(resp)
            except grpc.RpcError:
                pass

        threading.Thread(target=pump, daemon=True).start()
        create = pb.WatchCreateRequest(key=b"/app/", range_end=b"/app0")
        requests.put(pb.WatchRequest(create_request=create))
        denied = pb.WatchCreateRequest(key=b"/secret", watch_id=7)
        requests.put(pb.WatchRequest(create_request=denied))
        first, second = responses.get(timeout=10), responses.get(timeout=10)
        assert first.created and not first.canceled
        assert second.created and second.canceled and second.watch_id == 7
        assert second.cancel_reason == "etcdserver: permission denied"
        c.etcdctl("put", "/app/a", "before", ROOT)
        event = responses.get(timeout=10)
        assert [e.kv.value for e in event.events] == [b"before"]
        c.etcdctl("role", "revoke-permission", "reader", "/app/", "--prefix", ROOT)
        c.etcdctl("put", "/app/a", "after", ROOT)
        canceled = responses.get(timeout=10)
        assert canceled.canceled and canceled.watch_id == first.watch_id, canceled
        assert canceled.cancel_reason == "etcdserver: permission denied"
        assert not canceled.events  # nothing written after the revocation leaked
        requests.put(None)
    finally:
        channel.close()


def test_jwt_tokens(tmp_path: Path, make_cluster: Callable[..., Cluster]) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    priv, pub = tmp_path / "jwt.key", tmp_path / "jwt.pub"
    priv.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    pub.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    spec = f"--auth-token=jwt,pub-key={pub},priv-key={priv},sign-method=RS256,ttl=5m"
    c = make_cluster(3, [*FAST_BCRYPT, spec])
    _setup_users(c)
    channel = grpc.insecure_channel(c.members[0].endpoint)
    try:
        token = _token(channel, "alice", "alicepw")
    finally:
        channel.close()
    assert token.count(".") == 2  # header.claims.signature
    claims = json.loads(_b64url(token.split(".")[1]))
    assert claims["username"] == "alice" and claims["revision"] >= 2 and "exp" in claims
    # A JWT is verified by any member holding the public key: no member issued it but one.
    for m in c.members:
        with grpc.insecure_channel(m.endpoint) as ch:
            resp = pb_grpc.KVStub(ch).Range(
                pb.RangeRequest(key=b"/app/a"), metadata=[("token", token)], timeout=10
            )
            assert [kv.value for kv in resp.kvs] == [b"1"]
    forged = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    with grpc.insecure_channel(c.members[1].endpoint) as ch, pytest.raises(grpc.RpcError) as err:
        pb_grpc.KVStub(ch).Range(
            pb.RangeRequest(key=b"/app/a"), metadata=[("token", forged)], timeout=10
        )
    assert err.value.details() == "etcdserver: invalid auth token"


def _b64url(segment: str) -> bytes:
    import base64

    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def test_every_member_restarted_with_auth_on_stays_identical(
    make_cluster: Callable[..., Cluster],
) -> None:
    c = make_cluster(3, [*FAST_BCRYPT, "--experimental-corrupt-check-time=1s"])
    _setup_users(c)
    c.etcdctl("role", "add", "writer", ROOT)
    c.etcdctl("role", "grant-permission", "writer", "write", "/w/", "--prefix", ROOT)
    c.etcdctl_flags = [ROOT]  # the harness's status polls need a user now
    for i in range(3):
        c.stop(i)
        c.start(i)
        c.wait_ready()
    # The restarted members replayed the auth entries from their logs and backends alike.
    for m in c.members:
        out = c.etcdctl("role", "get", "writer", ROOT, endpoints=m.endpoint).stdout
        assert "[/w/, /w0) (prefix /w/)" in out
        assert _fails(c, "get", "/secret", ALICE, endpoint=m.endpoint).endswith("permission denied")
    # State hash checks (auth part included) run every second; none may name a member.
    time.sleep(3)
    assert c.etcdctl("alarm", "list", ROOT).stdout == ""
    logs = "".join(m.log_path.read_text(errors="replace") for m in c.members)
    assert "state hash mismatch" not in logs.lower()


@pytest.mark.parametrize("fronts", [0, 2], ids=["member", "fronts"])
def test_client_certificate_cn_is_the_user(
    tmp_path: Path, make_cluster: Callable[..., Cluster], fronts: int
) -> None:
    """Under --client-cert-auth a request without a token is made as the user its
    certificate's CN names (etcd's AuthInfoFromTLS); a no-password user can only come so.
    Behind front processes (which terminate TLS) the same, for KV calls (over the link) and
    for calls passed through, and a CN a client writes into the metadata counts for nothing."""
    certs = make_peer_certs(tmp_path / "certs", ("m1", "client", "alice", "carol"))
    c = make_cluster(
        1,
        [*FAST_BCRYPT, "--grpc-front-processes", str(fronts)],
        tls=ClusterTLS(certs, peer=False),
    )
    _setup_users(c)  # the harness's etcdctl presents CN "client": no such user, so --user
    with grpc.secure_channel(
        c.members[0].endpoint,
        grpc.ssl_channel_credentials(
            certs.ca.read_bytes(), certs.key("m1").read_bytes(), certs.cert("m1").read_bytes()
        ),
    ) as ch:
        token = _token(ch, "root", "rootpw")
        auth = pb_grpc.AuthStub(ch)
        no_password = pb.AuthUserAddRequest(name="carol")
        no_password.options.no_password = True
        auth.UserAdd(no_password, metadata=[("token", token)], timeout=10)
        auth.UserGrantRole(
            pb.AuthUserGrantRoleRequest(user="carol", role="reader"),
            metadata=[("token", token)],
            timeout=10,
        )
        with pytest.raises(grpc.RpcError) as err:
            _token(ch, "carol", "")
        assert "password was given for no password user" in (err.value.details() or "")

    def as_user(name: str, *args: str) -> subprocess.CompletedProcess[str]:
        """etcdctl presenting the certificate of CN ``name``."""
        return subprocess.run(
            [
                require_etcdctl(),
                f"--endpoints=https://{c.members[0].endpoint}",
                f"--cacert={certs.ca}",
                f"--cert={certs.cert(name)}",
                f"--key={certs.key(name)}",
                *args,
            ],
            capture_output=True,
            text=True,
            timeout=20,
        )

    def get_as(name: str, key: str) -> subprocess.CompletedProcess[str]:
        return as_user(name, "get", key, "--print-value-only")

    for name in ("alice", "carol"):  # a password user and a certificate-only user
        assert get_as(name, "/app/a").stdout == "1\n"
        denied = get_as(name, "/secret")
        assert denied.returncode != 0
        assert "etcdserver: permission denied" in denied.stderr
    nobody = get_as("client", "/app/a")  # a valid certificate naming no user
    assert nobody.returncode != 0 and "permission denied" in nobody.stderr

    # a call passed through a front (Auth, not KV) is made as the certificate's user too
    not_admin = as_user("alice", "role", "list")  # known (not "user name is empty"), not root
    assert not_admin.returncode != 0 and "etcdserver: permission denied" in not_admin.stderr
    forged = (("raftkv-front-cn", "root"),)
    with grpc.secure_channel(
        c.members[0].endpoint,
        grpc.ssl_channel_credentials(
            certs.ca.read_bytes(), certs.key("alice").read_bytes(), certs.cert("alice").read_bytes()
        ),
    ) as ch:
        for call in (
            lambda: pb_grpc.AuthStub(ch).RoleList(pb.AuthRoleListRequest(), metadata=forged),
            lambda: pb_grpc.KVStub(ch).Range(pb.RangeRequest(key=b"/secret"), metadata=forged),
        ):
            with pytest.raises(grpc.RpcError) as err:
                call()
            assert err.value.details() == "etcdserver: permission denied"


def test_member_repair_on_tls_and_auth(
    tmp_path: Path, make_cluster: Callable[..., Cluster]
) -> None:
    """``raftkv member repair`` as root over client TLS: the fenced member fetches a healthy
    member's backend over https with its own certificate, carrying root's token."""
    certs = make_peer_certs(tmp_path / "certs", ("m1", "m2", "m3", "client"))
    tls = ClusterTLS(certs)
    c = make_cluster(3, FAST_BCRYPT, start=False, tls=tls)
    for i in range(3):  # m3 applies the first put wrongly: the guard names and fences it
        c.start(i, env={"RAFTKV_FAILPOINTS": "applyCorruptValue=1*on"} if i == 2 else None)
    c.wait_ready()
    _setup_users(c, c.members[0].endpoint)  # not through m3: it refuses once fenced
    c.etcdctl_flags = [ROOT]
    healthy = f"https://{c.members[0].endpoint}"
    bad_id = c.member_id(2)
    named, _took = c.wait_corrupt_alarm(c.members[0].endpoint)
    assert named == {bad_id}
    tls_flags = [
        f"--cacert={certs.ca}",
        f"--cert={certs.cert('client')}",
        f"--key={certs.key('client')}",
        "--endpoints",
        healthy,
    ]
    denied = raftkv_cli("member", "repair", f"{bad_id:x}", *tls_flags, "--user=alice:alicepw")
    assert denied.returncode != 0 and "etcdserver: permission denied" in denied.stderr
    res = raftkv_cli("member", "repair", f"{bad_id:x}", "-w", "json", *tls_flags, ROOT)
    assert res.returncode == 0, res.stderr + c.dump_logs()
    report = json.loads(res.stdout)
    assert report["member_id"] == bad_id and report["alarm_cleared"] is True
    c.wait_until(
        lambda: c.etcdctl("alarm", "list").stdout.strip() == "", "the CORRUPT alarm cleared"
    )
    for m in c.members:
        out = c.etcdctl("get", "/app/a", "--print-value-only", ALICE, endpoints=m.endpoint)
        assert out.stdout == "1\n"


def test_an_expired_lease_deletes_its_keys_with_auth_on(
    make_cluster: Callable[..., Cluster],
) -> None:
    """The leader revokes an expired lease as root (etcd's WithRoot): its keys go, whoever
    wrote them."""
    c = make_cluster(1, FAST_BCRYPT)
    _setup_users(c)
    c.etcdctl("role", "grant-permission", "reader", "readwrite", "/app/", "--prefix", ROOT)
    lease = c.etcdctl("lease", "grant", "2", ALICE).stdout.split()[1]
    c.etcdctl("put", "/app/leased", "x", f"--lease={lease}", ALICE)
    c.wait_until(lambda: c.etcdctl("get", "/app/leased", ALICE).stdout == "", "the lease to expire")
