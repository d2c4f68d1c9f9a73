"""raftkv: an etcd-compatible, Raft-replicated key-value store that keeps replicas provably identical."""

__version__ = "0.3.0"
