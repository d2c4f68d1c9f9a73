"""``raftkv member repair <memberID>``: rebuild a fenced member from a healthy member's state.

Calls raftkv's own ``/raftkvpb.Guard/RepairMember`` on the first reachable endpoint, which
routes the request to the member being repaired (see ``raftkv.server.repair``).  The member ID
is hexadecimal, as ``etcdctl member list`` prints it.  Exit status 0 when the member was
repaired, verified and its CORRUPT alarm cleared; 1 otherwise, with the server's reason.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

import grpc

from raftkv.api.repair import FULL_METHOD, decode, encode
from raftkv.client import output as fmt
from raftkv.client.conn import (
    EXIT_BAD_ARGS,
    CtlError,
    GlobalOptions,
    connect,
    grpc_error_text,
)


def cmd_member_repair(args: argparse.Namespace, opts: GlobalOptions, out: fmt.Out) -> int:
    try:
        target = int(args.member_id, 16)
    except ValueError:
        raise CtlError(
            f"bad member ID arg ({args.member_id!r}), expecting ID in Hex", EXIT_BAD_ARGS
        ) from None
    stubs = connect(opts)
    try:
        method = stubs.channel.unary_unary(
            FULL_METHOD, request_serializer=encode, response_deserializer=decode
        )
        result: dict[str, Any] = method({"member_id": target}, timeout=args.repair_timeout)
    except grpc.RpcError as exc:
        raise CtlError(grpc_error_text(exc)) from None
    finally:
        stubs.close()
    if opts.write_out == "json":
        out.line(json.dumps(result))
    else:
        out.line(
            f"Member {result['member_id']:x} repaired from member {result['source_id']:x}: "
            f"state installed at raft index {result['installed_index']} "
            f"({result['reapplied_entries']} entries re-applied), state hash "
            f"{result['state_hash']} verified against the quorum at raft index "
            f"{result['verified_index']}; CORRUPT alarm cleared"
            + ("; guard verdict cleared" if result.get("verdict_cleared") else "")
            + ("; Raft log replaced" if result.get("log_replaced") else "")
        )
    return 0
