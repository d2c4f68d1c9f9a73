"""Fetching another member's backend over its client URL (repair's source file).

Owns: ``fetch_backend``, the production ``raftkv.server.environment.BackendFetcher``: the
source member's ``Maintenance.Snapshot`` stream in raftkv's LMDB format (request metadata
``raftkv-snapshot-format: lmdb``), written to a file and checked against the SHA-256 the stream
ends with, over plaintext or TLS as the URL says.

Contracts:
- the file is fsynced before the call returns; it is complete only when the call returns;
- a stream whose checksum does not match raises ``SnapshotFileError``; unusable TLS material
  ``TLSConfigError``; the transport's failures (``grpc.RpcError``, ``OSError``,
  ``TimeoutError`` after ``timeout`` seconds) propagate;
- ``token`` (auth enabled: the operator's) is sent as the ``token`` metadata.
"""

from __future__ import annotations

import asyncio
import os
import ssl
from urllib.parse import urlsplit

import grpc
import grpc.aio

from raftkv.backup.snapshot_file import SNAPSHOT_FORMAT_LMDB, SNAPSHOT_FORMAT_METADATA, StreamCheck
from raftkv.proto import rpc_pb2 as pb
from raftkv.proto import rpc_pb2_grpc as pb_grpc
from raftkv.server.config import ServerConfig
from raftkv.tlsutil import read_material


async def fetch_backend(
    url: str, path: str, *, config: ServerConfig, token: str | None, timeout: float
) -> None:
    """Stream the backend of the member serving client URL ``url`` into ``path``."""
    check = StreamCheck()
    metadata = [(SNAPSHOT_FORMAT_METADATA, SNAPSHOT_FORMAT_LMDB)]
    if token:
        metadata.append(("token", token))
    async with await _client_channel(url, config) as channel:
        stub = pb_grpc.MaintenanceStub(channel)
        with open(path, "wb") as f:
            async with asyncio.timeout(timeout):
                async for resp in stub.Snapshot(pb.SnapshotRequest(), metadata=metadata):
                    await asyncio.to_thread(f.write, check.feed(resp.blob))
            await asyncio.to_thread(os.fsync, f.fileno())
    check.finish()


def _grpc_target(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.hostname}:{parts.port}"


async def _client_channel(url: str, cfg: ServerConfig) -> grpc.aio.Channel:
    """A channel to another member's client URL: plaintext for http; for https this member's
    client certificate (``--client-cert-file`` or ``--cert-file``) and ``--trusted-ca-file``
    as the trust root, or, with generated certificates (``--auto-tls``), the certificate the
    peer serves (nobody can vouch for a self-signed one)."""
    target = _grpc_target(url)
    options: list[tuple[str, str | int]] = [("grpc.max_receive_message_length", 2**31 - 1)]
    if urlsplit(url).scheme != "https":
        return grpc.aio.insecure_channel(target, options=options)
    info = cfg.client_tls()
    cert = info.client_cert_file or info.cert_file
    key = info.client_key_file or info.key_file
    chain = read_material(cert) if cert else None
    private = read_material(key) if key else None
    roots = read_material(info.trusted_ca_file) if info.trusted_ca_file else None
    if roots is None:
        host, port = urlsplit(url).hostname or "", urlsplit(url).port or 0
        roots = (await asyncio.to_thread(ssl.get_server_certificate, (host, port))).encode()
        name_override: tuple[str, str | int] = ("grpc.ssl_target_name_override", host)
        options.append(name_override)
    creds = grpc.ssl_channel_credentials(roots, private, chain)
    return grpc.aio.secure_channel(target, creds, options=options)
