"""Tests of raftkv.snap."""
