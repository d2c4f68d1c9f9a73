"""Auto-compaction decisions (etcd's periodic and revision modes)."""

from __future__ import annotations

import pytest

from raftkv.server.compactor import AutoCompactor, parse_retention


@pytest.mark.parametrize(
    ("mode", "text", "expected"),
    [
        ("periodic", "1", 3600.0),
        ("periodic", "0.5", 1800.0),
        ("periodic", "30m", 1800.0),
        ("periodic", "1h30m", 5400.0),
        ("periodic", "90s", 90.0),
        ("periodic", "0", 0.0),
        ("revision", "1000", 1000.0),
    ],
)
def test_parse_retention(mode: str, text: str, expected: float) -> None:
    assert parse_retention(mode, text) == expected


@pytest.mark.parametrize(
    ("mode", "text"), [("periodic", "soon"), ("revision", "1h"), ("periodic", "-1")]
)
def test_parse_retention_refuses_garbage(mode: str, text: str) -> None:
    with pytest.raises(ValueError):
        parse_retention(mode, text)


def test_periodic_compacts_to_the_revision_retention_ago() -> None:
    c = AutoCompactor("periodic", 100.0)  # samples every 10 s
    decisions = []
    for t in range(0, 131, 10):
        decisions.append(c.decide(float(t), current_rev=1000 + t, compacted_rev=0))
    # nothing is old enough before t=100; at t=100 the sample taken at t=0 (rev 1000) is
    assert decisions[:10] == [None] * 10
    assert decisions[10] == 1000
    assert decisions[11] == 1010
    # a check before the interval elapsed decides nothing
    assert c.decide(121.0, 2000, 0) is None


def test_revision_mode_keeps_the_last_n_revisions() -> None:
    c = AutoCompactor("revision", 100.0)
    assert c.decide(0.0, current_rev=50, compacted_rev=0) is None
    assert c.decide(300.0, current_rev=500, compacted_rev=0) == 400
    assert c.decide(301.0, current_rev=900, compacted_rev=400) is None
    assert c.decide(600.0, current_rev=900, compacted_rev=400) == 800


def test_disabled_by_zero() -> None:
    c = AutoCompactor("periodic", 0.0)
    assert not c.enabled
    assert c.decide(1e9, 10_000, 0) is None
