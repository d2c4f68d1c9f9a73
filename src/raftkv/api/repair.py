"""raftkv's own gRPC method for ``raftkv member repair``: ``/raftkvpb.Guard/RepairMember``.

etcd's API has no repair call, so this one lives in raftkv's own service, beside etcd's on the
client port.  It carries JSON rather than protobuf so no generated code is needed:

    request:  {"member_id": <uint64>}
    response: {"member_id", "source_id", "installed_index", "reapplied_entries",
               "log_replaced", "verified_index", "state_hash", "alarm_cleared",
               "verdict_cleared"}

The member must be fenced: under a CORRUPT alarm, fenced by a guard verdict it accepted
(possibly unable to apply the alarm: ``log_replaced`` then tells that its Raft log was replaced
too), or stopped on a corrupt stored value.  ``verdict_cleared`` is true when a guard verdict
was cleared with the alarm.

Errors: FAILED_PRECONDITION with the reason when the repair cannot be done or verified (the
member stays fenced), INVALID_ARGUMENT for a malformed request.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import grpc
import grpc.aio

if TYPE_CHECKING:  # the CLI imports this module for the wire format only: keep it light
    from raftkv.api.ports import AuthPort, RepairPort

SERVICE = "raftkvpb.Guard"
METHOD = "RepairMember"
FULL_METHOD = f"/{SERVICE}/{METHOD}"


def encode(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj).encode()


def decode(data: bytes) -> Any:
    return json.loads(data)


def add_repair_service(server: grpc.aio.Server, repairer: RepairPort, auth: AuthPort) -> None:
    """While auth is enabled the caller must be root; its token goes with the fetch of a
    healthy member's backend (that member checks it too)."""
    from raftkv import errors
    from raftkv.api.common import require_admin
    from raftkv.server.repair import RepairError

    async def repair(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> dict[str, Any]:
        target = request.get("member_id") if isinstance(request, dict) else None
        if not isinstance(target, int) or target <= 0:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "member_id must be a member ID")
        token = None
        try:
            await require_admin(auth, context)
            token = dict(context.invocation_metadata() or ()).get("token")
        except errors.EtcdError as exc:
            await errors.abort(context, exc)
        try:
            return await repairer.repair(int(target), token if isinstance(token, str) else None)
        except RepairError as exc:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(exc))
            raise  # unreachable: abort raises

    from raftkv.api.registration import add_service  # undecodable JSON: INVALID_ARGUMENT

    add_service(
        server,
        SERVICE,
        {
            METHOD: grpc.unary_unary_rpc_method_handler(
                repair, request_deserializer=decode, response_serializer=encode
            )
        },
    )
