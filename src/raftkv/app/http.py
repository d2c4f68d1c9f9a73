"""The member's HTTP endpoints: ``/health`` (etcd's JSON), ``/version`` (etcd's JSON plus
raftkv's versions) and ``/metrics`` (Prometheus text).

Served on ``--listen-metrics-urls``.  Contract: answering never blocks the event loop; a
member is healthy when it knows a leader and has no active alarm.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from urllib.parse import urlsplit

from raftkv.server.member import Member
from raftkv.version import ETCD_API_VERSION, SERVER_VERSION

_ALARM_NAMES = {1: "NOSPACE", 2: "CORRUPT"}


def health(member: Member) -> tuple[bool, str]:
    if member.applier.alarms:
        names = sorted(_ALARM_NAMES.get(a, str(a)) for _m, a in member.applier.alarms)
        return False, "ALARM " + ",".join(names)
    if not member.raft.lead:
        return False, "RAFT NO LEADER"
    return True, ""


def version_json(member: Member) -> str:
    """etcd's ``/version`` fields (the etcd API level raftkv serves: etcd clients parse them)
    and raftkv's own server, cluster and storage versions beside them."""
    cv = member.versions.cluster_version
    storage = member.applier.storage_version()
    return json.dumps(
        {
            "etcdserver": ETCD_API_VERSION,
            "etcdcluster": ETCD_API_VERSION if cv is not None else "not_decided",
            "storage": ETCD_API_VERSION,
            "raftkv": str(SERVER_VERSION),
            "raftkvCluster": cv.short() if cv is not None else "not_decided",
            "raftkvStorage": storage.short() if storage is not None else "",
        }
    )


def metrics_text(member: Member) -> str:
    store = member.applier.store
    backend = member.applier.backend
    hs = member.raft.storage.hard_state()
    counters = member.applier.counters
    guard = member.guard.counters
    hashes = member.hash_checker.counters
    lines = [
        ("raftkv_apply_digest_checks_total", "counter", guard.checks),
        ("raftkv_apply_digest_mismatch_total", "counter", guard.apply_digest_mismatch),
        ("raftkv_state_hash_checks_total", "counter", hashes.checks),
        ("raftkv_state_hash_mismatch_total", "counter", hashes.mismatches),
        ("raftkv_state_hash_compaction_checks_total", "counter", hashes.compaction_checks),
        (
            "raftkv_corruption_detected_total",
            "counter",
            guard.corruption_detected + len(hashes.named),
        ),
        ("etcd_mvcc_put_total", "counter", counters["put"]),
        ("etcd_mvcc_delete_total", "counter", counters["delete"]),
        ("etcd_mvcc_txn_total", "counter", counters["txn"]),
        ("etcd_mvcc_range_total", "counter", member.kv.range_count),
        ("etcd_server_has_leader", "gauge", 1 if member.raft.lead else 0),
        ("etcd_server_is_leader", "gauge", 1 if member.raft.is_leader else 0),
        ("etcd_server_proposals_committed_total", "gauge", hs.commit),
        ("etcd_server_proposals_applied_total", "gauge", member.applier.applied_index()),
        ("etcd_server_proposals_pending", "gauge", len(member.proposer.waiters)),
        ("etcd_server_proposals_failed_total", "counter", member.proposer.failed),
        ("etcd_mvcc_db_total_size_in_bytes", "gauge", backend.file_size()),
        ("etcd_mvcc_db_total_size_in_use_in_bytes", "gauge", backend.size()),
        ("etcd_debugging_mvcc_keys_total", "gauge", store.key_count()),
        ("etcd_debugging_mvcc_current_revision", "gauge", store.current_revision),
        ("etcd_debugging_mvcc_compact_revision", "gauge", store.compact_revision),
    ]
    out = []
    for name, kind, value in lines:
        out.append(f"# TYPE {name} {kind}")
        out.append(f"{name} {value}")
    # Versions, as etcd's info gauges (etcd_server_version carries the etcd API level etcd
    # dashboards expect; raftkv's own versions beside it).
    cv = member.versions.cluster_version
    for name, label, text in (
        ("etcd_server_version", "server_version", ETCD_API_VERSION),
        ("raftkv_server_version", "server_version", str(SERVER_VERSION)),
        ("raftkv_cluster_version", "cluster_version", cv.short() if cv else ""),
    ):
        out.append(f"# TYPE {name} gauge")
        out.append(f'{name}{{{label}="{text}"}} 1')
    out.append("# TYPE raftkv_cluster_mixed_versions gauge")
    out.append(f"raftkv_cluster_mixed_versions {int(member.versions.mixed_versions)}")
    # Per member: the first Raft index where its apply digest left the quorum's, the index of a
    # mismatch still waiting for a voter to settle it, and the checkpoint index where its state
    # hash was found to differ (leader only; kept until restart).
    for name, by_member in (
        ("raftkv_apply_digest_first_divergent_index", guard.last_divergence),
        ("raftkv_apply_digest_pending_mismatch_index", guard.pending),
        ("raftkv_state_hash_mismatch_index", hashes.named),
    ):
        out.append(f"# TYPE {name} gauge")
        for member_id, index in sorted(by_member.items()):
            out.append(f'{name}{{member_id="{member_id:x}"}} {index}')
    out.extend(member.disk_metrics.render())
    return "\n".join(out) + "\n"


async def _handle(
    member: Member, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    try:
        request_line = await asyncio.wait_for(reader.readline(), 5)
        while (await asyncio.wait_for(reader.readline(), 5)) not in (b"\r\n", b"\n", b""):
            pass
        parts = request_line.decode("latin-1").split()
        path = parts[1] if len(parts) >= 2 else "/"
        status, ctype = "200 OK", "text/plain; version=0.0.4"
        if path.startswith("/health"):
            ok, reason = health(member)
            body = json.dumps({"health": "true" if ok else "false", "reason": reason})
            ctype = "application/json"
            if not ok:
                status = "503 Service Unavailable"
        elif path.startswith("/version"):
            body, ctype = version_json(member), "application/json"
        elif path.startswith("/metrics"):
            body = metrics_text(member)
        else:
            status, body = "404 Not Found", "404 page not found\n"
        data = body.encode()
        writer.write(
            f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {len(data)}\r\n"
            f"Connection: close\r\n\r\n".encode()
            + data
        )
        await writer.drain()
    except (TimeoutError, ConnectionError):
        pass
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def start_http(member: Member, urls: list[str]) -> list[asyncio.Server]:
    servers = []
    for url in urls:
        parts = urlsplit(url)
        server = await asyncio.start_server(
            lambda r, w: _handle(member, r, w), parts.hostname, parts.port
        )
        servers.append(server)
    return servers
