"""State hash checks on real 3-member clusters: a member whose stored state differs from the
quorum's — here a value rewritten in its LMDB file with a valid checksum, which no apply digest
can see — is named at start-up (it refuses to start), by the leader's periodic check, and at a
compaction."""

from __future__ import annotations

import os
import subprocess
import time
import urllib.request
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import lmdb

from raftkv.mvcc.backend import BUCKET_KEY, seal, unseal
from raftkv.mvcc.revision import decode_kv, encode_kv
from tests.cluster.harness import Cluster, require_etcdctl
from tests.prom_text import parse


def rewrite_latest_value(data_dir: Path, key: bytes, value: bytes) -> None:
    """Rewrite the newest stored version of ``key`` with a valid CRC (a logic-level change)."""
    env = lmdb.open(str(data_dir / "member" / "db"), max_dbs=16)
    try:
        db = env.open_db(BUCKET_KEY.encode())
        with env.begin(write=True) as txn:
            newest: tuple[bytes, bytes] | None = None
            for raw, stored in txn.cursor(db):
                kv = decode_kv(unseal(BUCKET_KEY, raw, stored))
                if kv.key == key:
                    newest = (raw, encode_kv(replace(kv, value=value)))
            assert newest is not None, f"{key!r} not stored"
            txn.put(newest[0], seal(newest[0], newest[1]), db=db)
    finally:
        env.close()


def fill(c: Cluster, n: int = 5) -> None:
    for k in range(n):
        c.etcdctl("put", f"k{k}", f"v{k}", endpoints=c.members[0].endpoint)


def wait_applied_everywhere(c: Cluster, timeout: float = 15) -> None:
    """Until every member serves the same revision (so all have applied the writes)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        revs = {c.hashkv(i)[1] for i in range(len(c.members)) if c.members[i].alive()}
        if len(revs) == 1:
            return
        time.sleep(0.1)
    raise AssertionError("members did not converge\n" + c.dump_logs())


def test_member_with_modified_backend_refuses_to_start(
    make_cluster: Callable[..., Cluster],
) -> None:
    c = make_cluster(3, extra_args=["--experimental-initial-corrupt-check"], start=False)
    c.start_all()
    c.wait_ready()
    fill(c)
    wait_applied_everywhere(c)
    bad_id = c.member_id(2)
    for i in (1, 2):
        assert c.stop(i) == 0
    # an untouched member restarts and passes the check
    c.start(1)
    c.wait_ready([1])
    assert "initial corruption check passed" in c.members[1].log_path.read_text()
    rewrite_latest_value(c.members[2].data_dir, b"k3", b"tampered")
    c.start(2)
    proc = c.members[2].proc
    assert proc is not None
    assert proc.wait(timeout=60) == 1
    log = c.members[2].log_path.read_text()
    assert f"{bad_id:016x} found data inconsistency with peers" in log, log[-3000:]
    assert "(keys differ)" in log
    # the healthy majority kept every write
    assert c.get_all(0, "k")["k3"] == "v3"
    # with only one healthy peer up (1 against 1), the starting member still refuses, as etcd's
    assert c.stop(1) == 0
    c.start(2)
    proc = c.members[2].proc
    assert proc is not None
    assert proc.wait(timeout=60) == 1
    log = c.members[2].log_path.read_text()
    assert "and no quorum holds this member's" in log, log[-3000:]


def test_periodic_check_names_the_modified_member(make_cluster: Callable[..., Cluster]) -> None:
    c = make_cluster(3, extra_args=["--experimental-corrupt-check-time=500ms"], start=False)
    metrics_urls = [f"http://127.0.0.1:{p}" for p in c.listen_metrics()]
    c.start_all()
    c.wait_ready()
    fill(c)
    wait_applied_everywhere(c)
    bad_id = c.member_id(1)
    watch = subprocess.Popen(
        [require_etcdctl(), "--endpoints", c.members[1].endpoint, "watch", "w"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "ETCDCTL_API": "3"},
    )
    try:
        rewrite_latest_value(c.members[1].data_dir, b"k1", b"flipped-at-rest")
        named, took = c.wait_corrupt_alarm(c.members[0].endpoint)
        print(f"periodic state hash check named the member after {took:.2f}s")
        assert named == {bad_id}
        logs = "".join(m.log_path.read_text() for m in c.members)
        assert f"member {bad_id:x} has" in logs and "(keys differ)" in logs
        res = c.etcdctl("get", "k1", endpoints=c.members[1].endpoint, check=False)
        assert res.returncode != 0 and "etcdserver: corrupt cluster" in res.stderr
        # The others still serve, once a healthy member leads (a named leader hands over).
        c.wait_until(lambda: c.leader_index() not in (None, 1), "a healthy member leads")
        c.etcdctl("put", "after", "ok", endpoints=c.members[0].endpoint)
        # An open watch on the fenced member ends with the same error.
        _out, err = watch.communicate(timeout=15)
    finally:
        watch.kill()
        watch.communicate()  # reap it and close its pipes, also when an assertion failed
    assert watch.returncode != 0 and "etcdserver: corrupt cluster" in err
    snap = c.etcdctl(
        "snapshot", "save", str(c.root / "s.db"), endpoints=c.members[1].endpoint, check=False
    )
    assert snap.returncode != 0 and "etcdserver: corrupt cluster" in snap.stderr
    # the leader that compared exports the detection (it may have handed leadership on since)
    exported = []
    for url in metrics_urls:
        with urllib.request.urlopen(f"{url}/metrics", timeout=5) as resp:
            text = resp.read().decode()
        _types, values = parse(text)
        if values["raftkv_state_hash_mismatch_total"] >= 1:
            assert values["raftkv_corruption_detected_total"] >= 1
            assert f'raftkv_state_hash_mismatch_index{{member_id="{bad_id:x}"}}' in values
            exported.append(url)
    assert exported


def test_compaction_check_names_the_modified_member(make_cluster: Callable[..., Cluster]) -> None:
    c = make_cluster(3)  # no periodic check: only the compaction compares
    c.wait_ready()
    fill(c, 8)
    wait_applied_everywhere(c)
    bad_id = c.member_id(2)
    rewrite_latest_value(c.members[2].data_dir, b"k7", b"changed")
    res = c.etcdctl("alarm", "list", endpoints=c.members[0].endpoint)
    assert res.stdout.strip() == ""
    c.etcdctl("compaction", "3", endpoints=c.members[0].endpoint)
    named, took = c.wait_corrupt_alarm(c.members[0].endpoint)
    print(f"compaction state hash check named the member after {took:.2f}s")
    assert named == {bad_id}
