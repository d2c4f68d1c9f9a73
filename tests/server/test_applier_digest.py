"""The applier's apply-digest history survives a restart and travels with a backend copy."""

from __future__ import annotations

from pathlib import Path

from raftkv.mvcc.backend import BackendConfig
from raftkv.raft.types import Entry
from raftkv.server.applier import Applier
from raftkv.server.bootstrap import MemberInfo
from tests.server.entries import put_entry

CONFIG = BackendConfig(map_size=64 << 20)


def _put(index: int) -> Entry:
    return put_entry(index, 2, b"k%d" % (index % 7), b"v%d" % index)


def _digests(applier: Applier, last: int) -> dict[int, bytes | None]:
    return {i: applier.digest.digest_at(i) for i in range(0, last + 1)}


def test_a_restarted_member_still_answers_for_the_indexes_before_its_restart(
    tmp_path: Path,
) -> None:
    applier = Applier.detached(str(tmp_path), CONFIG, min_lease_ttl=1)
    applier.write_initial_members([MemberInfo(1, "m1", ("http://127.0.0.1:2380",))])
    for first in range(2, 60, 9):
        applier.apply_entries([_put(i) for i in range(first, first + 9)])
    applier.force_commit()
    before = _digests(applier, 64)
    assert all(before[i] is not None for i in range(0, 65))
    applier.close()

    restarted = Applier.detached(str(tmp_path), CONFIG, min_lease_ttl=1)
    try:
        assert _digests(restarted, 64) == before
        assert restarted.digest.oldest_index() == 0
        restarted.apply_entries([_put(65)])
        assert restarted.digest.latest()[0] == 65
    finally:
        restarted.close()


def test_a_backend_copy_carries_the_history(tmp_path: Path) -> None:
    """What a snapshot or a repair installs: the sender's chain up to the head it ships."""
    applier = Applier.detached(str(tmp_path / "a"), CONFIG, min_lease_ttl=1)
    try:
        applier.write_initial_members([MemberInfo(1, "m1", ("http://127.0.0.1:2380",))])
        applier.apply_entries([_put(i) for i in range(2, 20)])
        copy = tmp_path / "b" / "member" / "db"
        copy.mkdir(parents=True)
        assert applier.copy_backend(str(copy / "data.mdb")) == 19
        sent = _digests(applier, 19)
    finally:
        applier.close()
    received = Applier.detached(str(tmp_path / "b"), CONFIG, min_lease_ttl=1)
    try:
        assert _digests(received, 19) == sent
    finally:
        received.close()
