"""Tests of raftkv.wal."""
