"""etcdctl 3.4 watch, lease, compaction, endpoint, member and alarm commands against real etcd
3.4 and a 1-member raftkv, side by side (see ``tests.compat.pair`` for what is normalised)."""

from __future__ import annotations

import json

from tests.compat.pair import Pair


def test_hashkv_agrees_with_etcd(pair: Pair) -> None:
    """The same writes at the same revisions hash to etcd's HashKV value.  First in the module:
    the hash covers the whole history, which must not hold lease IDs (they differ)."""
    base = pair.sync_revisions()
    for i in range(5):
        pair.must(("put", f"hk/{i}", "v" * i))
    pair.must(("del", "hk/3"))
    hashes = []
    for side in pair.sides:
        out = side.target.ctl("endpoint", "hashkv", "-w", "json", f"--rev={base + 6}")
        data = json.loads(out.stdout)[0]["HashKV"]
        hashes.append((data["hash"], data["compact_revision"]))
    assert hashes[1] == hashes[0]
    assert hashes[0][0] != 0


def test_watch_history_prefix_prev_kv(pair: Pair) -> None:
    base = pair.sync_revisions()
    writes = [("put", "w/a", "1"), ("put", "w/b", "2"), ("put", "w/a", "3"), ("del", "w/b"),
              ("put", "wx", "outside"), ("del", "w/", "--prefix")]  # fmt: skip
    for w in writes:
        pair.must(w)
    start = str(base + 1)
    out = [ln for ln in pair.watch(("w/a", f"--rev={start}"), []).stdout.splitlines() if ln]
    assert out == ["PUT", "w/a", "1", "PUT", "w/a", "3", "DELETE", "w/a"]
    pair.watch(("w/", "--prefix", f"--rev={start}"), [])
    pair.watch(("w/", "--prefix", f"--rev={start}", "--prev-kv"), [])
    pair.watch(("w/", "--prefix", f"--rev={start}", "--prev-kv", "-w", "json"), [])
    pair.watch(("w/a", "w/c", f"--rev={start}", "-w", "fields"), [])
    pair.watch(("w/b", "--rev=" + str(base + 3)), [])
    pair.verify()


def test_watch_live_events(pair: Pair) -> None:
    base = pair.sync_revisions()
    writes = [("put", "lw/a", "1"), ("put", "lw/b", "2"), ("put", "lw/a", "3"), ("del", "lw/a")]
    # the watch starts at the next revision, so events made before it connects are not lost
    out = pair.watch(("lw/", "--prefix", "--prev-kv", f"--rev={base + 1}"), writes)
    assert [ln for ln in out.stdout.splitlines() if ln][:3] == ["PUT", "lw/a", "1"]
    pair.sync_revisions()
    pair.watch(("lw/a", "-w", "json"), [])
    pair.verify()


def test_watch_compacted_revision(pair: Pair) -> None:
    base = pair.sync_revisions()
    for i in range(3):
        pair.must(("put", "cw/k", str(i)))
    pair.must(("compaction", str(base + 2)))
    pair.same("watch", "cw/k", f"--rev={base + 1}")
    pair.verify()


def test_lease_commands(pair: Pair) -> None:
    pair.sync_revisions()
    first = pair.grant(300)
    second = pair.grant(120)
    pair.must(("put", "ls/a", "1", f"--lease={{L{first}}}"))
    pair.must(("put", "ls/b", "2", f"--lease={{L{first}}}"))
    # etcd prints a lease's keys in Go map order, so the keys are compared as a set
    on_etcd, on_raftkv = pair.both(("lease", "timetolive", f"{{L{first}}}", "--keys"), None)

    def attached(text: str) -> list[str]:
        return sorted(text.split("attached keys([", 1)[1].split("])")[0].split())

    assert attached(on_etcd.stdout) == attached(on_raftkv.stdout) == ["ls/a", "ls/b"]
    pair.same("lease", "timetolive", f"{{L{first}}}")
    pair.same("lease", "timetolive", f"{{L{second}}}", "--keys", "-w", "json")
    pair.same("lease", "timetolive", f"{{L{second}}}", "-w", "fields")
    pair.same("lease", "list", sort_lines=True)
    pair.same("lease", "list", "-w", "json")
    out = pair.same("lease", "keep-alive", "--once", f"{{L{second}}}").stdout
    assert "keepalived with TTL(120)" in out
    pair.same("lease", "keep-alive", "--once", f"{{L{second}}}", "-w", "json")
    assert pair.same("lease", "revoke", f"{{L{first}}}").stdout.strip().endswith("revoked")
    assert pair.same("get", "ls/", "--prefix").stdout == ""
    out = pair.same("lease", "timetolive", f"{{L{first}}}").stdout
    assert out.strip().endswith("already expired")
    pair.same("lease", "timetolive", f"{{L{first}}}", "-w", "json")
    pair.same("lease", "revoke", f"{{L{first}}}")
    pair.same("lease", "keep-alive", "--once", f"{{L{first}}}")
    pair.same("lease", "timetolive", "1234abcd")
    pair.same("lease", "revoke", f"{{L{second}}}")
    pair.same("lease", "list")
    short = pair.grant(0)  # etcd raises a TTL below the minimum to it (2 s here)
    pair.same("lease", "revoke", f"{{L{short}}}")
    pair.verify()


def test_compaction(pair: Pair) -> None:
    base = pair.sync_revisions()
    for i in range(5):
        pair.must(("put", "cp/k", str(i)))
    assert pair.same("compaction", str(base + 2)).stdout.strip() == f"compacted revision {base + 2}"
    pair.same("get", "cp/k", f"--rev={base + 1}")
    pair.same("get", "cp/k", f"--rev={base + 2}", "-w", "json")
    pair.same("compaction", "--physical", str(base + 4))
    pair.same("get", "cp/k", f"--rev={base + 3}")
    pair.same("get", "cp/k", f"--rev={base + 4}", "--print-value-only")
    pair.same("compaction", str(base + 4))
    pair.same("compaction", str(base + 99))
    pair.same("endpoint", "hashkv", "-w", "json")
    pair.verify()


def test_endpoint_member_alarm(pair: Pair) -> None:
    pair.sync_revisions()
    for fmt in ("simple", "json", "table", "fields"):
        pair.same("endpoint", "status", "-w", fmt)
        pair.same("endpoint", "hashkv", "-w", fmt)
        pair.same("member", "list", "-w", fmt)
    pair.same("endpoint", "health", "-w", "json")
    pair.same("endpoint", "health", "-w", "table")
    # etcdctl 3.4 prints the plain health line on stderr
    out = pair.same("endpoint", "health")
    assert "is healthy: successfully committed proposal" in out.stderr
    status = json.loads(pair.etcd.target.ctl("endpoint", "status", "-w", "json").stdout)
    assert status[0]["Status"]["leader"] == status[0]["Status"]["header"]["member_id"]
    assert pair.same("alarm", "list").stdout == ""
    pair.same("alarm", "list", "-w", "json")
    pair.same("alarm", "disarm")
    pair.same("endpoint", "status", "--cluster", "-w", "json")
    pair.same("member", "list", "--hex", "-w", "json")
    pair.verify()
