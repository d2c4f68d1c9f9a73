"""The PyPI ``etcd3`` client (0.12) against real etcd 3.4, a 1-member and a 3-member raftkv.

Every scenario runs in a child process (``etcd3_scenarios.py``: etcd3's descriptors need the
pure-Python protobuf and clash with raftkv's); the assertions here state etcd's behaviour, and
the ``etcd`` parameter proves they do.  With three members the scenarios write through one
member and read, watch or lock through another.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from tests.compat.servers import Target, require_etcd, run_etcd3, start_etcd, start_raftkv

NOT_FOUND_LEASE = {
    "type": "RpcError",
    "code": "NOT_FOUND",
    "details": "etcdserver: requested lease not found",
}
COMPACTED = {
    "type": "RpcError",
    "code": "OUT_OF_RANGE",
    "details": "etcdserver: mvcc: required revision has been compacted",
}


@pytest.fixture(scope="module", params=["etcd", "raftkv1", "raftkv3"])
def target(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Target]:
    kind = request.param
    root = tmp_path_factory.mktemp(kind)
    if kind == "etcd":
        require_etcd()
        t = start_etcd(root)
    else:
        t = start_raftkv(root, int(kind[-1]))
    try:
        yield t
    finally:
        t.close()


def scenario(target: Target, name: str) -> dict[str, Any]:
    try:
        out: dict[str, Any] = json.loads(run_etcd3(name, target.endpoints))
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{target.log_tail(20)}") from None
    return out


def test_kv(target: Target) -> None:
    r = scenario(target, "kv")
    assert r["put_prev"] == "" and r["put_prev2"] == "x"
    value, meta = r["get"]
    assert value == "2"
    assert meta["key"] == "kv/a" and meta["version"] == 2 and meta["lease"] == 0
    assert meta["mod_revision"] == meta["create_revision"] + 1
    assert r["get_missing"] == [None, None]
    # every member answers the linearizable read with the write made through the first one
    assert r["reads"] == [[["2", "kv/a"], ["y", "kv/b"], ["3", "kv/c"]]] * len(target.endpoints)
    assert r["prefix_desc_keys"] == ["kv/c", "kv/b", "kv/a"]
    assert r["all_keys"] == ["kv/a", "kv/b", "kv/c", "kv0"]
    assert r["range"] == ["kv/a", "kv/b"]
    assert (r["replace_ok"], r["replace_bad"], r["after_replace"]) == (True, False, "3")
    assert (r["pine_new"], r["pine_again"]) == (True, False)
    assert (r["delete"], r["delete_again"]) == (True, False)
    assert r["delete_prev"] == [1, ["y"]]
    assert r["delete_prefix"] == 2
    assert r["after_delete"] == [["kv0"]] * len(target.endpoints)


def test_transactions(target: Target) -> None:
    r = scenario(target, "txn")
    assert r["t1"] == [True, ["b"], 1]
    assert r["t2"] == [False, ["3"]]
    assert r["t3"] is False
    assert r["t4"] is True
    assert r["t5"] is True and r["t5_nested"] == "in"
    assert r["values"] == {
        "tx/a": "3",
        "tx/nested": "in",
        "tx/x": "failure",
        "tx/y": "ne-false",
        "tx/z": "lt-gt",
    }
    assert r["dup_error"] == {
        "type": "RpcError",
        "code": "INVALID_ARGUMENT",
        "details": "etcdserver: duplicate key given in txn request",
    }
    assert r["too_many"] == {
        "type": "RpcError",
        "code": "INVALID_ARGUMENT",
        "details": "etcdserver: too many operations in txn request",
    }


def test_leases(target: Target) -> None:
    r = scenario(target, "lease")
    assert r["granted"] == [30, True]
    assert r["keys"] == ["ls/a", "ls/b"]
    assert r["granted_ttl"] == 30 and r["remaining_ok"] is True
    assert r["refresh"] == [[True, 30]]
    assert r["meta_lease"] is True
    assert r["after_revoke"] == [[None, None]] * len(target.endpoints)
    assert r["revoke_again"] == NOT_FOUND_LEASE
    assert r["put_bad_lease"] == NOT_FOUND_LEASE
    assert r["expired"] == [[None, None]] * len(target.endpoints)
    assert r["chosen_id"] == 0x1234ABCD
    assert r["chosen_dup"]["type"] == "PreconditionFailedError"
    # etcd answers LeaseTimeToLive for a revoked or expired lease with TTL -1, not an error
    assert r["ttl_after_revoke"] == {"value": -1}
    assert r["expired_ttl"] == {"value": -1}


def test_watch(target: Target) -> None:
    r = scenario(target, "watch")
    s = r["start"]
    v1 = {"type": "put", "key": "wt/key", "value": "v1", "mod": s}
    o1 = {"type": "put", "key": "wt/other", "value": "o1", "mod": s + 1}
    v2 = {"type": "put", "key": "wt/key", "value": "v2", "mod": s + 2}
    d = {"type": "delete", "key": "wt/key", "value": "", "mod": s + 3}
    e = {"type": "put", "key": "wt/end", "value": "e", "mod": s + 5}
    assert r["key_events"] == [v1, v2, d]
    assert r["prefix_events"] == [v1, o1, v2, d, e]
    assert r["history_prev"] == [v1, o1, {**v2, "prev": "v1"}, {**d, "prev": "v2"}, e]
    assert r["watch_once_timeout"] == {"type": "WatchTimedOut", "details": ""}


def test_compaction_and_hashes(target: Target) -> None:
    r = scenario(target, "compact")
    assert r["old_value"] == "1" and r["at_compact_rev"] == "2"
    assert r["compacted_get"] == COMPACTED
    assert r["compact_again"] == COMPACTED
    assert r["future_get"] == {
        "type": "RpcError",
        "code": "OUT_OF_RANGE",
        "details": "etcdserver: mvcc: required revision is a future revision",
    }
    assert r["watch_compacted"] == [{"error": "RevisionCompactedError", "compact": r["rev"]}]
    assert r["hash_types"] == [True] * len(target.endpoints)
    assert r["hashkv_equal"] is True
    assert r["hashkv_compact"] == [r["rev"]] * len(target.endpoints)


def test_members_and_status(target: Target) -> None:
    r = scenario(target, "cluster")
    n = len(target.endpoints)
    assert r["members_agree"] is True
    assert len(r["members"]) == n
    assert sorted(m[3][0] for m in r["members"]) == sorted(f"http://{e}" for e in target.endpoints)
    assert all(len(m[2]) == 1 and m[2][0].startswith("http://127.0.0.1:") for m in r["members"])
    assert len({m[0] for m in r["members"]}) == n
    assert r["leader_is_member"] is True and len(set(r["leaders"])) == 1
    assert all(
        s["db_size_positive"] and s["raft_index_positive"] and s["raft_term_positive"]
        for s in r["status"]
    )
    assert all(s["version"].startswith("3.") for s in r["status"])
    assert r["alarms"] == []


def test_lock(target: Target) -> None:
    r = scenario(target, "lock")
    assert r["a_acquire"] is True and r["a_is_acquired"] is True
    assert r["holder_is_a"] is True and r["holder_has_lease"] is True
    assert r["b_is_acquired"] is False
    assert r["b_attempt_busy"] == [False, [True]]
    assert r["a_refresh"] == [20]
    assert r["a_release"] is True and r["a_release_again"] is False
    assert r["b_acquired_after_release"] is True and r["b_holder"] is True
    assert r["b_release"] is True
    assert r["ctx_acquired"] is True and r["ctx_released"] is True


def test_errors(target: Target) -> None:
    r = scenario(target, "errors")
    empty = {
        "type": "RpcError",
        "code": "INVALID_ARGUMENT",
        "details": "etcdserver: key is not provided",
    }
    assert r["empty_key_put"] == empty
    assert r["empty_key_get"] == empty
    assert r["revoke_unknown"] == NOT_FOUND_LEASE
    assert r["refresh_unknown"] == {"value": [0]}
    # gRPC's own size limit (2 MiB): the wording is the gRPC library's, the code and sizes are not
    big = r["too_large"]
    assert big["code"] == "RESOURCE_EXHAUSTED"
    assert "larger than max (2097162 vs. 2097152)" in big["details"].lower()
    assert r["request_too_large"] == {
        "type": "RpcError",
        "code": "INVALID_ARGUMENT",
        "details": "etcdserver: request is too large",
    }
    # etcd answers LeaseTimeToLive for an unknown lease with TTL -1, not an error
    assert r["ttl_unknown"] == {"value": -1}
