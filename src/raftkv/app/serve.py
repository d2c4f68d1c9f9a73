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

from raftkv.api.cluster import ClusterService
from raftkv.api.common import set_corruption_reporter
from raftkv.api.kv import KVService
from raftkv.api.lease import LeaseService
from raftkv.api.maintenance import MaintenanceService
from raftkv.api.repair import add_repair_service
from raftkv.api.watch import WatchService
from raftkv.app.http import start_http
from raftkv.proto import rpc_pb2_grpc as pb_grpc
from raftkv.server.bootstrap import BootstrapError
from raftkv.server.config import ServerConfig
from raftkv.server.hash_check import InitialCheckError
from raftkv.server.member import Member
from raftkv.server.raft_node import FatalStateMachineError
from raftkv.server.versions import IncompatibleVersionError

log = logging.getLogger("raftkv.run")

STOP_TIMEOUT = 20.0
"""Seconds an orderly stop may take before the process exits anyway."""

# etcd allows this much gRPC framing on top of --max-request-bytes.
GRPC_OVERHEAD_BYTES = 512 * 1024


def grpc_address(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.hostname}:{parts.port}"


async def serve(cfg: ServerConfig) -> int:
    member = Member(cfg)
    try:
        await member.start()
    except (
        InitialCheckError,
        BootstrapError,
        FatalStateMachineError,
        IncompatibleVersionError,
    ) as exc:
        log.critical("%s", exc)
        await stop_member(member)
        return 1
    set_corruption_reporter(member.report_backend_corruption)
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", cfg.max_request_bytes + GRPC_OVERHEAD_BYTES),
            ("grpc.max_send_message_length", 2**31 - 1),
            ("grpc.so_reuseport", 0),
        ]
    )
    pb_grpc.add_KVServicer_to_server(KVService(member.kv), server)
    pb_grpc.add_WatchServicer_to_server(WatchService(member), server)
    pb_grpc.add_LeaseServicer_to_server(LeaseService(member.leases), server)
    pb_grpc.add_ClusterServicer_to_server(ClusterService(member.membership), server)
    pb_grpc.add_MaintenanceServicer_to_server(
        MaintenanceService(member.maintenance, member.versions), server
    )
    add_repair_service(server, member.repairer)
    for url in cfg.listen_client_urls:
        try:
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
