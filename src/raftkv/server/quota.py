"""The backend space quota, as etcd 3.5 enforces it (``server/etcdserver/quota.go``,
``server/etcdserver/api/v3rpc/quota.go``, the capped and quota appliers of
``server/etcdserver/apply.go``).

Owns: the cost etcd charges a request against the quota (``cost_put``, ``cost_txn``,
``LEASE_OVERHEAD``), the verdict whether a request fits (``fits``), the check at the front
door of a member (``QuotaAlarmer``: Put, Txn and LeaseGrant, before proposing), and etcd's
log lines about the configured quota (``log_quota``).

Contracts:
- a request fits when it costs nothing (no put in it) or when the backend's size at its last
  commit plus the cost stays below the quota (``size + cost < quota``, etcd's ``Available``);
  a disabled quota (negative ``--quota-backend-bytes``) fits everything, 0 means 2 GiB;
- a request that does not fit is refused with ``etcdserver: mvcc: database space exceeded``
  after this member's NOSPACE alarm was proposed and applied (errors of that proposal are
  ignored, as etcd ignores them); it is not proposed itself;
- the check costs a few attribute reads: the size is the backend's cached ``committed_size``.

The rest of the quota lives in the applier (``raftkv.server.applier``): while any NOSPACE alarm
is active every member refuses Put, Txn with a put and LeaseGrant at apply (the capped applier),
and a member that finds its own backend over the quota when it applies one of them answers
NOSPACE and raises its alarm (etcd's quota applier).
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Callable
from typing import NoReturn

from raftkv import errors
from raftkv.mvcc.backend import DEFAULT_QUOTA_BYTES, Backend
from raftkv.proto import rpc_pb2 as pb
from raftkv.server.proposals import Proposer
from raftkv.server.requests import RequestKind

log = logging.getLogger("raftkv.quota")

MAX_QUOTA_BYTES = 8 * 1024**3
"""etcd's ``MaxQuotaBytes``: a larger quota is accepted with a warning."""
LEASE_OVERHEAD = 64
"""etcd's ``leaseOverhead``: the charge of a LeaseGrant."""
KV_OVERHEAD = 256
"""etcd's ``kvOverhead``: the charge of a put on top of its key and value."""


def cost_put(req: pb.PutRequest) -> int:
    return KV_OVERHEAD + len(req.key) + len(req.value)


def cost_txn(req: pb.TxnRequest) -> int:
    """The larger of the two branches' costs; a branch costs the sum of its puts and nested
    txns (etcd's ``costTxn``).  0 for a txn without a put anywhere."""
    success = sum(_cost_op(op) for op in req.success)
    failure = sum(_cost_op(op) for op in req.failure)
    return max(success, failure)


def _cost_op(op: pb.RequestOp) -> int:
    which = op.WhichOneof("request")
    if which == "request_put":
        return cost_put(op.request_put)
    if which == "request_txn":
        return cost_txn(op.request_txn)
    return 0


def fits(backend: Backend, cost: int) -> bool:
    """etcd's ``backendQuota.Available``: a request of ``cost`` may be written (see the module
    contract)."""
    limit = backend.quota_limit
    return limit is None or cost == 0 or backend.committed_size + cost < limit


def no_space_alarm(member_id: int) -> bytes:
    """The body of an ALARM request activating ``member_id``'s NOSPACE alarm."""
    return pb.AlarmRequest(
        action=pb.AlarmRequest.ACTIVATE, memberID=member_id, alarm=pb.NOSPACE
    ).SerializeToString()


class QuotaAlarmer:
    """The quota check in front of a member's Put, Txn and LeaseGrant (etcd's
    ``quotaAlarmer``).  ``backend`` is looked up at each call (defragmentation, snapshots and
    repair replace the backend object)."""

    def __init__(
        self, *, member_id: int, backend: Callable[[], Backend], proposer: Proposer
    ) -> None:
        self.member_id = member_id
        self._backend = backend
        self._proposer = proposer

    def available(self, cost: int) -> bool:
        return fits(self._backend(), cost)

    async def refuse(self) -> NoReturn:
        """Propose this member's NOSPACE alarm and wait for it to apply (as etcd, on every
        refusal: an alarm already active is left as it is), then refuse the request with
        ``ERR_NO_SPACE``."""
        with contextlib.suppress(errors.EtcdError):
            await self._proposer.propose(RequestKind.ALARM, no_space_alarm(self.member_id))
        raise errors.ERR_NO_SPACE


def log_quota(quota_bytes: int, name: str) -> None:
    """etcd's lines about the configured quota (``NewBackendQuota``): disabled, the default,
    or the size, with a warning above ``MAX_QUOTA_BYTES``."""
    if quota_bytes < 0:
        log.info("disabled backend quota (quota-name=%s, quota-size-bytes=%d)", name, quota_bytes)
        return
    if quota_bytes == 0:
        log.info(
            "enabled backend quota with default value (quota-name=%s, quota-size-bytes=%d, "
            "quota-size=%s)",
            name,
            DEFAULT_QUOTA_BYTES,
            humanize_bytes(DEFAULT_QUOTA_BYTES),
        )
        return
    if quota_bytes > MAX_QUOTA_BYTES:
        log.warning(
            "quota exceeds the maximum value (quota-name=%s, quota-size-bytes=%d, "
            "quota-size=%s, quota-maximum-size-bytes=%d, quota-maximum-size=%s)",
            name,
            quota_bytes,
            humanize_bytes(quota_bytes),
            MAX_QUOTA_BYTES,
            humanize_bytes(MAX_QUOTA_BYTES),
        )
    log.info(
        "enabled backend quota (quota-name=%s, quota-size-bytes=%d, quota-size=%s)",
        name,
        quota_bytes,
        humanize_bytes(quota_bytes),
    )


def humanize_bytes(size: int) -> str:
    """go-humanize ``Bytes`` (SI units), as etcd prints quota sizes: ``8.6 GB``.  (The
    server may not import ``raftkv.client.output``, which has the same function.)"""
    if size < 10:
        return f"{size} B"
    units = ["B", "kB", "MB", "GB", "TB", "PB", "EB"]
    exp = math.floor(math.log(size) / math.log(1000))
    val = math.floor(size / (1000**exp) * 10 + 0.5) / 10
    return (f"{val:.1f} {units[exp]}") if val < 10 else f"{val:.0f} {units[exp]}"
