"""Deterministic cluster simulator and linearizability checker for the Raft core."""
