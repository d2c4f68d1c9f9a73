"""WriteBatch.put_plain (the applier's path for puts without prev_kv/ignore_*) against
WriteBatch.put: the same bytes stored, revisions, versions, errors and events; and commit
listeners that say they want nothing are not handed events."""

from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from raftkv.mvcc import KVStore, LeaseNotFoundError, PutRequest, RangeRequest
from raftkv.mvcc.backend import BUCKET_KEY, Backend, BackendConfig
from raftkv.mvcc.types import DeleteRangeRequest, Event, EventType, KeyValue
from tests.mvcc.conftest import SMALL_MAP

KEYS = [b"a", b"b", b"c"]
LEASES = {0, 7}  # lease 9 does not exist

# (op, key index, value, lease): put, delete, or end the batch; "reopen" rebuilds the index.
Op = tuple[str, int, bytes, int]
ops_strategy = st.lists(
    st.tuples(
        st.sampled_from(["put", "put", "put", "delete", "commit", "reopen"]),
        st.integers(0, len(KEYS) - 1),
        st.binary(max_size=3),
        st.sampled_from([0, 0, 7, 9]),
    ),
    max_size=25,
)


def _run(root: Path, ops: list[Op], plain: bool) -> tuple[list[object], list[object]]:
    """Apply ``ops``; returns (final state and events heard, per-op outcome)."""
    results: list[object] = []
    heard: list[object] = []

    def opened() -> KVStore:
        backend = Backend(root, BackendConfig(map_size=SMALL_MAP, sync_mode="nosync"))
        s = KVStore(backend, lease_exists=lambda lid: lid in LEASES)
        s.add_commit_listener(heard.append)
        return s

    s = opened()
    index = 1
    pending = list(ops)
    while pending:
        op = "commit"
        with s.write_batch() as batch:
            while pending:
                op, ki, value, lease = pending.pop(0)
                if op in ("commit", "reopen"):
                    break
                index += 1
                assert batch.begin_entry(index, 1)
                mark = batch.change_count()
                try:
                    if op == "delete":
                        rev = batch.delete_range(DeleteRangeRequest(KEYS[ki])).revision
                    elif plain:
                        rev, created, version = batch.put_plain(KEYS[ki], value, lease)
                        ((_k, c, _m, v, _v, _l),) = batch.changes_since(mark)
                        assert (created, version) == (c, v)
                    else:
                        rev = batch.put(PutRequest(KEYS[ki], value, lease)).revision
                except LeaseNotFoundError:
                    results.append("lease not found")
                    continue
                assert rev == batch.revision
                results.append(batch.changes_since(mark))
        if op == "reopen":
            s.backend.close()
            s = opened()
    with s.backend.read() as tx:
        stored = list(tx.iterate(BUCKET_KEY))
    kvs = s.range(RangeRequest(b"\x00", b"\x00")).kvs
    state = [stored, kvs, s.current_revision, s.consistent_index, heard]
    s.backend.close()
    return state, results


@settings(max_examples=40, deadline=None)
@given(ops=ops_strategy)
def test_put_plain_matches_put(ops: list[Op]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        plain = _run(Path(tmp) / "plain", ops, plain=True)
        full = _run(Path(tmp) / "full", ops, plain=False)
    assert plain == full


def test_put_plain_returns_revision_create_and_version(store: KVStore) -> None:
    with store.write_batch() as b:
        assert b.begin_entry(2, 1)
        assert b.put_plain(b"k", b"1", 0) == (2, 2, 1)
        assert b.begin_entry(3, 1)
        assert b.put_plain(b"k", b"2", 0) == (3, 2, 2)
        assert b.begin_entry(4, 1)
        b.delete_range(DeleteRangeRequest(b"k"))
        assert b.begin_entry(5, 1)
        assert b.put_plain(b"k", b"3", 0) == (5, 5, 1)
    assert store.range(RangeRequest(b"k")).kvs == (KeyValue(b"k", 5, 5, 1, b"3"),)


def test_listener_that_wants_nothing_is_not_called(store: KVStore) -> None:
    wanted = False
    quiet: list[object] = []
    heard: list[list[tuple[int, list[Event]]]] = []
    store.add_commit_listener(quiet.append, lambda: wanted)
    store.add_commit_listener(heard.append)
    with store.write_batch() as b:
        assert b.begin_entry(2, 1)
        b.put_plain(b"k", b"v", 0)
    assert quiet == [] and len(heard) == 1
    wanted = True
    with store.write_batch() as b:
        assert b.begin_entry(3, 1)
        b.put_plain(b"k", b"w", 0)
        assert b.begin_entry(4, 1)
        b.delete_range(DeleteRangeRequest(b"k"))
    assert (
        quiet
        == heard[1:]
        == [
            [
                (3, [Event(EventType.PUT, KeyValue(b"k", 2, 3, 2, b"w"))]),
                (4, [Event(EventType.DELETE, KeyValue(b"k", mod_revision=4))]),
            ]
        ]
    )
