"""A gRPC front process of a member (``raftkv serve --grpc-front-processes N``).

The member starts its fronts (``raftkv.app.fronts``); each runs this module's ``main`` and
serves the member's client URLs, all of them listening on the same ports (SO_REUSEPORT: the
kernel spreads the clients' connections over the fronts).  What a front does with a call:
- KV's unary methods go over the front link (``raftkv.app.front_link``) with the caller's
  token, and the member's answer (response or status) is the call's;
- every other method (Watch, Lease, Cluster, Maintenance, Auth, raftkv's repair) is passed to
  the member's private gRPC socket as bytes, with the call's metadata, its deadline and, for
  streams, each message both ways; the member's status is the call's, and a call the client
  cancels is cancelled at the member;
- a method no service declares is UNIMPLEMENTED, as the member answers it.

TLS: the front terminates it on the member's https client URLs with the member's material
(``--tls``, the member's ``TLSInfo`` as JSON), re-read when the files change, and runs the
member's per-call certificate checks (``--client-crl-file``, ``--client-cert-allowed-hostname``)
as the member's own server does.  The CN of the certificate a client presented reaches the
member with the call (the link's CN field; ``FRONT_CN_METADATA`` on a passed call, where any
value the client sent under that key is dropped first), so ``--client-cert-auth`` users are
the member's.

Contracts: a front holds no state of the member's and checks nothing the member checks (a
request is validated once, by the member); it exits when its link to the member closes, so a
member that stops or crashes leaves no front serving; it exits with status 1 and one line on
stderr when it cannot listen on a client URL.  Message size limits are the member's: the front
receives up to ``--max-request-bytes`` plus gRPC's framing, as the member's own server does.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator
from typing import Any

import grpc
import grpc.aio

from raftkv.api.common import FRONT_CN_METADATA, certificate_cn, token_of
from raftkv.app.client_tls import CertificateChecks, server_credentials
from raftkv.app.front_link import (
    HELLO,
    KV_METHODS,
    KV_SERVICE,
    FrameReader,
    FrameWriter,
    request_body,
)
from raftkv.tlsutil import TLSInfo

Context = grpc.aio.ServicerContext[Any, Any]

_STATUS = {code.value[0]: code for code in grpc.StatusCode}
_MEMBER_GONE = (grpc.StatusCode.UNAVAILABLE.value[0], b"the member stopped")
"""The answer to every call the member can no longer answer (its link closed)."""
_UNFORWARDED = ("user-agent", "te", "content-type")
"""Metadata gRPC sets on every call itself; the member's channel sets its own."""


class FrontLink(asyncio.Protocol):
    """The front's end of its link: request frames out, each answered by one response frame."""

    def __init__(self) -> None:
        self._reader = FrameReader()
        self._writer: FrameWriter | None = None
        self._calls: dict[int, asyncio.Future[tuple[int, bytes]]] = {}
        self._next_id = 0
        self.closed = asyncio.Event()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it
        self._writer = FrameWriter(transport)  # type: ignore[arg-type]

    def data_received(self, data: bytes) -> None:
        for call_id, code, body in self._reader.feed(data):
            fut = self._calls.pop(call_id, None)
            if fut is not None and not fut.done():
                fut.set_result((code, body))

    def connection_lost(self, exc: Exception | None) -> None:
        for fut in self._calls.values():
            if not fut.done():
                fut.set_result(_MEMBER_GONE)
        self._calls.clear()
        self.closed.set()

    def hello(self) -> None:
        assert self._writer is not None
        self._writer.write(os.getpid(), HELLO)

    def call(
        self, method: int, token: str | None, cn: str | None, request: bytes
    ) -> asyncio.Future[tuple[int, bytes]]:
        """Send one call; the future gets the member's (status code, body)."""
        assert self._writer is not None
        self._next_id = (self._next_id + 1) & 0xFFFFFFFF
        fut: asyncio.Future[tuple[int, bytes]] = asyncio.get_running_loop().create_future()
        if self.closed.is_set():
            fut.set_result(_MEMBER_GONE)
            return fut
        self._calls[self._next_id] = fut
        self._writer.write(self._next_id, method, *request_body(token, cn, request))
        return fut


def _forwarded(context: Context, tls: bool) -> tuple[tuple[str, Any], ...]:
    """The call's metadata for the member: the client's, less what gRPC sets itself and any
    ``FRONT_CN_METADATA`` the client sent, plus the front's own CN (``tls``: the front
    serves TLS, so the client may have presented a certificate)."""
    metadata = tuple(
        (key, value)
        for key, value in context.invocation_metadata() or ()
        if not key.startswith((":", "grpc-"))
        and key not in _UNFORWARDED
        and key != FRONT_CN_METADATA
    )
    cn = certificate_cn(context) if tls else None
    return (*metadata, (FRONT_CN_METADATA, cn)) if cn else metadata


class Forwarder(grpc.GenericRpcHandler):
    """Routes every method as the module describes."""

    def __init__(self, link: FrontLink, member: grpc.aio.Channel, tls: bool) -> None:
        """``tls``: the front serves TLS on some address (without, no call can carry a client
        certificate, and its CN is not looked up)."""
        self._handlers: dict[str, grpc.RpcMethodHandler[Any, Any]] = {}
        for index, name in enumerate(KV_METHODS):
            self._handlers[KV_SERVICE + name] = self._over_link(link, index, tls)
        for method, (client_streaming, server_streaming) in _declared_methods().items():
            if method not in self._handlers:
                self._handlers[method] = _passed(
                    member, method, client_streaming, server_streaming, tls
                )

    def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler[Any, Any] | None:
        return self._handlers.get(details.method)

    @staticmethod
    def _over_link(link: FrontLink, index: int, tls: bool) -> grpc.RpcMethodHandler[Any, Any]:
        async def call(request: bytes, context: Context) -> bytes:
            cn = certificate_cn(context) if tls else None
            code, body = await link.call(index, token_of(context), cn, request)
            if code:
                await context.abort(_STATUS.get(code, grpc.StatusCode.UNKNOWN), body.decode())
            return body

        return grpc.unary_unary_rpc_method_handler(call)


def _declared_methods() -> dict[str, tuple[bool, bool]]:
    """Every method the member serves: (client streaming, server streaming) by full name."""
    from raftkv.api import repair
    from raftkv.proto import rpc_pb2

    methods = {repair.FULL_METHOD: (False, False)}
    for service in rpc_pb2.DESCRIPTOR.services_by_name.values():
        for m in service.methods:
            methods[f"/{service.full_name}/{m.name}"] = (m.client_streaming, m.server_streaming)
    return methods


def _passed(
    member: grpc.aio.Channel,
    method: str,
    client_streaming: bool,
    server_streaming: bool,
    tls: bool,
) -> grpc.RpcMethodHandler[Any, Any]:
    """A handler passing ``method`` to the member's channel as bytes (see the module)."""

    def metadata(context: Context) -> tuple[tuple[str, Any], ...]:
        return _forwarded(context, tls)

    async def abort_as(context: Context, exc: grpc.aio.AioRpcError) -> None:
        await context.abort(exc.code(), exc.details() or "")

    async def relayed(upstream: Any, context: Context) -> AsyncIterator[bytes]:
        """The member's responses on ``upstream`` (a server-streaming call), then its status;
        the call at the member is cancelled when the client's ends first."""
        try:
            async for response in upstream:
                yield bytes(response)
        except grpc.aio.AioRpcError as exc:
            await abort_as(context, exc)
        finally:
            upstream.cancel()

    if not client_streaming and not server_streaming:
        unary: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = member.unary_unary(method)

        async def unary_unary(request: bytes, context: Context) -> bytes:
            try:
                return bytes(
                    await unary(
                        request, metadata=metadata(context), timeout=context.time_remaining()
                    )
                )
            except grpc.aio.AioRpcError as exc:
                await abort_as(context, exc)
                raise  # unreachable: abort raises

        return grpc.unary_unary_rpc_method_handler(unary_unary)

    if not client_streaming:
        out: grpc.aio.UnaryStreamMultiCallable[bytes, bytes] = member.unary_stream(method)

        async def unary_stream(request: bytes, context: Context) -> AsyncIterator[bytes]:
            upstream = out(request, metadata=metadata(context), timeout=context.time_remaining())
            async for response in relayed(upstream, context):
                yield response

        return grpc.unary_stream_rpc_method_handler(unary_stream)

    if not server_streaming:
        into: grpc.aio.StreamUnaryMultiCallable[bytes, bytes] = member.stream_unary(method)

        async def stream_unary(requests: AsyncIterator[bytes], context: Context) -> bytes:
            upstream = into(requests, metadata=metadata(context), timeout=context.time_remaining())
            try:
                return bytes(await upstream)
            except grpc.aio.AioRpcError as exc:
                await abort_as(context, exc)
                raise  # unreachable: abort raises
            finally:
                upstream.cancel()

        return grpc.stream_unary_rpc_method_handler(stream_unary)

    both: grpc.aio.StreamStreamMultiCallable[bytes, bytes] = member.stream_stream(method)

    async def stream_stream(
        requests: AsyncIterator[bytes], context: Context
    ) -> AsyncIterator[bytes]:
        upstream = both(requests, metadata=metadata(context), timeout=context.time_remaining())
        async for response in relayed(upstream, context):
            yield response

    return grpc.stream_stream_rpc_method_handler(stream_stream)


async def serve(args: argparse.Namespace) -> int:
    loop = asyncio.get_running_loop()
    _, link = await loop.create_unix_connection(FrontLink, args.link)
    member = grpc.aio.insecure_channel(
        "unix:" + args.member,
        options=[("grpc.max_receive_message_length", -1), ("grpc.max_send_message_length", -1)],
    )
    tls = TLSInfo.from_json(args.tls) if args.tls else None
    checks = (
        CertificateChecks(tls)
        if tls is not None and (tls.crl_file or tls.allowed_hostnames)
        else None
    )
    server = grpc.aio.server(
        interceptors=[checks] if checks is not None else [],
        options=[
            ("grpc.max_receive_message_length", args.max_receive_bytes),
            ("grpc.max_send_message_length", 2**31 - 1),
            ("grpc.so_reuseport", 1),
        ],
    )
    server.add_generic_rpc_handlers((Forwarder(link, member, tls is not None),))
    for address, secure in [(a, False) for a in args.listen] + [(a, True) for a in args.secure]:
        try:
            if secure:
                assert tls is not None, "--secure needs --tls"
                server.add_secure_port(address, server_credentials(tls))
            else:
                server.add_insecure_port(address)
        except RuntimeError as exc:
            print(f"raftkv front: cannot listen on {address}: {exc}", file=sys.stderr)
            return 1
    await server.start()
    link.hello()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    done = [asyncio.create_task(stop.wait()), asyncio.create_task(link.closed.wait())]
    await asyncio.wait(done, return_when=asyncio.FIRST_COMPLETED)
    for task in done:
        task.cancel()
    await server.stop(grace=1.0)
    await member.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="raftkv-front", description=__doc__.splitlines()[0])
    ap.add_argument("--link", required=True, help="the member's front link socket")
    ap.add_argument("--member", required=True, help="the member's private gRPC socket")
    ap.add_argument("--listen", action="append", default=[], help="plaintext host:port")
    ap.add_argument("--secure", action="append", default=[], help="TLS host:port")
    ap.add_argument("--tls", default="", help="the member's client TLSInfo, as JSON")
    ap.add_argument("--max-receive-bytes", type=int, required=True)
    args = ap.parse_args(argv)
    if not args.listen and not args.secure:
        ap.error("nothing to listen on (--listen or --secure)")
    from raftkv.server.runtime import apply_grpc_defaults, tune_gc

    apply_grpc_defaults()
    tune_gc()
    try:
        import uvloop
    except ImportError:
        return asyncio.run(serve(args))
    return uvloop.run(serve(args))


if __name__ == "__main__":
    raise SystemExit(main())
