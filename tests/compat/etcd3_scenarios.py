"""Scenarios driven by the PyPI ``etcd3`` client (0.12), run as a separate process.

Contract: ``python etcd3_scenarios.py SCENARIO HOST:PORT[,HOST:PORT...]`` runs one scenario
against the listed members and prints one JSON object (what the client observed) on stdout; the
pytest side asserts on it.  This module imports ``etcd3``, whose generated descriptors need
``PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION=python`` and clash with raftkv's own: it must never be
imported by the pytest process.  A scenario that hits an unexpected error exits non-zero with
the traceback on stderr.  Every blocking wait is bounded.
"""

from __future__ import annotations

import json
import os
import queue
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import etcd3  # type: ignore[import-untyped]
import etcd3.events  # type: ignore[import-untyped]
import etcd3.exceptions  # type: ignore[import-untyped]
import grpc

Clients = list[Any]
WAIT = 10.0


def _s(b: bytes | None) -> str | None:
    return None if b is None else b.decode()


def _error(fn: Callable[[], object]) -> dict[str, str]:
    """Run ``fn`` expecting a failure; the exception class and, for gRPC errors, code+details."""
    try:
        fn()
    except grpc.RpcError as exc:
        return {"type": "RpcError", "code": exc.code().name, "details": exc.details() or ""}
    except etcd3.exceptions.Etcd3Exception as exc:
        return {"type": type(exc).__name__, "details": str(exc)}
    return {"type": "none"}


def _outcome(fn: Callable[[], object]) -> dict[str, Any]:
    """``{"value": fn()}``, or the error as ``_error`` describes it."""
    try:
        return {"value": fn()}
    except (grpc.RpcError, etcd3.exceptions.Etcd3Exception):
        return _error(fn)


def _meta(meta: Any) -> dict[str, Any]:
    return {
        "key": _s(meta.key),
        "create_revision": meta.create_revision,
        "mod_revision": meta.mod_revision,
        "version": meta.version,
        "lease": meta.lease_id,
    }


def _event(ev: Any) -> dict[str, Any]:
    kind = "put" if isinstance(ev, etcd3.events.PutEvent) else "delete"
    out = {"type": kind, "key": _s(ev.key), "value": _s(ev.value), "mod": ev.mod_revision}
    prev = ev._event.prev_kv
    if prev.key:
        out["prev"] = _s(prev.value)
    return out


def _at(c: Any, key: str, rev: int) -> Any:
    """A Range of one key at revision ``rev`` (0.12's request builder drops ``revision``)."""
    return c.kvstub.Range(etcd3.etcdrpc.RangeRequest(key=key.encode(), revision=rev), WAIT)


def _revision(c: Any) -> int:
    return int(c.get_response("rev-probe").header.revision)


# ------------------------------------------------------------------------------ scenarios


def kv(cs: Clients) -> dict[str, Any]:
    """Writes through the first member, reads through every member (linearizable by default)."""
    w = cs[0]
    out: dict[str, Any] = {}
    w.put("kv/a", "1")
    w.put("kv/a", "2")
    out["put_prev"] = _s(w.put("kv/b", "x", prev_kv=True).prev_kv.value)
    out["put_prev2"] = _s(w.put("kv/b", "y", prev_kv=True).prev_kv.value)
    w.put("kv/c", "3")
    w.put("kv0", "outside")
    value, meta = w.get("kv/a")
    out["get"] = [_s(value), _meta(meta)]
    out["get_missing"] = list(w.get("kv/missing"))
    out["reads"] = [
        [[_s(v), _s(m.key)] for v, m in c.get_prefix("kv/", sort_order="ascend")] for c in cs
    ]
    out["prefix_desc_keys"] = [
        _s(m.key) for _, m in w.get_prefix("kv/", sort_order="descend", sort_target="key")
    ]
    out["all_keys"] = [_s(m.key) for _, m in w.get_all()]
    out["range"] = [_s(m.key) for _, m in w.get_range("kv/a", "kv/c")]
    out["replace_ok"] = w.replace("kv/a", "2", "3")
    out["replace_bad"] = w.replace("kv/a", "2", "4")
    out["after_replace"] = _s(cs[-1].get("kv/a")[0])
    out["pine_new"] = w.put_if_not_exists("kv/new", "n")
    out["pine_again"] = w.put_if_not_exists("kv/new", "m")
    out["delete"] = w.delete("kv/c")
    out["delete_again"] = w.delete("kv/c")
    dresp = w.delete("kv/b", prev_kv=True, return_response=True)
    out["delete_prev"] = [dresp.deleted, [_s(kv.value) for kv in dresp.prev_kvs]]
    out["delete_prefix"] = w.delete_prefix("kv/").deleted
    out["after_delete"] = [[_s(m.key) for _, m in c.get_prefix("kv")] for c in cs]
    w.delete("kv0")
    return out


def txn(cs: Clients) -> dict[str, Any]:
    c = cs[0]
    t = c.transactions
    out: dict[str, Any] = {}
    c.put("tx/a", "1")
    c.put("tx/a", "2")
    c.put("tx/b", "b")
    _, meta = c.get("tx/a")
    ok, resp = c.transaction(
        compare=[t.value("tx/a") == "2", t.version("tx/a") > 1, t.create("tx/none") == 0],
        success=[t.put("tx/a", "3"), t.get("tx/b"), t.delete("tx/b")],
        failure=[t.put("tx/failed", "yes")],
    )
    out["t1"] = [ok, [_s(v) for v, _ in resp[1]], resp[2].response_delete_range.deleted]
    ok, resp = c.transaction(
        compare=[t.mod("tx/a") == meta.mod_revision],  # tx/a was rewritten: false
        success=[t.put("tx/x", "success")],
        failure=[t.put("tx/x", "failure"), t.get("tx/a")],
    )
    out["t2"] = [ok, [_s(v) for v, _ in resp[1]]]
    ok, _ = c.transaction(
        compare=[t.value("tx/a") != "3"], success=[], failure=[t.put("tx/y", "ne-false")]
    )
    out["t3"] = ok
    ok, _ = c.transaction(
        compare=[t.value("tx/a") < "4", t.value("tx/a") > "2", t.version("tx/a") == 3],
        success=[t.put("tx/z", "lt-gt")],
        failure=[],
    )
    out["t4"] = ok
    ok, _ = c.transaction(
        compare=[t.create("tx/a") == meta.create_revision, t.mod("tx/a") > meta.mod_revision],
        success=[
            t.txn(
                compare=[t.value("tx/z") == "lt-gt"],
                success=[t.put("tx/nested", "in")],
                failure=[],
            )
        ],
        failure=[],
    )
    out["t5"] = ok
    out["t5_nested"] = _s(cs[-1].get("tx/nested")[0])
    out["values"] = {_s(m.key): _s(v) for v, m in cs[-1].get_prefix("tx/")}
    out["dup_error"] = _error(
        lambda: c.transaction(
            compare=[], success=[t.put("tx/d", "1"), t.put("tx/d", "2")], failure=[]
        )
    )
    out["too_many"] = _error(
        lambda: c.transaction(
            compare=[], success=[t.put(f"tx/m{i}", "v") for i in range(129)], failure=[]
        )
    )
    c.delete_prefix("tx/")
    return out


def lease(cs: Clients) -> dict[str, Any]:
    c = cs[0]
    out: dict[str, Any] = {}
    lease = c.lease(30)
    out["granted"] = [lease.ttl, lease.id > 0]
    c.put("ls/a", "1", lease=lease)
    c.put("ls/b", "2", lease=lease)
    other = cs[-1]
    out["keys"] = sorted(_s(k) for k in other.get_lease_info(lease.id).keys)
    out["granted_ttl"] = lease.granted_ttl
    remaining = lease.remaining_ttl
    out["remaining_ok"] = 0 < remaining <= 30
    refreshed = lease.refresh()
    out["refresh"] = [(lease.id == r.ID, r.TTL) for r in refreshed]
    out["meta_lease"] = other.get("ls/a")[1].lease_id == lease.id
    lease.revoke()
    out["after_revoke"] = [list(x.get("ls/a")) for x in cs]
    out["ttl_after_revoke"] = _outcome(lambda: c.get_lease_info(lease.id).TTL)
    out["revoke_again"] = _error(lease.revoke)
    out["put_bad_lease"] = _error(lambda: c.put("ls/c", "v", lease=lease.id))
    short = c.lease(2)
    c.put("ls/short", "v", lease=short)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and c.get("ls/short")[0] is not None:
        time.sleep(0.3)
    out["expired"] = [list(x.get("ls/short")) for x in cs]
    out["expired_ttl"] = _outcome(lambda: c.get_lease_info(short.id).TTL)
    chosen = c.lease(30, lease_id=0x1234ABCD)
    out["chosen_id"] = chosen.id
    out["chosen_dup"] = _error(lambda: c.lease(30, lease_id=0x1234ABCD))
    chosen.revoke()
    return out


def watch(cs: Clients) -> dict[str, Any]:
    """Iterator watch on a key, callback watch on a prefix, history watch with prev_kv."""
    writer = cs[0]
    watcher = cs[-1]
    out: dict[str, Any] = {}
    start = _revision(writer) + 1
    it, cancel = watcher.watch("wt/key", start_revision=start)
    got: queue.Queue[Any] = queue.Queue()
    watch_id = watcher.add_watch_prefix_callback("wt/", got.put, start_revision=start)
    writer.put("wt/key", "v1")
    writer.put("wt/other", "o1")
    writer.put("wt/key", "v2")
    writer.delete("wt/key")
    writer.put("wtx", "not-in-prefix")
    writer.put("wt/end", "e")

    key_events: list[dict[str, Any]] = []

    def drain() -> None:
        for ev in it:
            key_events.append(_event(ev))
            if len(key_events) == 3:
                break

    t = threading.Thread(target=drain, daemon=True)
    t.start()
    t.join(WAIT)
    cancel()
    out["key_events"] = key_events
    prefix_events: list[dict[str, Any]] = []
    deadline = time.monotonic() + WAIT
    while len(prefix_events) < 5 and time.monotonic() < deadline:
        try:
            resp = got.get(timeout=max(deadline - time.monotonic(), 0.01))
        except queue.Empty:
            break
        if isinstance(resp, Exception):
            raise resp
        prefix_events.extend(_event(e) for e in resp.events)
    watcher.cancel_watch(watch_id)
    out["prefix_events"] = prefix_events
    out["start"] = start
    events, _ = [], None
    hist, hcancel = writer.watch_prefix("wt/", start_revision=start, prev_kv=True)
    for ev in hist:
        events.append(_event(ev))
        if len(events) == 5:
            break
    hcancel()
    out["history_prev"] = events
    out["watch_once_timeout"] = _error(lambda: watcher.watch_once("wt/none", timeout=1))
    writer.delete_prefix("wt")
    return out


def compact(cs: Clients) -> dict[str, Any]:
    c = cs[0]
    out: dict[str, Any] = {}
    for i in range(4):
        c.put("cp/k", str(i))
    rev = _revision(c)
    out["old_value"] = _s(_at(c, "cp/k", rev - 2).kvs[0].value)
    c.compact(rev - 1)
    out["compacted_get"] = _error(lambda: _at(c, "cp/k", rev - 2))
    out["at_compact_rev"] = _s(_at(c, "cp/k", rev - 1).kvs[0].value)
    out["future_get"] = _error(lambda: _at(c, "cp/k", rev + 100))
    out["compact_again"] = _error(lambda: c.compact(rev - 2))
    c.put("cp/k", "last")
    c.compact(rev, physical=True)
    got: list[Any] = []
    it, cancel = c.watch("cp/k", start_revision=rev - 1)

    def drain() -> None:
        try:
            for ev in it:
                got.append(_event(ev))
                break
        except etcd3.exceptions.Etcd3Exception as exc:
            got.append(
                {"error": type(exc).__name__, "compact": getattr(exc, "compacted_revision", None)}
            )

    t = threading.Thread(target=drain, daemon=True)
    t.start()
    t.join(WAIT)
    cancel()
    out["watch_compacted"] = got
    out["rev"] = rev
    hashes = [x.hash() for x in cs]
    out["hash_types"] = [isinstance(h, int) for h in hashes]
    req = etcd3.etcdrpc.HashKVRequest(revision=0)
    kv_hashes = [x.maintenancestub.HashKV(req, WAIT) for x in cs]
    out["hashkv_equal"] = len({(h.hash, h.header.revision) for h in kv_hashes}) == 1
    out["hashkv_compact"] = [h.compact_revision for h in kv_hashes]
    c.delete("cp/k")
    return out


def cluster(cs: Clients) -> dict[str, Any]:
    out: dict[str, Any] = {}
    lists = []
    for c in cs:
        members = sorted(c.members, key=lambda m: m.name)
        lists.append([(m.id, m.name, list(m.peer_urls), list(m.client_urls)) for m in members])
    out["members"] = lists[0]
    out["members_agree"] = all(x == lists[0] for x in lists)
    statuses = [c.status() for c in cs]
    ids = {m[0] for m in lists[0]}
    out["leaders"] = [s.leader.id if s.leader is not None else None for s in statuses]
    out["leader_is_member"] = all(s.leader is not None and s.leader.id in ids for s in statuses)
    out["status"] = [
        {
            "version": s.version,
            "db_size_positive": s.db_size > 0,
            "raft_index_positive": s.raft_index > 0,
            "raft_term_positive": s.raft_term > 0,
        }
        for s in statuses
    ]
    out["alarms"] = list(cs[0].list_alarms())
    return out


def lock(cs: Clients) -> dict[str, Any]:
    a, b = cs[0], cs[-1]
    out: dict[str, Any] = {}
    la = a.lock("lk", ttl=20)
    out["a_acquire"] = la.acquire(timeout=5)
    out["a_is_acquired"] = la.is_acquired()
    holder, meta = b.get("/locks/lk")
    out["holder_is_a"] = holder == la.uuid
    out["holder_has_lease"] = meta.lease_id == la.lease.id
    lb = b.lock("lk", ttl=20)
    out["b_is_acquired"] = lb.is_acquired()
    # The attempt Lock.acquire makes (its retry path is broken with current tenacity).
    t = b.transactions
    attempt = b.lease(20)
    ok, resp = b.transaction(
        compare=[t.create(lb.key) == 0],
        success=[t.put(lb.key, lb.uuid, lease=attempt)],
        failure=[t.get(lb.key)],
    )
    out["b_attempt_busy"] = [ok, [v == la.uuid for v, _ in resp[0]]]
    attempt.revoke()
    out["a_refresh"] = [r.TTL for r in la.refresh()]
    out["a_release"] = la.release()
    out["b_acquired_after_release"] = lb.acquire(timeout=5)
    out["b_holder"] = a.get("/locks/lk")[0] == lb.uuid
    out["a_release_again"] = la.release()
    out["b_release"] = lb.release()
    with a.lock("lk2", ttl=20) as l2:
        out["ctx_acquired"] = l2.is_acquired()
    out["ctx_released"] = b.get("/locks/lk2")[0] is None
    return out


def errors(cs: Clients) -> dict[str, Any]:
    c = cs[0]
    out: dict[str, Any] = {}
    out["empty_key_put"] = _error(lambda: c.put("", "v"))
    out["empty_key_get"] = _error(lambda: c.get(""))
    out["revoke_unknown"] = _error(lambda: c.revoke_lease(0x7777))
    out["ttl_unknown"] = _outcome(lambda: c.get_lease_info(0x7777).TTL)
    out["refresh_unknown"] = _outcome(lambda: [r.TTL for r in c.refresh_lease(0x7777)])
    out["too_large"] = _error(lambda: c.put("big", "x" * (2 * 1024 * 1024)))
    out["request_too_large"] = _error(lambda: c.put("big", "x" * (1024 * 1024 + 600 * 1024)))
    return out


def auth(cs: Clients) -> dict[str, Any]:
    """As user ``alice`` (password ``alicepw``, read on ``/app/``), set up by the caller, over
    TLS: the client sends its token as call credentials, which gRPC sends only on a secure
    channel.  ``ETCD3_CA``, ``ETCD3_CERT`` and ``ETCD3_KEY`` name the TLS files."""
    host, port = cs[0]._url.rsplit(":", 1)
    alice = etcd3.client(
        host=host,
        port=int(port),
        user="alice",
        password="alicepw",
        timeout=WAIT,
        ca_cert=os.environ["ETCD3_CA"],
        cert_cert=os.environ["ETCD3_CERT"],
        cert_key=os.environ["ETCD3_KEY"],
    )
    try:
        return {
            "read": _outcome(lambda: _s(alice.get("/app/a")[0])),
            "write": _error(lambda: alice.put("/app/b", "x")),
            "read_other": _error(lambda: alice.get("/secret")),
        }
    finally:
        alice.close()


SCENARIOS: dict[str, Callable[[Clients], dict[str, Any]]] = {
    f.__name__: f for f in (kv, txn, lease, watch, compact, cluster, lock, errors, auth)
}


def main(argv: list[str]) -> int:
    name, endpoints = argv[0], argv[1].split(",")
    clients = []
    for ep in endpoints:
        host, port = ep.rsplit(":", 1)
        clients.append(etcd3.client(host=host, port=int(port), timeout=WAIT))
    try:
        result = SCENARIOS[name](clients)
    finally:
        for c in clients:
            c.close()
    print(json.dumps(result, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
