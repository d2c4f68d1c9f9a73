"""The NOSPACE sequence side by side: a real etcd 3.4 and a 1-member raftkv, both with a 2 MiB
``--quota-backend-bytes``, are filled until etcdctl's put is refused, then driven through the
same commands (capped writes, reads, deletes, ``endpoint status``, compact, defrag, ``alarm
disarm``); etcdctl's output must agree after ``tests.compat.pair``'s normalisation (revisions
differ: the two engines fill up after different numbers of puts)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cluster.harness import Cluster, require_etcdctl
from tests.compat.pair import Out, Pair, Side
from tests.compat.servers import Target, require_etcd, start_etcd

QUOTA = 2 * 1024 * 1024
VALUE = "v" * 100_000
KEYS = 5
MAX_PUTS = 200


@pytest.fixture
def quota_pair(tmp_path: Path) -> Iterator[Pair]:
    require_etcd()
    require_etcdctl()
    flags = ["--quota-backend-bytes", str(QUOTA)]
    started: list[Target] = []
    try:
        started.append(start_etcd(tmp_path / "etcd", extra=flags))
        (tmp_path / "raftkv").mkdir()
        cluster = Cluster(tmp_path / "raftkv", 1, flags)
        raftkv = Target(
            "raftkv1",
            [m.endpoint for m in cluster.members],
            [m.log_path for m in cluster.members],
            cluster=cluster,
        )
        started.append(raftkv)
        cluster.start_all()
        yield Pair(started[0], raftkv)
    finally:
        for t in started:
            t.close()


def run(pair: Pair, side: Side, *args: str, stdin: str | None = None) -> Out:
    res = side.target.ctl(*args, stdin=stdin)
    out = Out(res.returncode, res.stdout.decode(), res.stderr.decode())
    norm = pair.norm(side, out)
    norm.stdout = re.sub(r"compacted revision \d+", "compacted revision N", norm.stdout)
    return norm


def same(pair: Pair, *args: str, stdin: str | None = None) -> Out:
    """Run on both; assert the normalised outputs and exit codes agree; etcd's output."""
    etcd, raftkv = (run(pair, side, *args, stdin=stdin) for side in pair.sides)
    assert (raftkv.rc, raftkv.stdout, raftkv.stderr) == (etcd.rc, etcd.stdout, etcd.stderr), (
        f"etcdctl {' '.join(args)}"
    )
    return etcd


def fill(pair: Pair, side: Side) -> Out:
    for i in range(MAX_PUTS):
        out = run(pair, side, "put", f"k{i % KEYS}", stdin=VALUE)
        if out.rc != 0:
            assert i >= 5, out.stderr
            return out
    raise AssertionError(f"{side.target.kind}: {MAX_PUTS} puts fit a quota of {QUOTA}")


def revision(side: Side) -> int:
    res = side.target.ctl("get", "k0", "-w", "json")
    return int(json.loads(res.stdout)["header"]["revision"])


def test_nospace_sequence_matches_etcd(quota_pair: Pair) -> None:
    pair = quota_pair
    refused = [fill(pair, side) for side in pair.sides]
    assert refused[0].stderr.splitlines()[-1] == "Error: etcdserver: mvcc: database space exceeded"
    assert (refused[1].rc, refused[1].stderr) == (refused[0].rc, refused[0].stderr)

    assert same(pair, "alarm", "list").stdout == "memberID:<MEMBER> alarm:NOSPACE \n"
    assert same(pair, "put", "small", "x").rc != 0
    assert same(pair, "lease", "grant", "60").rc != 0
    assert same(pair, "txn", stdin='value("k0") = "x"\n\nput k9 v\n\n\n').rc != 0
    same(pair, "get", "k1", "--print-value-only")
    same(pair, "del", f"k{KEYS - 1}")
    same(pair, "txn", stdin='value("k0") = "x"\n\ndel k3\n\nget k2\n\n')
    statuses = []
    for side in pair.sides:
        st = json.loads(side.target.ctl("endpoint", "status", "-w", "json").stdout)[0]
        statuses.append([pair.norm(side, Out(0, e, "")).stdout for e in st["Status"]["errors"]])
    assert statuses[1] == statuses[0] == ["memberID:<MEMBER> alarm:NOSPACE "]

    for side in pair.sides:
        rev = revision(side)
        assert run(pair, side, "compact", str(rev), "--physical").stdout == (
            "compacted revision N\n"
        )
    same(pair, "defrag")
    assert same(pair, "alarm", "disarm").stdout == "memberID:<MEMBER> alarm:NOSPACE \n"
    assert same(pair, "alarm", "list").stdout == ""
    assert same(pair, "put", "after", "x").stdout == "OK\n"
