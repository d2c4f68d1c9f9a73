"""The Watch service's compaction rule, etcd's ``startRev < compactRev``: a watch starting
below the compacted revision is canceled, one starting exactly at it (or later, or at 0,
"from now") is served.  The store side of the rule is in tests/mvcc/test_watchable.py; the
whole path, with etcdctl against a member and etcd, in tests/ctl/test_serve_errors.py."""

from __future__ import annotations

import pytest

from raftkv.api.watch import compacted_start


@pytest.mark.parametrize(
    ("start", "compacted", "canceled"),
    [
        (0, 0, False),
        (0, 7, False),  # from the next revision
        (1, 0, False),  # nothing compacted yet
        (6, 7, True),
        (1, 7, True),
        (7, 7, False),  # exactly the compacted revision: served
        (8, 7, False),
    ],
)
def test_only_a_start_below_the_compacted_revision_is_canceled(
    start: int, compacted: int, canceled: bool
) -> None:
    assert compacted_start(start, compacted) is canceled
