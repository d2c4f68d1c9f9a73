"""Tests of the Raft consensus core (raftkv.raft)."""
