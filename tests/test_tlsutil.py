"""TLS material from etcd's flags: policy checks, Go cipher names, generated certificates,
file checks and the reloading context."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest

from raftkv.tlsutil import (
    ReloadingContext,
    TLSConfigError,
    TLSInfo,
    TLSPolicy,
    openssl_cipher_names,
    self_signed_cert,
)
from tests.tls_certs import make_peer_certs


def test_go_cipher_names_map_to_openssl_and_tls13_names_change_nothing() -> None:
    assert openssl_cipher_names(
        ["TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384"]
    ) == ["ECDHE-RSA-AES128-GCM-SHA256"]
    with pytest.raises(TLSConfigError, match='unexpected TLS cipher suite "bogus"'):
        openssl_cipher_names(["bogus"])


def test_policy_limits_the_context() -> None:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    TLSPolicy("TLS1.3", "", ()).apply(ctx)
    assert ctx.minimum_version is ssl.TLSVersion.TLSv1_3
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    TLSPolicy("TLS1.2", "TLS1.2", ("TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",)).apply(ctx)
    assert ctx.maximum_version is ssl.TLSVersion.TLSv1_2
    tls12 = [c["name"] for c in ctx.get_ciphers() if c["protocol"] == "TLSv1.2"]
    assert tls12 == ["ECDHE-ECDSA-AES128-GCM-SHA256"]


def test_generated_certificate_is_private_and_reused(tmp_path: Path) -> None:
    first = self_signed_cert(str(tmp_path / "fixtures" / "peer"), ["127.0.0.1", "node-a"], 1)
    assert first.auto
    key = Path(first.key_file)
    assert (key.stat().st_mode & 0o777) == 0o600
    assert (Path(first.cert_file).stat().st_mode & 0o777) == 0o600
    again = self_signed_cert(str(tmp_path / "fixtures" / "peer"), ["127.0.0.1"], 1)
    assert Path(again.cert_file).read_bytes() == Path(first.cert_file).read_bytes()
    ctx = again.server_context(TLSPolicy())  # loads
    assert ctx.verify_mode is ssl.CERT_NONE


def test_file_problems_are_one_line_naming_the_file(tmp_path: Path) -> None:
    with pytest.raises(TLSConfigError, match="needs both --peer-cert-file and --peer-key-file"):
        TLSInfo(cert_file="c.pem").check_files("peer-")
    missing = tmp_path / "nope.pem"
    with pytest.raises(TLSConfigError, match=f"cannot read {missing}"):
        TLSInfo(cert_file=str(missing), key_file=str(missing)).check_files("")
    with pytest.raises(TLSConfigError, match="--client-cert-auth needs --trusted-ca-file"):
        TLSInfo(cert_file="c", key_file="k", client_cert_auth=True).check_files("")
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate")
    with pytest.raises(TLSConfigError, match="do not load"):
        TLSInfo(cert_file=str(garbage), key_file=str(garbage)).server_context(TLSPolicy())


def test_reloading_context_keeps_the_last_good_material(tmp_path: Path) -> None:
    certs = make_peer_certs(tmp_path, ("a", "b"))
    info = TLSInfo(cert_file=str(certs.cert("a")), key_file=str(certs.key("a")))
    reloading = ReloadingContext(lambda: info.server_context(TLSPolicy()), info.files())
    first = reloading.current()
    assert reloading.current() is first  # unchanged files: the same context
    certs.cert("a").write_text("half-written")
    assert reloading.current() is first and "do not load" in reloading.last_error
    certs.cert("a").write_bytes(certs.cert("b").read_bytes())
    certs.key("a").write_bytes(certs.key("b").read_bytes())
    assert reloading.current() is not first and reloading.last_error == ""


def test_tls_info_survives_its_json() -> None:
    # how a member hands its client TLS material to its gRPC front processes
    info = TLSInfo(
        cert_file="/etc/raftkv/server.crt",
        key_file="/etc/raftkv/server.key",
        trusted_ca_file="/etc/raftkv/ca.crt",
        client_cert_auth=True,
        crl_file="/etc/raftkv/revoked.crl",
        allowed_cns=("alice", "bob"),
        allowed_hostnames=("client.example",),
    )
    assert TLSInfo.from_json(info.to_json()) == info
    assert TLSInfo.from_json(TLSInfo().to_json()) == TLSInfo()
