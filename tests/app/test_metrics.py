"""A member's /metrics on prometheus_client (raftkv.app.metrics) against real in-process
members: etcd's names, types and labels, etcd's disk buckets, the process and Python metrics."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

from raftkv.app.metrics import CONTENT_TYPE, MemberMetrics, render
from raftkv.proto import rpc_pb2 as pb
from raftkv.server.config import ServerConfig
from raftkv.server.member import Member
from raftkv.server.metrics import ETCD_DISK_BUCKETS
from raftkv.version import ETCD_API_VERSION, SERVER_VERSION
from tests.cluster.harness import free_ports
from tests.prom_text import parse

# Every family the hand-written exposition had, with its type (labels checked below).
HAND_WRITTEN = {
    "raftkv_apply_digest_checks_total": "counter",
    "raftkv_apply_digest_mismatch_total": "counter",
    "raftkv_state_hash_checks_total": "counter",
    "raftkv_state_hash_mismatch_total": "counter",
    "raftkv_state_hash_compaction_checks_total": "counter",
    "raftkv_corruption_detected_total": "counter",
    "etcd_mvcc_put_total": "counter",
    "etcd_mvcc_delete_total": "counter",
    "etcd_mvcc_txn_total": "counter",
    "etcd_mvcc_range_total": "counter",
    "etcd_server_has_leader": "gauge",
    "etcd_server_is_leader": "gauge",
    "etcd_server_proposals_committed_total": "gauge",
    "etcd_server_proposals_applied_total": "gauge",
    "etcd_server_proposals_pending": "gauge",
    "etcd_server_proposals_failed_total": "counter",
    "etcd_mvcc_db_total_size_in_bytes": "gauge",
    "etcd_mvcc_db_total_size_in_use_in_bytes": "gauge",
    "etcd_debugging_mvcc_keys_total": "gauge",
    "etcd_debugging_mvcc_current_revision": "gauge",
    "etcd_debugging_mvcc_compact_revision": "gauge",
    "etcd_server_version": "gauge",
    "raftkv_server_version": "gauge",
    "raftkv_cluster_version": "gauge",
    "raftkv_cluster_mixed_versions": "gauge",
    "raftkv_apply_digest_first_divergent_index": "gauge",
    "raftkv_apply_digest_pending_mismatch_index": "gauge",
    "raftkv_state_hash_mismatch_index": "gauge",
    "etcd_disk_wal_fsync_duration_seconds": "histogram",
    "etcd_disk_backend_commit_duration_seconds": "histogram",
}
ADDED = {
    "etcd_server_id": "gauge",
    "etcd_server_is_learner": "gauge",
    "etcd_server_quota_backend_bytes": "gauge",
    "etcd_debugging_mvcc_watcher_total": "gauge",
    "etcd_debugging_mvcc_slow_watcher_total": "gauge",
    "etcd_network_peer_sent_bytes_total": "counter",
    "etcd_network_peer_sent_failures_total": "counter",
    "etcd_network_active_peers": "gauge",
}
RUNTIME = (
    "process_cpu_seconds_total",
    "process_resident_memory_bytes",
    "process_start_time_seconds",
    "process_open_fds",
    "python_info",
    "python_gc_collections_total",
)


def run_members(
    root: Path, size: int, body: Callable[[list[Member], list[MemberMetrics]], Awaitable[None]]
) -> None:
    """Start ``size`` members in this process (one event loop, peers on loopback), each with
    its ``MemberMetrics`` built before ``start``; run ``body``; stop them."""
    urls = [f"http://127.0.0.1:{p}" for p in free_ports(size)]
    initial = ",".join(f"m{i}={u}" for i, u in enumerate(urls))
    configs = [
        ServerConfig(
            name=f"m{i}",
            data_dir=str(root / f"m{i}"),
            listen_peer_urls=(u,),
            initial_advertise_peer_urls=(u,),
            initial_cluster=initial,
        )
        for i, u in enumerate(urls)
    ]

    async def main() -> None:
        members = [Member(cfg) for cfg in configs]
        metrics = [MemberMetrics(m) for m in members]
        try:
            await asyncio.gather(*(m.start() for m in members))
            async with asyncio.timeout(20):
                while not any(m.raft.is_leader for m in members):
                    await asyncio.sleep(0.02)
            await body(members, metrics)
        finally:
            await asyncio.gather(*(m.stop() for m in members), return_exceptions=True)

    asyncio.run(main())


def scrape(metrics: MemberMetrics) -> tuple[dict[str, str], dict[str, float]]:
    body, content_type = metrics.render()
    assert content_type == CONTENT_TYPE == "text/plain; version=0.0.4; charset=utf-8"
    return parse(body.decode())


def test_a_member_exposes_etcds_families_and_the_runtime_ones(tmp_path: Path) -> None:
    before: list[tuple[dict[str, str], dict[str, float]]] = []

    async def body(members: list[Member], metrics: list[MemberMetrics]) -> None:
        (m,), (mm,) = members, metrics
        await m.kv.put(pb.PutRequest(key=b"a", value=b"1"))
        await m.kv.put(pb.PutRequest(key=b"a", value=b"2"))
        await m.kv.delete_range(pb.DeleteRangeRequest(key=b"a"))
        await m.kv.range(pb.RangeRequest(key=b"a", serializable=True))
        m.applier.force_commit()  # one backend commit at least
        before.append(scrape(mm))

    run_members(tmp_path, 1, body)
    types, values = before[0]
    for name, kind in (HAND_WRITTEN | ADDED).items():
        assert types.get(name) == kind, name
    assert values["etcd_mvcc_put_total"] == 2 and values["etcd_mvcc_delete_total"] == 1
    assert values["etcd_mvcc_range_total"] == 1 and values["etcd_mvcc_txn_total"] == 0
    assert values["etcd_debugging_mvcc_current_revision"] == 4
    assert values["etcd_server_has_leader"] == 1 and values["etcd_server_is_leader"] == 1
    assert values["etcd_server_is_learner"] == 0
    assert values["etcd_server_proposals_pending"] == 0
    assert values["etcd_server_proposals_failed_total"] == 0
    assert (
        values["etcd_server_proposals_applied_total"]
        == values["etcd_server_proposals_committed_total"]
        >= 4
    )
    assert values["etcd_server_quota_backend_bytes"] == 2 * 1024**3  # the default
    assert (
        values["etcd_mvcc_db_total_size_in_bytes"]
        >= values["etcd_mvcc_db_total_size_in_use_in_bytes"]
        > 0
    )
    assert values[f'etcd_server_version{{server_version="{ETCD_API_VERSION}"}}'] == 1
    assert values[f'raftkv_server_version{{server_version="{SERVER_VERSION}"}}'] == 1
    assert [k for k in values if k.startswith("etcd_server_id{")] == [
        k for k in values if k.startswith('etcd_server_id{server_id="') and k.endswith('"}')
    ]
    assert not any(k.startswith("raftkv_state_hash_mismatch_index") for k in values)
    # etcd's disk histograms: every write went through a WAL fsync
    wal = "etcd_disk_wal_fsync_duration_seconds"
    assert values[wal + "_count"] >= 3
    assert values[wal + '_bucket{le="+Inf"}'] == values[wal + "_count"]
    assert values["etcd_disk_backend_commit_duration_seconds_count"] >= 1
    for name in (wal, "etcd_disk_backend_commit_duration_seconds"):
        bounds = [k.split('"')[1] for k in values if k.startswith(name + "_bucket")]
        assert bounds == [f"{b:g}" for b in ETCD_DISK_BUCKETS] + ["+Inf"]
    assert not any("_created" in k for k in values)
    for name in RUNTIME:
        assert name in types, name
    assert values["process_resident_memory_bytes"] > 0


def test_before_start_only_the_runtime_and_disk_families_are_there(tmp_path: Path) -> None:
    member = Member(ServerConfig(name="m0", data_dir=str(tmp_path / "m0")))
    types, _values = scrape(MemberMetrics(member))
    assert not any(name.startswith(("etcd_server", "etcd_mvcc", "raftkv_")) for name in types)
    assert "etcd_disk_wal_fsync_duration_seconds" in types
    assert all(name in types for name in RUNTIME)


def test_three_members_expose_their_peers_and_one_leader(tmp_path: Path) -> None:
    scrapes: list[tuple[dict[str, str], dict[str, float]]] = []
    ids: list[str] = []

    async def body(members: list[Member], metrics: list[MemberMetrics]) -> None:
        leader = next(m for m in members if m.raft.is_leader)
        for i in range(5):
            await leader.kv.put(pb.PutRequest(key=b"k%d" % i, value=b"v"))
        async with asyncio.timeout(10):  # every stream up, every member applied the puts
            while not all(
                m.applier.store.current_revision == 6
                and all(m.transport.is_connected(p.member_id) for p in members if p is not m)
                for m in members
            ):
                await asyncio.sleep(0.02)
        ids.extend(f"{m.member_id:x}" for m in members)
        scrapes.extend(scrape(mm) for mm in metrics)

    run_members(tmp_path, 3, body)
    leaders = [ids[i] for i, (_t, values) in enumerate(scrapes) if values["etcd_server_is_leader"]]
    assert len(leaders) == 1
    leader = leaders[0]
    for i, (_types, values) in enumerate(scrapes):
        me = ids[i]
        assert values[f'etcd_server_id{{server_id="{me}"}}'] == 1
        assert values["etcd_server_has_leader"] == 1
        assert values["etcd_debugging_mvcc_current_revision"] == 6
        for peer in ids:
            if peer == me:
                assert f'etcd_network_peer_sent_bytes_total{{To="{peer}"}}' not in values
                continue
            sent = values[f'etcd_network_peer_sent_bytes_total{{To="{peer}"}}']
            if leader in (me, peer):  # followers need not talk to each other
                assert sent > 0
            assert f'etcd_network_peer_sent_failures_total{{To="{peer}"}}' in values
            assert values[f'etcd_network_active_peers{{Local="{me}",Remote="{peer}"}}'] == 1


def test_render_is_generate_latest_with_its_content_type(tmp_path: Path) -> None:
    from prometheus_client import CollectorRegistry, Gauge

    registry = CollectorRegistry()
    Gauge("x", "help", registry=registry).set(3)
    body, content_type = render(registry)
    assert body == b"# HELP x help\n# TYPE x gauge\nx 3.0\n"
    assert content_type.startswith("text/plain; version=0.0.4")
