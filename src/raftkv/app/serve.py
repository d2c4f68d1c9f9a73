"""Running a member as a process: the gRPC server on the client URLs, HTTP on the metrics
URLs, signal handling and orderly shutdown.

Contract: ``run(cfg)`` returns the process exit status: 0 after SIGINT/SIGTERM and a clean
stop, 1 when the member failed (the reason is logged).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from urllib.parse import urlsplit

import grpc.aio

from raftkv.api.auth import AuthService
from raftkv.api.cluster import ClusterService
from raftkv.api.common import set_corruption_reporter
from raftkv.api.kv import KVService
from raftkv.api.lease import LeaseService
from raftkv.api.maintenance import MaintenanceService
from raftkv.api.repair import add_repair_service
from raftkv.api.watch import WatchService
from raftkv.app.client_tls import CertificateChecks, server_credentials
from raftkv.app.http import start_http
from raftkv.proto import rpc_pb2_grpc as pb_grpc
from raftkv.server import security
from raftkv.server.bootstrap import BootstrapError
from raftkv.server.config import ServerConfig
from raftkv.server.hash_check import InitialCheckError
from raftkv.server.member import Member
from raftkv.server.raft_node import FatalStateMachineError
from raftkv.server.versions import IncompatibleVersionError
from raftkv.tlsutil import TLSConfigError

log = logging.getLogger("raftkv.run")

STOP_TIMEOUT = 20.0
"""Seconds an orderly stop may take before the process exits anyway."""

# etcd allows this much gRPC framing on top of --max-request-bytes.
GRPC_OVERHEAD_BYTES = 512 * 1024


def grpc_address(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.hostname}:{parts.port}"


def _warn_plaintext_urls(cfg: ServerConfig) -> None:
    """etcd's warnings for http URLs beside TLS material (the material is not used there)."""
    for url in cfg.listen_client_urls:
        if urlsplit(url).scheme == "http":
            if cfg.cert_file or cfg.key_file:
                log.warning(
                    "scheme is http while key and cert files are present; ignoring key and "
                    "cert files client-url=%s",
                    url,
                )
            if cfg.client_cert_auth:
                log.warning(
                    "scheme is http while --client-cert-auth is enabled; ignoring client cert "
                    "auth for this URL client-url=%s",
                    url,
                )


async def serve(cfg: ServerConfig) -> int:
    try:
        client_tls = security.client_tls(cfg)
        credentials = server_credentials(client_tls) if client_tls is not None else None
    except TLSConfigError as exc:
        log.critical("%s", exc)
        return 1
    _warn_plaintext_urls(cfg)
    member = Member(cfg)
    try:
        await member.start()
    except (
        InitialCheckError,
        BootstrapError,
        FatalStateMachineError,
        IncompatibleVersionError,
        TLSConfigError,
    ) as exc:
        log.critical("%s", exc)
        await stop_member(member)
        return 1
    set_corruption_reporter(member.report_backend_corruption)
    interceptors = []
    if client_tls is not None and (client_tls.crl_file or client_tls.allowed_hostnames):
        interceptors.append(CertificateChecks(client_tls))
    server = grpc.aio.server(
        interceptors=interceptors,
        options=[
            ("grpc.max_receive_message_length", cfg.max_request_bytes + GRPC_OVERHEAD_BYTES),
            ("grpc.max_send_message_length", 2**31 - 1),
            ("grpc.so_reuseport", 0),
        ],
    )
    pb_grpc.add_KVServicer_to_server(KVService(member.kv, member.auth), server)
    pb_grpc.add_WatchServicer_to_server(WatchService(member, member.auth), server)
    pb_grpc.add_LeaseServicer_to_server(LeaseService(member.leases, member.auth), server)
    pb_grpc.add_ClusterServicer_to_server(ClusterService(member.membership, member.auth), server)
    pb_grpc.add_MaintenanceServicer_to_server(
        MaintenanceService(member.maintenance, member.versions, member.auth), server
    )
    pb_grpc.add_AuthServicer_to_server(AuthService(member.auth), server)
    add_repair_service(server, member.repairer, member.auth)
    for url in cfg.listen_client_urls:
        try:
            if credentials is not None and urlsplit(url).scheme == "https":
                server.add_secure_port(grpc_address(url), credentials)
            else:
                server.add_insecure_port(grpc_address(url))
        except RuntimeError as exc:  # grpc: the address is in use or cannot be bound
            log.critical("cannot listen for client requests on %s: %s", url, exc)
            await stop_member(member)
            return 1
    await server.start()
    http_servers = await start_http(member, list(cfg.listen_metrics_urls))
    log.info("serving client requests on %s", ", ".join(cfg.listen_client_urls))

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    stopped = asyncio.create_task(member.stopped.wait())
    requested = asyncio.create_task(stop.wait())
    await asyncio.wait({stopped, requested}, return_when=asyncio.FIRST_COMPLETED)
    for task in (stopped, requested):
        task.cancel()
    log.info("shutting down")
    await server.stop(grace=1.0)
    for http in http_servers:
        http.close()
    if member.fatal_error is not None:
        if isinstance(member.fatal_error, FatalStateMachineError):
            log.critical("member stopped: %s", member.fatal_error)
        else:
            log.critical("member stopped on a fatal error: %r", member.fatal_error)
        await stop_member(member)
        return 1
    return 0 if await stop_member(member) else 1


async def stop_member(member: Member) -> bool:
    """Stop the member within ``STOP_TIMEOUT``; True when it stopped cleanly.  A stop that
    hangs ends the process (everything acknowledged is already durable: it is a crash the
    member is built to survive), so a member never lingers half-stopped."""
    try:
        async with asyncio.timeout(STOP_TIMEOUT):
            await member.stop()
        return True
    except TimeoutError:
        log.critical("the member did not stop within %.0fs; exiting", STOP_TIMEOUT)
        logging.shutdown()
        os._exit(1)
    except Exception as exc:
        log.error("stopping the member failed: %r", exc)
        return False


def run(cfg: ServerConfig) -> int:
    try:
        import uvloop

        return uvloop.run(serve(cfg))
    except ImportError:
        return asyncio.run(serve(cfg))
