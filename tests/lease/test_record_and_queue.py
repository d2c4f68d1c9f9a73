"""The persisted lease record codec and the lease queue."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from raftkv.lease import (
    RECORD_SIZE,
    LeaseCorruptError,
    LeaseQueue,
    MemoryLeaseStore,
    decode_lease,
    encode_lease,
)

INT64 = st.integers(min_value=-(1 << 63), max_value=(1 << 63) - 1)


@given(lease_id=INT64.filter(lambda v: v != 0), ttl=INT64, remaining=INT64)
def test_record_round_trip(lease_id: int, ttl: int, remaining: int) -> None:
    data = encode_lease(lease_id, ttl, remaining)
    assert len(data) == RECORD_SIZE
    lease = decode_lease(data)
    assert (lease.id, lease.ttl, lease.remaining_ttl) == (lease_id, ttl, remaining)
    assert lease.expiry is None
    assert lease.keys() == []


def test_record_layout_is_fixed() -> None:
    data = encode_lease(0x0102, 5, 3)
    assert data[:25] == bytes([1]) + (0x0102).to_bytes(8, "big") + (5).to_bytes(8, "big") + (
        3
    ).to_bytes(8, "big")


def test_encode_rejects_values_outside_int64() -> None:
    with pytest.raises(ValueError):
        encode_lease(1 << 63, 5, 0)
    with pytest.raises(ValueError):
        encode_lease(1, 5, -(1 << 63) - 1)


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda d: d[:-1], "bytes"),
        (lambda d: d + b"\x00", "bytes"),
        (lambda d: b"\x02" + d[1:], "version"),
        (lambda d: d[:5] + bytes([d[5] ^ 0x10]) + d[6:], "CRC"),
        (lambda d: d[:-1] + bytes([d[-1] ^ 1]), "CRC"),
        (lambda d: b"", "bytes"),
    ],
)
def test_decode_rejects_damaged_records(mutate: object, reason: str) -> None:
    data = encode_lease(77, 10, 4)
    assert callable(mutate)
    with pytest.raises(LeaseCorruptError, match=reason):
        decode_lease(mutate(data))


def test_decode_rejects_lease_id_zero() -> None:
    with pytest.raises(LeaseCorruptError, match="ID 0"):
        decode_lease(encode_lease(0, 10, 0))


def test_decode_accepts_memoryview() -> None:
    assert decode_lease(memoryview(encode_lease(9, 60, 30))).remaining_ttl == 30


@given(st.binary(max_size=64))
def test_decode_garbage_parses_or_raises_the_one_error(data: bytes) -> None:
    try:
        lease = decode_lease(data)
    except LeaseCorruptError:
        return
    assert encode_lease(lease.id, lease.ttl, lease.remaining_ttl) == data


def test_memory_store_orders_and_copies() -> None:
    store = MemoryLeaseStore(reverse=True)
    buf = bytearray(encode_lease(1, 5, 0))
    store.put_lease(1, bytes(buf))
    store.put_lease(3, encode_lease(3, 5, 0))
    buf[0] = 9
    assert [lease_id for lease_id, _ in store.iter_leases()] == [3, 1]
    assert decode_lease(dict(store.iter_leases())[1]).id == 1
    store.delete_lease(3)
    store.delete_lease(42)
    assert list(store.records) == [1]


def test_queue_orders_by_time_then_id() -> None:
    queue = LeaseQueue()
    queue.register(5, 2.0)
    queue.register(3, 2.0)
    queue.register(9, 1.0)
    assert len(queue) == 3
    assert queue.peek() == (1.0, 9)
    assert [queue.pop() for _ in range(3)] == [(1.0, 9), (2.0, 3), (2.0, 5)]
    assert queue.peek() is None
    with pytest.raises(IndexError):
        queue.pop()


def test_queue_reregister_moves_and_remove_drops() -> None:
    queue = LeaseQueue()
    queue.register(1, 10.0)
    queue.register(2, 20.0)
    queue.register(1, 30.0)
    assert queue.time_of(1) == 30.0
    assert queue.peek() == (20.0, 2)
    queue.remove(2)
    queue.remove(2)
    assert 2 not in queue and 1 in queue
    assert queue.pop() == (30.0, 1)
    assert len(queue) == 0
    queue.register(4, 1.0)
    queue.clear()
    assert queue.peek() is None


def test_queue_memory_stays_bounded_under_renewals() -> None:
    queue = LeaseQueue()
    for step in range(10_000):
        queue.register(step % 10, float(step))
    assert len(queue) == 10
    assert len(queue._heap) <= 2 * 10 + 64 + 1
    assert [queue.pop()[1] for _ in range(10)] == list(range(10))


@given(
    st.lists(
        st.tuples(st.sampled_from(["reg", "rm", "pop"]), st.integers(0, 20), st.integers(0, 50)),
        max_size=300,
    )
)
def test_queue_matches_a_sorted_model(ops: list[tuple[str, int, int]]) -> None:
    queue = LeaseQueue()
    model: dict[int, float] = {}
    for op, lease_id, time in ops:
        if op == "reg":
            queue.register(lease_id, float(time))
            model[lease_id] = float(time)
        elif op == "rm":
            queue.remove(lease_id)
            model.pop(lease_id, None)
        elif model:
            expect = min((t, i) for i, t in model.items())
            assert queue.pop() == expect
            del model[expect[1]]
        assert len(queue) == len(model)
        expect_top = min(((t, i) for i, t in model.items()), default=None)
        assert queue.peek() == expect_top


def test_queue_random_churn_pops_sorted() -> None:
    rng = random.Random(7)
    queue = LeaseQueue()
    model: dict[int, float] = {}
    for _ in range(5000):
        lease_id = rng.randrange(200)
        time = rng.random()
        queue.register(lease_id, time)
        model[lease_id] = time
    popped = [queue.pop() for _ in range(len(model))]
    assert popped == sorted((t, i) for i, t in model.items())
