"""Real members on TLS: client and peer mTLS with etcdctl, refusals of clients and processes
without a certificate of the CA, start-up refusals, generated certificates, certificate
reload and revocation."""

from __future__ import annotations

import datetime
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from tests.cluster.harness import REPO, Cluster, ClusterTLS, installation_env, require_etcdctl
from tests.tls_certs import PeerCerts, make_peer_certs

NAMES = ("m1", "m2", "m3", "client", "renewed")


def _tls(tmp_path: Path, **kwargs: bool) -> ClusterTLS:
    return ClusterTLS(make_peer_certs(tmp_path / "certs", NAMES), **kwargs)


def _etcdctl(*args: str, timeout: float = 15) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [require_etcdctl(), "--dial-timeout=2s", "--command-timeout=3s", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_three_members_on_client_and_peer_mtls(
    tmp_path: Path, make_cluster: Callable[..., Cluster]
) -> None:
    tls = _tls(tmp_path)
    c = make_cluster(3, tls=tls)
    c.wait_ready()
    for i, m in enumerate(c.members):
        c.etcdctl("put", f"k{i}", m.name, endpoints=m.endpoint)
    for m in c.members:
        out = c.etcdctl("get", "k", "--prefix", endpoints=m.endpoint).stdout.split()
        assert out == ["k0", "m1", "k1", "m2", "k2", "m3"]
    members = c.etcdctl("member", "list").stdout
    assert members.count("https://127.0.0.1:") == 6  # peer and client URL of each member
    ep = f"https://{c.members[0].endpoint}"
    no_cert = _etcdctl("--endpoints", ep, f"--cacert={tls.certs.ca}", "get", "k0")
    assert no_cert.returncode != 0 and "deadline exceeded" in no_cert.stderr
    plaintext = _etcdctl("--endpoints", f"http://{c.members[0].endpoint}", "get", "k0")
    assert plaintext.returncode != 0
    for m in c.members:  # the peer port is unauthenticated nowhere: no warning
        assert "is unauthenticated" not in m.log_path.read_text()


def test_a_process_without_a_peer_certificate_cannot_join(
    tmp_path: Path, make_cluster: Callable[..., Cluster]
) -> None:
    tls = _tls(tmp_path, client=False)
    c = make_cluster(3, tls=tls)
    c.wait_ready()
    c.etcdctl("put", "before", "1")
    intruder = make_peer_certs(tmp_path / "intruder", ("m4",))
    i = c.add_member(extra_args=ClusterTLS(intruder, client=False).member_args("m4"))
    newcomer = c.members[i]
    deadline = time.monotonic() + 20
    while newcomer.alive() and time.monotonic() < deadline:
        time.sleep(0.2)
    log = newcomer.log_path.read_text()
    assert not newcomer.alive(), log
    assert "CERTIFICATE_VERIFY_FAILED" in log or "certificate verify failed" in log, log
    # The running members stay healthy and never heard from it.
    assert c.etcdctl("get", "before", "--print-value-only").stdout.strip() == "1"


def test_an_https_url_without_a_certificate_is_refused_at_start(tmp_path: Path) -> None:
    for flag, url in (
        ("--listen-client-urls", "https://127.0.0.1:12379"),
        ("--listen-peer-urls", "https://127.0.0.1:12380"),
    ):
        res = subprocess.run(
            [
                sys.executable,
                "-m",
                "raftkv.ctl.main",
                "serve",
                "--data-dir",
                str(tmp_path / "d"),
                flag,
                url,
            ],
            capture_output=True,
            text=True,
            timeout=60,
            env=installation_env(REPO / "src"),
        )
        assert res.returncode != 0
        lines = res.stderr.strip().splitlines()
        assert len(lines) == 1, res.stderr
        assert "must be provided for" in lines[0] and url in lines[0]
        assert not (tmp_path / "d").exists()


def _served_certificate(port: int, ca: Path | None) -> x509.Certificate:
    ctx = ssl.create_default_context(cafile=str(ca) if ca else None)
    if ca is None:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(["h2"])
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as sock,
        ctx.wrap_socket(sock, server_hostname="127.0.0.1") as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der)


def test_auto_tls_generates_private_certificates(
    tmp_path: Path, make_cluster: Callable[..., Cluster]
) -> None:
    c = make_cluster(1, ["--auto-tls", "--peer-auto-tls"], start=False)
    m = c.members[0]
    m.client_scheme = m.peer_scheme = "https"
    c.initial_cluster = f"{m.name}={m.peer_url}"
    c.start(0)  # etcdctl of the harness cannot verify generated certificates: wait below
    ep = f"https://{m.endpoint}"
    deadline = time.monotonic() + 30
    while True:
        res = _etcdctl(
            "--endpoints",
            ep,
            "--insecure-transport=false",
            "--insecure-skip-tls-verify",
            "put",
            "a",
            "1",
        )
        if res.returncode == 0 or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    assert res.returncode == 0, res.stderr + c.dump_logs()
    verified = _etcdctl("--endpoints", ep, "get", "a")  # nobody can verify a generated cert
    assert verified.returncode != 0
    for side in ("client", "peer"):
        d = m.data_dir / "fixtures" / side
        assert (d.stat().st_mode & 0o777) == 0o700
        for name in ("cert.pem", "key.pem"):
            assert ((d / name).stat().st_mode & 0o777) == 0o600
    cert = _served_certificate(m.client_port, None)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "127.0.0.1" in {str(ip) for ip in san.get_values_for_type(x509.IPAddress)}


def test_a_replaced_client_certificate_is_served_to_new_connections(
    tmp_path: Path, make_cluster: Callable[..., Cluster]
) -> None:
    tls = _tls(tmp_path, peer=False)
    c = make_cluster(1, tls=tls)
    c.wait_ready()
    port = c.members[0].client_port

    def cn() -> str:
        cert = _served_certificate(port, tls.certs.ca)
        return str(cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value)

    assert cn() == "m1"
    tls.certs.cert("m1").write_bytes(tls.certs.cert("renewed").read_bytes())
    tls.certs.key("m1").write_bytes(tls.certs.key("renewed").read_bytes())
    assert cn() == "renewed"
    c.etcdctl("put", "after-reload", "1")


def _revoke(ca: trustme.CA, cert_path: Path, crl_path: Path) -> None:
    """Write a CRL signed by ``ca`` that revokes the certificate at ``cert_path``."""
    key = serialization.load_pem_private_key(ca.private_key_pem.bytes(), None)
    ca_cert = x509.load_pem_x509_certificate(ca.cert_pem.bytes())
    revoked = x509.load_pem_x509_certificate(cert_path.read_bytes())
    now = datetime.datetime.now(datetime.UTC)
    entry = (
        x509.RevokedCertificateBuilder()
        .serial_number(revoked.serial_number)
        .revocation_date(now)
        .build()
    )
    crl = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca_cert.subject)
        .last_update(now)
        .next_update(now + datetime.timedelta(days=1))
        .add_revoked_certificate(entry)
        .sign(key, hashes.SHA256())  # type: ignore[arg-type]
    )
    crl_path.write_bytes(crl.public_bytes(serialization.Encoding.PEM))


@pytest.mark.parametrize("fronts", [0, 1], ids=["member", "front"])
def test_a_revoked_client_certificate_is_refused(
    tmp_path: Path, make_cluster: Callable[..., Cluster], fronts: int
) -> None:
    """Refused by the member's gRPC server, or by its front process, which terminates TLS."""
    ca = trustme.CA()
    certs = make_peer_certs(tmp_path / "certs", ("m1", "client", "other"), ca=ca)
    crl = tmp_path / "crl.pem"
    _revoke(ca, certs.cert("client"), crl)
    tls = ClusterTLS(certs, peer=False)
    args = [f"--client-crl-file={crl}", f"--grpc-front-processes={fronts}"]
    c = make_cluster(1, args, start=False, tls=tls)
    c.start(0)  # the harness's etcdctl presents the revoked certificate: wait below
    ep = f"https://{c.members[0].endpoint}"
    deadline = time.monotonic() + 30
    while True:
        ok = _etcdctl(
            "--endpoints",
            ep,
            f"--cacert={certs.ca}",
            f"--cert={certs.cert('other')}",
            f"--key={certs.key('other')}",
            "put",
            "a",
            "1",
        )
        if ok.returncode == 0 or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    assert ok.returncode == 0, ok.stderr + c.dump_logs()
    refused = _etcdctl(
        "--endpoints",
        ep,
        f"--cacert={certs.ca}",
        f"--cert={certs.cert('client')}",
        f"--key={certs.key('client')}",
        "get",
        "a",
    )
    assert refused.returncode != 0
    assert "is revoked" in refused.stderr
    assert "is revoked" in c.members[0].log_path.read_text()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--tls-min-version=TLS1.1"], 'unexpected TLS version "TLS1.1"'),
        (
            ["--tls-min-version=TLS1.3", "--tls-max-version=TLS1.2"],
            "min version (TLS1.3) is greater than max version (TLS1.2)",
        ),
        (
            ["--tls-min-version=TLS1.3", "--cipher-suites=TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"],
            "cipher suites cannot be configured when only TLS1.3 is enabled",
        ),
        (["--cipher-suites=TLS_NOPE"], "unexpected TLS cipher suite"),
    ],
)
def test_bad_tls_policy_is_one_line(tmp_path: Path, args: list[str], message: str) -> None:
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "raftkv.ctl.main",
            "serve",
            "--data-dir",
            str(tmp_path / "d"),
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env=installation_env(REPO / "src"),
    )
    assert res.returncode != 0
    assert len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert message in res.stderr


def _handshake(port: int, certs: PeerCerts, cipher: str) -> str | None:
    """The TLS 1.2 suite negotiated when offering only ``cipher`` (presenting the client
    certificate); None when refused."""
    ctx = ssl.create_default_context(cafile=str(certs.ca))
    ctx.load_cert_chain(certs.cert("client"), certs.key("client"))
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers(cipher)
    ctx.set_alpn_protocols(["h2"])
    try:
        with (
            socket.create_connection(("127.0.0.1", port), timeout=5) as sock,
            ctx.wrap_socket(sock, server_hostname="127.0.0.1") as tls,
        ):
            suite = tls.cipher()
            return suite[0] if suite else None
    except (ssl.SSLError, ConnectionError):
        return None


def test_cipher_suites_restrict_client_and_peer_tls(
    tmp_path: Path, make_cluster: Callable[..., Cluster]
) -> None:
    tls = _tls(tmp_path)  # trustme's keys are ECDSA
    c = make_cluster(1, ["--cipher-suites=TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256"], tls=tls)
    m = c.members[0]
    for port in (m.client_port, m.peer_port):
        assert _handshake(port, tls.certs, "ECDHE-ECDSA-AES128-GCM-SHA256") == (
            "ECDHE-ECDSA-AES128-GCM-SHA256"
        )
        assert _handshake(port, tls.certs, "ECDHE-ECDSA-AES256-GCM-SHA384") is None
