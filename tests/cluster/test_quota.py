"""The backend quota and the NOSPACE alarm on real members driven by real etcdctl, as etcd 3.5:
a member whose backend reaches ``--quota-backend-bytes`` refuses writes with ``etcdserver:
mvcc: database space exceeded`` and raises NOSPACE; the cluster keeps serving reads, deletes
and compaction; ``compact`` + ``defrag`` + ``alarm disarm`` make writes work again, and the
members' state stays identical throughout."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from tests.cluster.harness import Cluster

NO_SPACE = "etcdserver: mvcc: database space exceeded"
QUOTA = 2 * 1024 * 1024
VALUE = "v" * 100_000  # ~20 of them fill the quota
KEYS = 5  # the fill overwrites these keys, so compaction frees all but their last values
MAX_PUTS = 200


def fill_until_refused(c: Cluster, endpoint: str) -> tuple[int, str]:
    """``etcdctl put`` large values until one is refused; (puts accepted, its stderr)."""
    for i in range(MAX_PUTS):
        res = c.etcdctl("put", f"k{i % KEYS}", endpoints=endpoint, stdin=VALUE, check=False)
        if res.returncode != 0:
            return i, res.stderr
    raise AssertionError(f"{MAX_PUTS} puts of {len(VALUE)} bytes all fit a quota of {QUOTA}")


def alarm_lines(c: Cluster) -> list[str]:
    return c.etcdctl("alarm", "list").stdout.splitlines()


def revision(c: Cluster) -> int:
    out = json.loads(c.etcdctl("get", "k0", "-w", "json").stdout)
    return int(out["header"]["revision"])


def db_size(c: Cluster, i: int) -> int:
    st = c.status(i)
    assert st is not None
    size = st["dbSize"]
    assert isinstance(size, int)
    return size


@pytest.mark.parametrize("size", [1, 3])
def test_quota_nospace_alarm_and_recovery(make_cluster: Callable[..., Cluster], size: int) -> None:
    c = make_cluster(size, extra_args=["--quota-backend-bytes", str(QUOTA)])
    ids = {c.member_id(i) for i in range(size)}
    first = c.members[0].endpoint

    accepted, stderr = fill_until_refused(c, first)
    assert accepted >= 5, stderr  # the quota, not something else, refused it
    assert stderr.strip().splitlines()[-1] == f"Error: {NO_SPACE}"

    # the alarm names a member (the one whose backend is over quota; any of them may be)
    lines = alarm_lines(c)
    assert lines, c.dump_logs()
    alarmed = set()
    for line in lines:
        member, alarm = line.split(" ", 1)
        assert member.startswith("memberID:") and alarm == "alarm:NOSPACE ", lines
        alarmed.add(int(member.removeprefix("memberID:")))
    assert alarmed <= ids
    if size == 1:
        assert lines == [f"memberID:{c.member_id(0)} alarm:NOSPACE "]

    # the whole cluster is capped: every member refuses writes of any size, and lease grants
    for m in c.members:
        res = c.etcdctl("put", "small", "x", endpoints=m.endpoint, check=False)
        assert res.returncode != 0 and NO_SPACE in res.stderr, res.stderr
    res = c.etcdctl("lease", "grant", "60", check=False)
    assert res.returncode != 0 and NO_SPACE in res.stderr, res.stderr
    txn_put = 'value("k0") = "nope"\n\nput k9 v\n\n\n'
    res = c.etcdctl("txn", stdin=txn_put, check=False)
    assert res.returncode != 0 and NO_SPACE in res.stderr, res.stderr
    # reads, deletes and a txn without puts still work
    assert c.etcdctl("get", "k1", "--print-value-only").stdout.strip() == VALUE
    assert c.etcdctl("del", f"k{KEYS - 1}").stdout.strip() == "1"
    txn_del = 'value("k0") = "nope"\n\ndel k3\n\nget k2\n\n'
    assert c.etcdctl("txn", stdin=txn_del).stdout.splitlines()[:4] == ["FAILURE", "", "k2", VALUE]

    # endpoint status reports the alarms in ERRORS, on every member (each member that found
    # its own backend over the quota has raised its alarm by now: the list may have grown)
    lines = alarm_lines(c)
    assert {line.split(" ")[0] for line in lines} <= {f"memberID:{i}" for i in ids}

    def status_lists_alarms() -> bool:
        return all((c.status(i) or {}).get("errors") == lines for i in range(size))

    c.wait_until(status_lists_alarms, f"every member's status to list {lines}")
    simple = c.etcdctl("endpoint", "status", endpoints=first).stdout
    assert simple.rstrip("\n").endswith(", " + ", ".join(lines)), simple  # the ERRORS column

    # compact, defragment, disarm: writes work again
    rev = revision(c)
    out = c.etcdctl("compact", str(rev), "--physical").stdout.strip()
    assert out == f"compacted revision {rev}"
    full = {i: db_size(c, i) for i in range(size)}

    def defragmented() -> bool:
        # each member compacts in the background; defragment until every file has shrunk
        c.etcdctl("defrag")
        return all(db_size(c, i) < QUOTA // 2 for i in range(size))

    c.wait_until(defragmented, "defragmentation to reclaim the compacted space")
    assert all(db_size(c, i) < full[i] for i in range(size))
    disarmed = c.etcdctl("alarm", "disarm").stdout.splitlines()
    assert sorted(disarmed) == sorted(lines)
    assert alarm_lines(c) == []
    for m in c.members:
        assert c.etcdctl("put", "after", m.name, endpoints=m.endpoint).stdout.strip() == "OK"
    assert c.etcdctl("get", "after", "--print-value-only").stdout.strip() == c.members[-1].name
    assert c.etcdctl("lease", "grant", "60").returncode == 0
    for i in range(size):
        st = c.status(i)
        assert st is not None and not st.get("errors"), st

    # the members' state is identical
    rev = revision(c)
    hashes = {c.hashkv(i, rev) for i in range(size)}
    assert len(hashes) == 1, hashes


def test_negative_quota_disables_it(make_cluster: Callable[..., Cluster]) -> None:
    """``--quota-backend-bytes -1``: no soft quota; puts past what 2 MiB would allow work."""
    c = make_cluster(1, extra_args=["--quota-backend-bytes", "-1"])
    for i in range(2 * QUOTA // len(VALUE)):
        c.etcdctl("put", f"k{i}", stdin=VALUE)
    assert alarm_lines(c) == []
    assert "disabled backend quota" in c.members[0].log_path.read_text()


def test_quota_above_eight_gib_warns(make_cluster: Callable[..., Cluster]) -> None:
    c = make_cluster(1, extra_args=["--quota-backend-bytes", str(9 * 1024**3)])
    c.etcdctl("put", "k", "v")
    log = c.members[0].log_path.read_text()
    assert "quota exceeds the maximum value" in log
    assert "quota-size-bytes=9663676416" in log and "quota-maximum-size=8.6 GB" in log


def test_a_member_over_its_own_quota_at_apply_caps_the_cluster(
    make_cluster: Callable[..., Cluster],
) -> None:
    """The quota is per member: writes sent to members with room pass their check, but the
    member with the small quota finds its backend over it when it applies them, raises its own
    NOSPACE alarm (etcd's quota applier), and that alarm caps every member."""
    c = make_cluster(3, extra_args=["--quota-backend-bytes", str(64 * QUOTA)], start=False)
    c.members[2].extra_args = ["--quota-backend-bytes", str(QUOTA)]
    c.start_all()
    small = c.member_id(2)
    roomy = ",".join(m.endpoint for m in c.members[:2])
    accepted, stderr = fill_until_refused(c, roomy)
    assert accepted >= 5 and stderr.strip().splitlines()[-1] == f"Error: {NO_SPACE}"
    assert alarm_lines(c) == [f"memberID:{small} alarm:NOSPACE "]
    assert "message exceeded backend quota; raising alarm" in c.members[2].log_path.read_text()
    res = c.etcdctl("put", "small", "x", endpoints=c.members[0].endpoint, check=False)
    assert res.returncode != 0 and NO_SPACE in res.stderr, res.stderr
    rev = revision(c)
    assert len({c.hashkv(i, rev) for i in range(3)}) == 1
