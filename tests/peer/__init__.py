"""Tests of the member-to-member transport (src/raftkv/peer/)."""
