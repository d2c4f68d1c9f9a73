"""Request errors met while applying a committed entry are answers, never member failures: the
proposer gets etcd's error and every member moves on to the next entry (real Applier, real
LMDB in a temporary dir)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from raftkv import errors, failpoints
from raftkv.mvcc.backend import BackendConfig
from raftkv.mvcc.errors import BackendCorruptionError
from raftkv.proto import rpc_pb2 as pb
from raftkv.raft.types import Entry
from raftkv.server.applier import Applier
from raftkv.server.bootstrap import MemberInfo
from raftkv.server.requests import RequestKind, encode_request


def test_a_duplicate_key_txn_that_reached_apply_is_answered_with_etcds_error(
    tmp_path: Path,
) -> None:
    # The API refuses such a txn before proposing it; one proposed by another path (an older
    # member, a bug) must still be answered, not stop the member.
    async def main() -> None:
        applier = Applier.detached(str(tmp_path), BackendConfig(map_size=64 << 20), min_lease_ttl=1)
        applier.write_initial_members([MemberInfo(1, "m1", ("http://127.0.0.1:2380",))])
        put = pb.RequestOp(request_put=pb.PutRequest(key=b"k", value=b"v"))
        txn = pb.TxnRequest(success=[put, put])
        after = pb.PutRequest(key=b"next", value=b"v")
        loop = asyncio.get_running_loop()
        answers = {i: loop.create_future() for i in (2, 3)}
        applier.waiters.update(answers)
        try:
            applier.apply_entries(
                [
                    Entry(1, 2, data=encode_request(RequestKind.TXN, 2, txn.SerializeToString())),
                    Entry(1, 3, data=encode_request(RequestKind.PUT, 3, after.SerializeToString())),
                ]
            )
            refused = answers[2].exception()
            assert isinstance(refused, errors.ERR_DUPLICATE_KEY)
            assert refused.message == "etcdserver: duplicate key given in txn request"
            assert answers[3].result().header.revision == 2  # the txn wrote nothing
            assert applier.applied_index() == 3
        finally:
            applier.close()

    asyncio.run(main())


def test_a_value_corrupted_at_rest_is_never_copied_on(tmp_path: Path) -> None:
    """A backend copy (a follower's snapshot, a defragmentation) checks every value's CRC
    first: a value whose bit flipped at rest raises instead of spreading to another member."""
    applier = Applier.detached(str(tmp_path), BackendConfig(map_size=64 << 20), min_lease_ttl=1)
    try:
        applier.write_initial_members([MemberInfo(1, "m1", ("http://127.0.0.1:2380",))])
        put = pb.PutRequest(key=b"k", value=b"v")
        entry = Entry(1, 2, data=encode_request(RequestKind.PUT, 2, put.SerializeToString()))
        copy = str(tmp_path / "copy.mdb")
        failpoints.configure("backendBitFlip=1*on")
        try:
            applier.apply_entries([entry])
            applier.force_commit()
        finally:
            failpoints.configure(None)
        with pytest.raises(BackendCorruptionError, match="bucket 'key'"):
            applier.copy_backend(copy)
        with pytest.raises(BackendCorruptionError):
            applier.defragment()
    finally:
        applier.close()


def test_a_clean_backend_is_copied_with_its_consistent_index(tmp_path: Path) -> None:
    applier = Applier.detached(str(tmp_path), BackendConfig(map_size=64 << 20), min_lease_ttl=1)
    try:
        applier.write_initial_members([MemberInfo(1, "m1", ("http://127.0.0.1:2380",))])
        put = pb.PutRequest(key=b"k", value=b"v")
        applier.apply_entries(
            [Entry(1, 2, data=encode_request(RequestKind.PUT, 2, put.SerializeToString()))]
        )
        applier.force_commit()
        assert applier.copy_backend(str(tmp_path / "copy.mdb")) == 2
    finally:
        applier.close()


def test_a_backend_that_cannot_be_loaded_is_closed_again(tmp_path: Path) -> None:
    """Opening an applier over a value corrupted at rest fails naming it, and leaves no LMDB
    environment open behind: the same process can open the data dir again (a restart of a
    member in the simulator, ``raftkv check data``)."""
    config = BackendConfig(map_size=64 << 20)
    applier = Applier.detached(str(tmp_path), config, min_lease_ttl=1)
    try:
        applier.write_initial_members([MemberInfo(1, "m1", ("http://127.0.0.1:2380",))])
        grant = pb.LeaseGrantRequest(ID=7, TTL=60)
        put = pb.PutRequest(key=b"k", value=b"v", lease=7)
        entries = [
            Entry(1, 2, data=encode_request(RequestKind.LEASE_GRANT, 2, grant.SerializeToString())),
            Entry(1, 3, data=encode_request(RequestKind.PUT, 3, put.SerializeToString())),
        ]
        applier.apply_entries(entries[:1])
        failpoints.configure("backendBitFlip=1*on")
        try:
            applier.apply_entries(entries[1:])
            applier.force_commit()
        finally:
            failpoints.configure(None)
    finally:
        applier.close()
    for _attempt in range(2):  # the second would meet the first's environment, if left open
        with pytest.raises(BackendCorruptionError, match="bucket 'key'"):
            Applier.detached(str(tmp_path), config, min_lease_ttl=1)
