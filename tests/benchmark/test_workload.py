"""Request generation of ``raftkv.benchmark.workload`` and load splitting in ``runner``."""

from __future__ import annotations

import pytest

from raftkv.benchmark.runner import LoadConfig, plan, split
from raftkv.benchmark.workload import RequestFactory, Workload, make_key, zigzag_varint


def test_zigzag_varint_matches_go_putvarint() -> None:
    assert zigzag_varint(0) == b"\x00"
    assert zigzag_varint(1) == b"\x02"
    assert zigzag_varint(-1) == b"\x01"
    assert zigzag_varint(63) == b"\x7e"
    assert zigzag_varint(64) == b"\x80\x01"
    assert zigzag_varint(300) == b"\xd8\x04"


def test_keys_are_fixed_size() -> None:
    assert make_key(64, 8) == b"\x80\x01" + bytes(6)
    assert make_key(1 << 40, 2) == zigzag_varint(1 << 40)[:2]
    assert len({make_key(i, 8) for i in range(1000)}) == 1000


def test_sequential_puts_wrap_the_key_space() -> None:
    f = RequestFactory(Workload("put", key_size=4, val_size=16, key_space_size=3, sequential=True))
    keys = [f.build(i).key for i in range(6)]
    assert keys == [make_key(i % 3, 4) for i in range(6)]
    assert all(len(f.build(i).value) == 16 for i in range(3))


def test_random_puts_stay_in_key_space_and_are_seeded() -> None:
    w = Workload("put", key_space_size=5)
    a = [RequestFactory(w, seed=7).build(i).key for i in range(50)]
    assert a == [RequestFactory(w, seed=7).build(i).key for i in range(50)]
    assert set(a) <= {make_key(i, 8) for i in range(5)}


def test_txn_put_puts_consecutive_keys() -> None:
    f = RequestFactory(Workload("txn-put", key_space_size=10, txn_ops=3))
    req = f.build(3)
    assert not req.compare and not req.failure
    assert [op.request_put.key for op in req.success] == [make_key(k, 8) for k in (9, 0, 1)]


def test_range_request() -> None:
    req = RequestFactory(
        Workload("range", range_key=b"a", range_end=b"b", serializable=True)
    ).build(0)
    assert (req.key, req.range_end, req.serializable) == (b"a", b"b", True)


@pytest.mark.parametrize(
    ("workload", "message"),
    [
        (Workload("put", key_space_size=0), "expected positive --key-space-size, got (0)"),
        (Workload("txn-put", txn_ops=0), "expected positive --txn-ops"),
        (Workload("txn-put", key_space_size=2, txn_ops=3), "no larger than --key-space-size"),
        (Workload("range"), "range needs a key"),
        (Workload("scan"), "unknown workload"),
    ],
)
def test_invalid_workloads(workload: Workload, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        workload.validate()


def test_split_and_plan_cover_everything() -> None:
    assert split(10, 3) == [4, 3, 3]
    assert split(2, 4) == [1, 1, 0, 0]
    cfg = LoadConfig(("a", "b", "c"), Workload("put"), total=1001, clients=100, conns=10, procs=3)
    plans = plan(cfg)
    assert len(plans) == 3
    assert sum(p.quota for p in plans) == 1001
    assert sum(p.clients for p in plans) == 100 and sum(p.channels for p in plans) == 10
    # request blocks and channel numbers are contiguous across processes
    assert [p.offset for p in plans] == [0, 334, 668]
    assert [p.channel_offset for p in plans] == [0, 4, 7]


def test_procs_are_bounded_by_clients_and_conns() -> None:
    w = Workload("put")
    assert LoadConfig(("a",), w, clients=1, conns=1, procs=4).effective_procs() == 1
    assert LoadConfig(("a",), w, clients=100, conns=2, procs=8).effective_procs() == 2
    assert LoadConfig(("a",), w, clients=100, conns=100, procs=3).effective_procs() == 3
    rated = plan(LoadConfig(("a",), w, total=100, clients=4, conns=4, procs=2, rate=50.0))
    assert [p.rate for p in rated] == [25.0, 25.0]
