"""Registering gRPC services so that a request that does not decode is the client's error.

grpc python answers a request whose ``request_deserializer`` raises with UNKNOWN ("Unexpected
<class 'DecodeError'>...") and logs a traceback at ERROR.  Here each method is registered with
its decoding moved into the method: a payload that does not decode is answered
INVALID_ARGUMENT with grpc-go's words (``grpc: error unmarshalling request: <reason>`` for a
unary request, ``grpc: failed to unmarshal the received message <reason>`` for a message of a
request stream), nothing is logged, and the servicer never sees it.

Contracts:
- ``add_servicer(server, add, servicer)`` takes a generated ``add_<Service>Servicer_to_server``
  and registers what it declares (generic and registered method handlers) on ``server``;
  ``add_service(server, name, handlers)`` does the same for a hand-made method table;
- behaviors that are ``async def`` coroutine functions or async generator functions (every
  raftkv service method) are guarded; a synchronous one (the generated base class's
  ``Method not implemented!``) is registered as it is;
- a malformed payload is one whose deserializer raises ``DecodeError`` (protobuf) or
  ``ValueError`` (JSON, text); any other exception from a deserializer is left to grpc;
- a message of a request stream that does not decode raises ``MalformedMessage`` from the
  iterator the behavior reads; the behavior must let it out (a behavior that swallows it
  ends the stream its own way);
- cost on the hot path: one coroutine frame per unary call (the decode happens in it instead
  of in grpc's loop), one async-generator step per message of a stream.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Callable, Mapping
from typing import TYPE_CHECKING, Any, NoReturn

import grpc
import grpc.aio
from google.protobuf.message import DecodeError

if TYPE_CHECKING:
    Handler = grpc.RpcMethodHandler[Any, Any]

Context = grpc.aio.ServicerContext[Any, Any]
Decoder = Callable[[bytes], Any]
Behavior = Callable[..., Any]

MALFORMED: tuple[type[Exception], ...] = (DecodeError, ValueError)
"""What a deserializer raises for a payload that does not decode."""

UNARY_PREFIX = "grpc: error unmarshalling request: "
STREAM_PREFIX = "grpc: failed to unmarshal the received message "


def reason(exc: Exception) -> str:
    """The short cause of a decode failure: protobuf's ``Error parsing message with type
    'etcdserverpb.PutRequest': Wire format was corrupt`` becomes ``wire format was corrupt``;
    one line, starting lower case (Go's style), never empty."""
    text = " ".join(str(exc).split())
    if "': " in text:
        text = text.rsplit("': ", 1)[1]
    if not text:
        return type(exc).__name__
    return text[:1].lower() + text[1:]


async def reject(context: Context, message: str) -> NoReturn:
    """End the call with INVALID_ARGUMENT and ``message`` (``abort`` raises)."""
    await context.abort(grpc.StatusCode.INVALID_ARGUMENT, message)
    raise AssertionError("unreachable: abort raises")  # pragma: no cover


def _async_behavior(handler: Handler) -> Behavior | None:
    """The handler's one behavior when it is async (grpc.aio awaits it on the loop)."""
    behavior: Behavior | None = (
        handler.unary_unary or handler.unary_stream or handler.stream_unary or handler.stream_stream
    )
    if inspect.iscoroutinefunction(behavior) or inspect.isasyncgenfunction(behavior):
        return behavior
    return None


class MalformedMessage(Exception):
    """A message of a request stream did not decode; raised into the behavior from its request
    iterator and answered by the registration's wrapper once it leaves the behavior.  (Aborting
    from inside the iterator would race the behavior's own writes when it reads in another
    task, as the Watch service does: grpc refuses a status while a message is being sent.)"""


async def _decoded(requests: AsyncIterator[bytes], decode: Decoder) -> AsyncIterator[Any]:
    async for raw in requests:
        try:
            message = decode(raw)
        except MALFORMED as exc:
            raise MalformedMessage(STREAM_PREFIX + reason(exc)) from None
        yield message


def _unary_unary(decode: Decoder, behavior: Behavior) -> Behavior:
    async def call(raw: bytes, context: Context) -> Any:
        try:
            request = decode(raw)
        except MALFORMED as exc:
            await reject(context, UNARY_PREFIX + reason(exc))
        return await behavior(request, context)

    return call


def _unary_stream(decode: Decoder, behavior: Behavior) -> Behavior:
    async def decoded(raw: bytes, context: Context) -> Any:
        try:
            return decode(raw)
        except MALFORMED as exc:
            await reject(context, STREAM_PREFIX + reason(exc))

    if inspect.isasyncgenfunction(behavior):

        async def generate(raw: bytes, context: Context) -> AsyncIterator[Any]:
            async for response in behavior(await decoded(raw, context), context):
                yield response

        return generate

    async def write(raw: bytes, context: Context) -> Any:  # the behavior writes via context
        return await behavior(await decoded(raw, context), context)

    return write


def _stream_unary(decode: Decoder, behavior: Behavior) -> Behavior:
    async def call(requests: AsyncIterator[bytes], context: Context) -> Any:
        try:
            return await behavior(_decoded(requests, decode), context)
        except MalformedMessage as exc:
            await reject(context, str(exc))

    return call


def _stream_stream(decode: Decoder, behavior: Behavior) -> Behavior:
    if inspect.isasyncgenfunction(behavior):

        async def generate(requests: AsyncIterator[bytes], context: Context) -> AsyncIterator[Any]:
            try:
                async for response in behavior(_decoded(requests, decode), context):
                    yield response
            except MalformedMessage as exc:  # between two writes: no message is in flight
                await reject(context, str(exc))

        return generate
    return _stream_unary(decode, behavior)  # a behavior that writes through its context


def guarded(handler: Handler) -> Handler:
    """``handler`` with its request decoding moved into the call, as the module describes;
    a handler without a request deserializer, or whose behavior is synchronous (grpc runs it
    in its thread pool: the generated base class's ``Method not implemented!``), is returned
    unchanged."""
    decode = handler.request_deserializer
    behavior = _async_behavior(handler)
    if decode is None or behavior is None:
        return handler
    serialize = handler.response_serializer
    if not handler.request_streaming and not handler.response_streaming:
        return grpc.unary_unary_rpc_method_handler(_unary_unary(decode, behavior), None, serialize)
    if not handler.request_streaming:
        return grpc.unary_stream_rpc_method_handler(
            _unary_stream(decode, behavior), None, serialize
        )
    if not handler.response_streaming:
        return grpc.stream_unary_rpc_method_handler(
            _stream_unary(decode, behavior), None, serialize
        )
    return grpc.stream_stream_rpc_method_handler(_stream_stream(decode, behavior), None, serialize)


def add_service(server: grpc.aio.Server, service: str, handlers: Mapping[str, Handler]) -> None:
    """Register ``handlers`` (method name -> handler) of ``service`` (``etcdserverpb.KV``) on
    ``server``, each ``guarded``."""
    table = {method: guarded(h) for method, h in handlers.items()}
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service, table),))
    server.add_registered_method_handlers(service, table)


class _Recorder:
    """Stands in for the server while a generated ``add_*_to_server`` declares its methods."""

    def __init__(self) -> None:
        self.services: dict[str, dict[str, Handler]] = {}

    def add_generic_rpc_handlers(self, handlers: object) -> None:
        """Generated code declares each table twice; the registered copy is the one kept."""

    def add_registered_method_handlers(self, service: str, handlers: Mapping[str, Handler]) -> None:
        self.services.setdefault(service, {}).update(handlers)


def add_servicer(
    server: grpc.aio.Server, add: Callable[[Any, Any], None], servicer: object
) -> None:
    """Register ``servicer`` through the generated ``add`` (``add_KVServicer_to_server``),
    every method ``guarded``.  ``ValueError`` when ``add`` declares no method table."""
    recorder = _Recorder()
    add(servicer, recorder)
    if not recorder.services:
        raise ValueError(f"{add!r} declared no registered method handlers")
    for service, handlers in recorder.services.items():
        add_service(server, service, handlers)
