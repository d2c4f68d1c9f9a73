"""The gateway's pieces without a member: the route table against the services, the context
adapter against what the services use of a context, and the JSON mapping of bodies."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import grpc
import pytest

from raftkv.api import gateway
from raftkv.api.auth import AuthService
from raftkv.api.cluster import ClusterService
from raftkv.api.gateway import ROUTES, BadRequest, GatewayContext, decode_body, parse_request
from raftkv.api.kv import KVService
from raftkv.api.lease import LeaseService
from raftkv.api.maintenance import MaintenanceService
from raftkv.api.watch import WatchService
from raftkv.proto import rpc_pb2 as pb

API = Path(gateway.__file__).resolve().parent

_SERVICES = {
    "kv": KVService,
    "watch": WatchService,
    "lease": LeaseService,
    "cluster": ClusterService,
    "maintenance": MaintenanceService,
    "auth": AuthService,
}


def test_every_etcd_rpc_has_its_route() -> None:
    # every method of etcd's six services is reachable, with its own request type
    served = {(r.service, r.method) for r in ROUTES.values()}
    for name, cls in _SERVICES.items():
        service = pb.DESCRIPTOR.services_by_name[cls.__bases__[0].__name__.removesuffix("Servicer")]
        for method in service.methods:
            assert (name, method.name) in served, method.full_name
    for path, route in ROUTES.items():
        method = pb.DESCRIPTOR.services_by_name[
            _SERVICES[route.service].__bases__[0].__name__.removesuffix("Servicer")
        ].methods_by_name[route.method]
        assert method.input_type.full_name == route.request.DESCRIPTOR.full_name, path
        assert callable(getattr(_SERVICES[route.service], route.method))


def test_the_context_adapter_has_what_the_services_call() -> None:
    used = set()
    for source in API.glob("*.py"):
        used |= set(re.findall(r"\bcontext\.(\w+)\(", source.read_text()))
    assert used, "no context use found: the pattern is stale"
    missing = {name for name in used if not hasattr(GatewayContext, name)}
    assert not missing, f"api/ calls {missing} on a context; GatewayContext lacks them"


def test_abort_raises_the_status() -> None:
    ctx = GatewayContext([("authorization", "t")], {}, "ipv4:127.0.0.1:1")
    assert ctx.invocation_metadata() == (("authorization", "t"),)
    with pytest.raises(gateway.GatewayAbort) as info:
        asyncio.run(ctx.abort(grpc.StatusCode.NOT_FOUND, "etcdserver: requested lease not found"))
    assert info.value.code is grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b'{"key":"Zm9v', "unexpected EOF"),
        (b'{"key":', "unexpected EOF"),
        (b"{", "unexpected EOF"),
        (b'{"key" "x"}', "invalid character '\"' at offset 7: Expecting ':' delimiter"),
        (b"\xff", "invalid UTF-8 in request body"),
    ],
)
def test_bad_bodies_are_named(body: bytes, message: str) -> None:
    with pytest.raises(BadRequest, match=re.escape(message)):
        decode_body(body)


def test_json_mapping_takes_both_name_styles_and_ignores_unknown_fields() -> None:
    route = ROUTES["/v3/kv/range"]
    a = parse_request(route, decode_body(b'{"key":"Zm9v","keys_only":true,"limit":"5","x":1}'))
    b = parse_request(route, decode_body(b'{"key":"Zm9v","keysOnly":true,"limit":5}'))
    assert a == b == pb.RangeRequest(key=b"foo", keys_only=True, limit=5)
    assert parse_request(route, decode_body(b"")) == pb.RangeRequest()
    with pytest.raises(BadRequest):
        parse_request(route, [1])
    with pytest.raises(BadRequest):
        parse_request(route, {"limit": "many"})
    resp = pb.RangeResponse(header=pb.ResponseHeader(revision=7, member_id=2**63), count=1)
    assert gateway.to_json(resp) == {
        "header": {"member_id": str(2**63), "revision": "7"},
        "count": "1",
    }
