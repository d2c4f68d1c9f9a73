"""Running a member as a process: the gRPC server on the client URLs, HTTP on the metrics
URLs, signal handling and orderly shutdown.

Contract: ``run(cfg)`` returns the process exit status: 0 after SIGINT/SIGTERM and a clean
stop, 1 when the member failed.  A member that cannot start or that stops on a fatal error logs
why in one CRITICAL line naming the cause and its path or URL (``app.startup``); tracebacks only
at ``--log-level debug``.  Listen addresses and data directories are checked before anything is
created (etcd's order: listeners, then the data directory).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Coroutine
from typing import Any
from urllib.parse import urlsplit

import grpc.aio

from raftkv.api.common import set_corruption_reporter, trust_front_cn
from raftkv.api.registration import add_servicer
from raftkv.api.repair import add_repair_service
from raftkv.app.client_tls import CertificateChecks, server_credentials
from raftkv.app.fronts import GrpcFronts
from raftkv.app.http import HttpListeners
from raftkv.app.services import build_services
from raftkv.app.startup import check_dirs, check_listen_urls, report
from raftkv.proto import rpc_pb2_grpc as pb_grpc
from raftkv.server import security
from raftkv.server.config import ServerConfig
from raftkv.server.logsetup import exception_line
from raftkv.server.member import Member
from raftkv.server.raft_node import FatalStateMachineError

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
        check_listen_urls(cfg)
        check_dirs(cfg)
        client_tls = security.client_tls(cfg)
        credentials = server_credentials(client_tls) if client_tls is not None else None
    except Exception as exc:
        report(log, exc)
        return 1
    _warn_plaintext_urls(cfg)
    member = Member(cfg)
    try:
        await member.start()
    except Exception as exc:  # any failure to start: one line, the traceback at debug
        report(log, exc)
        await stop_member(member, failed=True)
        return 1
    set_corruption_reporter(member.report_backend_corruption)
    # one set of per-call certificate checks for gRPC and the gateway
    checks = (
        CertificateChecks(client_tls)
        if client_tls is not None and (client_tls.crl_file or client_tls.allowed_hostnames)
        else None
    )
    # With front processes the gRPC server listens only on the fronts' private socket, where
    # no call carries a certificate: the fronts run these checks on their TLS connections.
    interceptors = [checks] if checks is not None and not cfg.grpc_front_processes else []
    server = grpc.aio.server(
        interceptors=interceptors,
        options=[
            ("grpc.max_receive_message_length", cfg.max_request_bytes + GRPC_OVERHEAD_BYTES),
            ("grpc.max_send_message_length", 2**31 - 1),
            ("grpc.so_reuseport", 0),
        ],
    )
    # One set of services for gRPC and the JSON gateway.  Each gRPC method decodes its own
    # request: a malformed one is INVALID_ARGUMENT, not a traceback.
    services = build_services(member)
    add_servicer(server, pb_grpc.add_KVServicer_to_server, services.kv)
    add_servicer(server, pb_grpc.add_WatchServicer_to_server, services.watch)
    add_servicer(server, pb_grpc.add_LeaseServicer_to_server, services.lease)
    add_servicer(server, pb_grpc.add_ClusterServicer_to_server, services.cluster)
    add_servicer(server, pb_grpc.add_MaintenanceServicer_to_server, services.maintenance)
    add_servicer(server, pb_grpc.add_AuthServicer_to_server, services.auth)
    add_repair_service(server, member.repairer, member.auth)
    # (URL, host:port, on TLS) of each client URL: where the fronts listen, or the member
    client_listeners = [
        (url, grpc_address(url), credentials is not None and urlsplit(url).scheme == "https")
        for url in cfg.listen_client_urls
    ]
    fronts = (
        GrpcFronts(
            cfg.grpc_front_processes,
            [(address, secure) for _, address, secure in client_listeners],
            client_tls,
            cfg.max_request_bytes + GRPC_OVERHEAD_BYTES,
        )
        if cfg.grpc_front_processes
        else None
    )
    if fronts is not None:  # the fronts listen on the client URLs, the member privately
        server.add_insecure_port("unix:" + fronts.grpc_socket)
        trust_front_cn(True)
    for url, address, secure in client_listeners if fronts is None else ():
        try:
            if secure:
                assert credentials is not None
                server.add_secure_port(address, credentials)
            else:
                server.add_insecure_port(address)
        except RuntimeError as exc:  # grpc: the address is in use or cannot be bound
            log.critical("cannot listen for client requests on %s: %s", url, exception_line(exc))
            await stop_member(member, failed=True)
            return 1
    await server.start()
    http = HttpListeners(member, cfg, services, client_tls, checks)
    try:
        if fronts is not None:
            await fronts.start(services.kv)
        await http.start()
    except Exception as exc:  # a front or an HTTP listener could not start: one line
        report(log, exc)
        if fronts is not None:
            await fronts.close()
        await server.stop(grace=None)
        await stop_member(member, failed=True)
        return 1
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
    if fronts is not None:
        await fronts.close()
    await server.stop(grace=1.0)
    await http.close()
    if member.fatal_error is not None:
        if isinstance(member.fatal_error, FatalStateMachineError):
            report(log, member.fatal_error, "member stopped: ")
        else:
            report(log, member.fatal_error, "member stopped on a fatal error: ")
        await stop_member(member, failed=True)
        return 1
    return 0 if await stop_member(member) else 1


async def stop_member(member: Member, failed: bool = False) -> bool:
    """Stop the member within ``STOP_TIMEOUT``; True when it stopped cleanly.  A stop that
    hangs ends the process (everything acknowledged is already durable: it is a crash the
    member is built to survive), so a member never lingers half-stopped.  ``failed``: the
    member already failed and said why; an error of the stop is then only a DEBUG line (it
    is usually the same error again)."""
    try:
        async with asyncio.timeout(STOP_TIMEOUT):
            await member.stop()
        return True
    except TimeoutError:
        log.critical("the member did not stop within %.0fs; exiting", STOP_TIMEOUT)
        logging.shutdown()
        os._exit(1)
    except Exception as exc:
        level = logging.DEBUG if failed else logging.ERROR
        log.log(level, "stopping the member failed: %s", exception_line(exc))
        log.debug("the traceback of the error above", exc_info=exc)
        return False


def run(cfg: ServerConfig) -> int:
    """Serve ``cfg`` until stopped; the exit status (see the module contract).  An error that
    escapes ``serve`` is reported as one line too."""
    try:
        return _run_loop(serve(cfg))
    except Exception as exc:
        report(log, exc)
        return 1


def _run_loop(main: Coroutine[Any, Any, int]) -> int:
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)
