"""Test suite of raftkv; tests/<layer>/ mirrors src/raftkv/<layer>/."""
