"""Certificates for tests that run servers and clients over TLS, made with ``trustme``.

Owns: ``make_certs``, which writes one fresh CA and a server and a client certificate it
issued, as PEM files in a directory, and returns their paths (``CertFiles``).  The server
certificate is valid for ``127.0.0.1``, ``::1`` and ``localhost``; the client certificate's
common name is ``client_name`` (etcd takes it as the user name when auth is on and no token
is sent, so the default names no user).  Certificates and keys are made in memory by trustme:
nothing is fetched and no ``openssl`` binary is needed.  Private keys are written mode 0600.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import trustme

SERVER_NAMES = ("127.0.0.1", "::1", "localhost")


@dataclass(frozen=True)
class CertFiles:
    """Paths of one CA's files; the CA signed both leaf certificates."""

    ca: Path  # the CA certificate (what --cacert / --trusted-ca-file take)
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def make_certs(directory: Path, client_name: str = "raftkv-test-client") -> CertFiles:
    """Write ``ca.pem``, ``server.pem``, ``server-key.pem``, ``client.pem`` and
    ``client-key.pem`` into ``directory`` (created if missing) and return their paths."""
    directory.mkdir(parents=True, exist_ok=True)
    ca = trustme.CA(organization_name="raftkv tests")
    server = ca.issue_cert(*SERVER_NAMES, common_name="localhost")
    client = ca.issue_cert(client_name, common_name=client_name)
    files = CertFiles(
        ca=directory / "ca.pem",
        server_cert=directory / "server.pem",
        server_key=directory / "server-key.pem",
        client_cert=directory / "client.pem",
        client_key=directory / "client-key.pem",
    )
    ca.cert_pem.write_to_path(str(files.ca))
    server.cert_chain_pems[0].write_to_path(str(files.server_cert))
    client.cert_chain_pems[0].write_to_path(str(files.client_cert))
    for blob, path in ((server, files.server_key), (client, files.client_key)):
        blob.private_key_pem.write_to_path(str(path))
        os.chmod(path, 0o600)
    return files


@dataclass(frozen=True)
class PeerCerts:
    """One CA and a certificate per member name (CN = the name, valid for 127.0.0.1 and
    localhost, usable as server and as client certificate), as PEM files."""

    directory: Path
    ca: Path

    def cert(self, name: str) -> Path:
        return self.directory / f"{name}.pem"

    def key(self, name: str) -> Path:
        return self.directory / f"{name}-key.pem"


def make_peer_certs(
    directory: Path, names: tuple[str, ...], ca: trustme.CA | None = None
) -> PeerCerts:
    """Write ``ca.pem`` and ``<name>.pem`` / ``<name>-key.pem`` for each name, issued by
    ``ca`` (a fresh CA by default)."""
    directory.mkdir(parents=True, exist_ok=True)
    ca = ca or trustme.CA(organization_name="raftkv peer tests")
    files = PeerCerts(directory, directory / "ca.pem")
    ca.cert_pem.write_to_path(str(files.ca))
    for name in names:
        leaf = ca.issue_cert("127.0.0.1", "localhost", common_name=name)
        leaf.cert_chain_pems[0].write_to_path(str(files.cert(name)))
        leaf.private_key_pem.write_to_path(str(files.key(name)))
        os.chmod(files.key(name), 0o600)
    return files
