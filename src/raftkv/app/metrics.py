"""One member's Prometheus metrics on ``prometheus_client``: etcd's names, raftkv's beside them,
and the process and Python runtime metrics (as etcd exposes ``process_*`` and ``go_*``).

Owns: ``MemberCollector`` (reads the member's counters and state when scraped), ``MemberMetrics``
(the member's own ``CollectorRegistry``: that collector, the disk histograms of
``raftkv.server.metrics``, ``ProcessCollector``, ``PlatformCollector``, ``GCCollector``) and
``render`` (a registry as the Prometheus text format, and its content type).

Families of ``MemberCollector`` (``counter`` unless marked ``gauge``):

- ``etcd_mvcc_{put,delete,txn,range}_total``; ``etcd_server_proposals_failed_total``;
- gauges ``etcd_server_has_leader``, ``etcd_server_is_leader``, ``etcd_server_is_learner``,
  ``etcd_server_proposals_committed_total``, ``etcd_server_proposals_applied_total`` (gauges in
  etcd too), ``etcd_server_proposals_pending``, ``etcd_server_quota_backend_bytes``,
  ``etcd_mvcc_db_total_size_in_bytes``, ``etcd_mvcc_db_total_size_in_use_in_bytes``,
  ``etcd_debugging_mvcc_keys_total``, ``etcd_debugging_mvcc_current_revision``,
  ``etcd_debugging_mvcc_compact_revision``, ``etcd_debugging_mvcc_watcher_total``,
  ``etcd_debugging_mvcc_slow_watcher_total`` (unsynced watchers);
- info gauges (value 1): ``etcd_server_version{server_version}`` (the etcd API level raftkv
  serves), ``etcd_server_id{server_id}`` (hex), ``raftkv_server_version{server_version}``,
  ``raftkv_cluster_version{cluster_version}`` ("" until decided); gauge
  ``raftkv_cluster_mixed_versions``;
- per peer of the member list: ``etcd_network_peer_sent_bytes_total{To}`` (bytes written on the
  stream to it), ``etcd_network_peer_sent_failures_total{To}`` (messages dropped: queue full,
  not connected, too large), gauge ``etcd_network_active_peers{Local,Remote}`` (1 while the
  stream to it is up; raftkv has one stream per peer);
- the consistency checks: ``raftkv_apply_digest_checks_total``,
  ``raftkv_apply_digest_mismatch_total``, ``raftkv_state_hash_checks_total``,
  ``raftkv_state_hash_mismatch_total``, ``raftkv_state_hash_compaction_checks_total``,
  ``raftkv_corruption_detected_total``; gauges ``{member_id}``:
  ``raftkv_apply_digest_first_divergent_index``, ``raftkv_apply_digest_pending_mismatch_index``,
  ``raftkv_state_hash_mismatch_index``; ``raftkv_unconfirmed_copy_index{origin}`` while this
  member holds an unconfirmed copy of another's state (``raftkv.guard.vouch``).

Contracts:
- a scrape reads counters and sizes already in memory, one ``stat`` of the backend file and
  LMDB's environment info, and /proc for the process metrics: it never waits on I/O of the
  member's own and may run on the member's event loop thread;
- before ``Member.start`` has assembled the member the member's families are absent (the
  process, Python and disk metrics are there);
- nothing is registered on prometheus_client's global registry.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

from prometheus_client import (
    CollectorRegistry,
    GCCollector,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.exposition import generate_latest
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from raftkv.version import ETCD_API_VERSION, SERVER_VERSION

if TYPE_CHECKING:
    from raftkv.server.member import Member

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
"""The content type of ``generate_latest``'s text (Prometheus text format 0.0.4, as etcd's)."""

# What Member.start assigns, in order; the last one present means the member is assembled.
_ASSEMBLED = "hash_checker"


def render(registry: Collector) -> tuple[bytes, str]:
    """``registry``'s metrics in the Prometheus text format: (body, content type)."""
    return generate_latest(registry), CONTENT_TYPE


class MemberCollector(Collector):
    """The member's families (see the module docstring), read from ``member`` when scraped."""

    def __init__(self, member: Member) -> None:
        self.member = member

    def collect(self) -> Iterable[Metric]:
        if not hasattr(self.member, _ASSEMBLED):
            return []
        return list(self._families())

    def _families(self) -> Iterator[Metric]:
        m = self.member
        applier, raft = m.applier, m.raft
        store, backend, watchable = applier.store, applier.backend, applier.watchable
        counts, guard, hashes = applier.counters, m.guard.counters, m.hash_checker.counters
        c, g = CounterMetricFamily, GaugeMetricFamily
        # etcd's names with etcd's help texts, then raftkv's.
        plain: list[tuple[type[CounterMetricFamily | GaugeMetricFamily], str, str, float]] = [
            (c, "etcd_mvcc_put_total", "Total number of puts seen by this member.",
             counts["put"]),
            (c, "etcd_mvcc_delete_total", "Total number of deletes seen by this member.",
             counts["delete"]),
            (c, "etcd_mvcc_txn_total", "Total number of txns seen by this member.",
             counts["txn"]),
            (c, "etcd_mvcc_range_total", "Total number of ranges seen by this member.",
             m.kv.range_count),
            (g, "etcd_server_has_leader",
             "Whether or not a leader exists. 1 is existence, 0 is not.", int(bool(raft.lead))),
            (g, "etcd_server_is_leader",
             "Whether or not this member is a leader. 1 if is, 0 otherwise.",
             int(raft.is_leader)),
            (g, "etcd_server_is_learner",
             "Whether or not this member is a learner. 1 if is, 0 otherwise.",
             int(m.member_id in raft.conf_state.learners)),
            (g, "etcd_server_proposals_committed_total",
             "The total number of consensus proposals committed.",
             raft.storage.hard_state().commit),
            (g, "etcd_server_proposals_applied_total",
             "The total number of consensus proposals applied.", applier.applied_index()),
            (g, "etcd_server_proposals_pending",
             "The current number of pending proposals to commit.", len(m.proposer.waiters)),
            (c, "etcd_server_proposals_failed_total", "The total number of failed proposals seen.",
             m.proposer.failed),
            (g, "etcd_server_quota_backend_bytes", "Current backend storage quota size in bytes.",
             backend.quota),
            (g, "etcd_mvcc_db_total_size_in_bytes",
             "Total size of the underlying database physically allocated in bytes.",
             backend.file_size()),
            (g, "etcd_mvcc_db_total_size_in_use_in_bytes",
             "Total size of the underlying database logically in use in bytes.", backend.size()),
            (g, "etcd_debugging_mvcc_keys_total", "Total number of keys.", store.key_count()),
            (g, "etcd_debugging_mvcc_current_revision", "The current revision of store.",
             store.current_revision),
            (g, "etcd_debugging_mvcc_compact_revision",
             "The revision of the last compaction in store.", store.compact_revision),
            (g, "etcd_debugging_mvcc_watcher_total", "Total number of watchers.", len(watchable)),
            (g, "etcd_debugging_mvcc_slow_watcher_total",
             "Total number of unsynced slow watchers.", len(watchable.unsynced)),
            (g, "raftkv_cluster_mixed_versions",
             "1 while the members run different raftkv versions.",
             int(m.versions.mixed_versions)),
            (c, "raftkv_apply_digest_checks_total",
             "Apply digest comparisons with the other voters.", guard.checks),
            (c, "raftkv_apply_digest_mismatch_total",
             "Apply digest comparisons that found a mismatch.", guard.apply_digest_mismatch),
            (c, "raftkv_state_hash_checks_total", "State hash checkpoints compared.",
             hashes.checks),
            (c, "raftkv_state_hash_mismatch_total",
             "State hash checkpoints where a member's hash differed.", hashes.mismatches),
            (c, "raftkv_state_hash_compaction_checks_total",
             "State hashes compared at compactions.", hashes.compaction_checks),
            (c, "raftkv_corruption_detected_total",
             "Corruptions detected: diverged apply digests, corrupt stored values, members "
             "named by a state hash check.", guard.corruption_detected + len(hashes.named)),
        ]  # fmt: skip
        for kind, name, help_text, value in plain:
            yield kind(name, help_text, value=value)
        cv = m.versions.cluster_version
        for name, help_text, label, text in (
            ("etcd_server_version",
             "Which version is running. 1 for 'server_version' label with current version.",
             "server_version", ETCD_API_VERSION),
            ("etcd_server_id",
             "Server or member ID in hexadecimal format. 1 for 'server_id' label with current "
             "ID.", "server_id", f"{m.member_id:x}"),
            ("raftkv_server_version", "The raftkv version this member runs.", "server_version",
             str(SERVER_VERSION)),
            ("raftkv_cluster_version",
             "The cluster version the members agreed on (empty until decided).",
             "cluster_version", cv.short() if cv else ""),
        ):  # fmt: skip
            info = g(name, help_text, labels=[label])
            info.add_metric([text], 1)
            yield info
        # Per member: the first Raft index where its apply digest left the quorum's, the index
        # of a mismatch still waiting for a voter to settle it, and the checkpoint index where
        # its state hash was found to differ (leader only, but a member an install found
        # diverged reports its own first index; kept until restart).
        for name, help_text, by_member in (
            ("raftkv_apply_digest_first_divergent_index",
             "First Raft index where the member's apply digest left the quorum's.",
             guard.last_divergence),
            ("raftkv_apply_digest_pending_mismatch_index",
             "Index of a digest mismatch the member is party to that no voter majority "
             "settled yet.", guard.pending),
            ("raftkv_state_hash_mismatch_index",
             "Checkpoint index where the member's state hash was found to differ.",
             hashes.named),
        ):  # fmt: skip
            family = g(name, help_text, labels=["member_id"])
            for member_id, index in sorted(by_member.items()):
                family.add_metric([f"{member_id:x}"], index)
            yield family
        copy = g(
            "raftkv_unconfirmed_copy_index",
            "Index of the unconfirmed copy of another member's state this member holds, until "
            "a member of another origin confirms it.",
            labels=["origin"],
        )
        vouch = applier.copy_vouch
        if vouch is not None:
            copy.add_metric([f"{vouch.origin:x}"], vouch.index)
        yield copy
        yield from self._network()

    def _network(self) -> Iterator[Metric]:
        """etcd's peer families, one sample per peer of the member list the transport has."""
        m = self.member
        local = f"{m.member_id:x}"
        sent = CounterMetricFamily(
            "etcd_network_peer_sent_bytes_total",
            "The total number of bytes sent to peers.",
            labels=["To"],
        )
        failed = CounterMetricFamily(
            "etcd_network_peer_sent_failures_total",
            "The total number of send failures from peers.",
            labels=["To"],
        )
        active = GaugeMetricFamily(
            "etcd_network_active_peers",
            "The current number of active peer connections.",
            labels=["Local", "Remote"],
        )
        for peer_id in sorted(m.applier.members):
            if peer_id == m.member_id:
                continue
            try:
                stats = m.transport.peer_stats(peer_id)
            except KeyError:  # listed, not yet (or no longer) a peer of the transport
                continue
            remote = f"{peer_id:x}"
            sent.add_metric([remote], stats.bytes_sent)
            failed.add_metric([remote], stats.messages_dropped)
            active.add_metric([local, remote], 1 if m.transport.is_connected(peer_id) else 0)
        yield from (sent, failed, active)


class MemberMetrics:
    """One member's registry: ``registry`` holds ``MemberCollector(member)``,
    ``member.disk_metrics`` and the process, platform and GC collectors.  May be built before
    ``member.start()``; ``render()`` is ``render(self.registry)``."""

    def __init__(self, member: Member) -> None:
        self.registry = CollectorRegistry()
        self.registry.register(MemberCollector(member))
        self.registry.register(member.disk_metrics)
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)

    def render(self) -> tuple[bytes, str]:
        return render(self.registry)
