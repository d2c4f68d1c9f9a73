"""Translation between etcd's protobuf messages and the MVCC store's records.

Owns: the one-to-one field mapping (the MVCC records mirror rpc.proto's names), in both
directions, including nested txns and the ``target_union`` of compares; and the mapping of MVCC
request errors to etcd's client errors.

Contract: pure functions; ``*_to_mvcc`` never fails on a message that passed
``raftkv.api.validate`` (enum values the MVCC layer does not know raise ``ValueError``).
"""

from __future__ import annotations

from raftkv import errors
from raftkv.mvcc import errors as mvcc_errors
from raftkv.mvcc import types as m
from raftkv.proto import kv_pb2
from raftkv.proto import rpc_pb2 as pb

# -- requests: protobuf -> MVCC --------------------------------------------------------------


def range_to_mvcc(r: pb.RangeRequest) -> m.RangeRequest:
    return m.RangeRequest(
        key=r.key,
        range_end=r.range_end,
        limit=r.limit,
        revision=r.revision,
        sort_order=m.SortOrder(r.sort_order),
        sort_target=m.SortTarget(r.sort_target),
        serializable=r.serializable,
        keys_only=r.keys_only,
        count_only=r.count_only,
        min_mod_revision=r.min_mod_revision,
        max_mod_revision=r.max_mod_revision,
        min_create_revision=r.min_create_revision,
        max_create_revision=r.max_create_revision,
    )


def put_to_mvcc(r: pb.PutRequest) -> m.PutRequest:
    return m.PutRequest(
        key=r.key,
        value=r.value,
        lease=r.lease,
        prev_kv=r.prev_kv,
        ignore_value=r.ignore_value,
        ignore_lease=r.ignore_lease,
    )


def delete_to_mvcc(r: pb.DeleteRangeRequest) -> m.DeleteRangeRequest:
    return m.DeleteRangeRequest(key=r.key, range_end=r.range_end, prev_kv=r.prev_kv)


def _compare_to_mvcc(c: pb.Compare) -> m.Compare:
    return m.Compare(
        key=c.key,
        target=m.CompareTarget(c.target),
        result=m.CompareResult(c.result),
        version=c.version,
        create_revision=c.create_revision,
        mod_revision=c.mod_revision,
        value=c.value,
        lease=c.lease,
        range_end=c.range_end,
    )


def _op_to_mvcc(op: pb.RequestOp) -> m.RequestOp:
    which = op.WhichOneof("request")
    if which == "request_range":
        return range_to_mvcc(op.request_range)
    if which == "request_put":
        return put_to_mvcc(op.request_put)
    if which == "request_delete_range":
        return delete_to_mvcc(op.request_delete_range)
    if which == "request_txn":
        return txn_to_mvcc(op.request_txn)
    raise ValueError("empty RequestOp")


def txn_to_mvcc(t: pb.TxnRequest) -> m.TxnRequest:
    return m.TxnRequest(
        compare=tuple(_compare_to_mvcc(c) for c in t.compare),
        success=tuple(_op_to_mvcc(op) for op in t.success),
        failure=tuple(_op_to_mvcc(op) for op in t.failure),
    )


# -- responses: MVCC -> protobuf -------------------------------------------------------------


def kv_to_pb(kv: m.KeyValue) -> kv_pb2.KeyValue:
    return kv_pb2.KeyValue(
        key=kv.key,
        create_revision=kv.create_revision,
        mod_revision=kv.mod_revision,
        version=kv.version,
        value=kv.value,
        lease=kv.lease,
    )


def event_to_pb(ev: m.Event) -> kv_pb2.Event:
    out = kv_pb2.Event(type=kv_pb2.Event.EventType.ValueType(int(ev.type)), kv=kv_to_pb(ev.kv))
    if ev.prev_kv is not None:
        out.prev_kv.CopyFrom(kv_to_pb(ev.prev_kv))
    return out


def range_to_pb(r: m.RangeResponse, header: pb.ResponseHeader) -> pb.RangeResponse:
    return pb.RangeResponse(
        header=header, kvs=[kv_to_pb(kv) for kv in r.kvs], more=r.more, count=r.count
    )


def put_to_pb(r: m.PutResponse, header: pb.ResponseHeader) -> pb.PutResponse:
    out = pb.PutResponse(header=header)
    if r.prev_kv is not None:
        out.prev_kv.CopyFrom(kv_to_pb(r.prev_kv))
    return out


def delete_to_pb(r: m.DeleteRangeResponse, header: pb.ResponseHeader) -> pb.DeleteRangeResponse:
    return pb.DeleteRangeResponse(
        header=header, deleted=r.deleted, prev_kvs=[kv_to_pb(kv) for kv in r.prev_kvs]
    )


def _response_op_to_pb(r: m.ResponseOp, header: pb.ResponseHeader) -> pb.ResponseOp:
    if isinstance(r, m.RangeResponse):
        return pb.ResponseOp(response_range=range_to_pb(r, header))
    if isinstance(r, m.PutResponse):
        return pb.ResponseOp(response_put=put_to_pb(r, header))
    if isinstance(r, m.DeleteRangeResponse):
        return pb.ResponseOp(response_delete_range=delete_to_pb(r, header))
    return pb.ResponseOp(response_txn=txn_to_pb(r, header))


def txn_to_pb(r: m.TxnResponse, header: pb.ResponseHeader) -> pb.TxnResponse:
    # etcd's nested responses carry a header with only the revision set.
    inner = pb.ResponseHeader(revision=header.revision)
    return pb.TxnResponse(
        header=header,
        succeeded=r.succeeded,
        responses=[_response_op_to_pb(op, inner) for op in r.responses],
    )


def response_to_pb(r: m.WriteResponse, header: pb.ResponseHeader) -> object:
    if isinstance(r, m.PutResponse):
        return put_to_pb(r, header)
    if isinstance(r, m.DeleteRangeResponse):
        return delete_to_pb(r, header)
    if isinstance(r, m.TxnResponse):
        return txn_to_pb(r, header)
    if isinstance(r, m.RangeResponse):
        return range_to_pb(r, header)
    return pb.CompactionResponse(header=header)


# -- errors ------------------------------------------------------------------------------------

_ERRORS: dict[type[mvcc_errors.MVCCRequestError], type[errors.EtcdError]] = {
    mvcc_errors.CompactedError: errors.ERR_COMPACTED,
    mvcc_errors.DuplicateKeyError: errors.ERR_DUPLICATE_KEY,
    mvcc_errors.FutureRevError: errors.ERR_FUTURE_REV,
    mvcc_errors.KeyNotFoundError: errors.ERR_KEY_NOT_FOUND,
    mvcc_errors.LeaseNotFoundError: errors.ERR_LEASE_NOT_FOUND,
}


def error_to_etcd(exc: mvcc_errors.MVCCRequestError) -> errors.EtcdError:
    return _ERRORS[type(exc)]()
