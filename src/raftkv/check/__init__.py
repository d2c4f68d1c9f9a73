"""Offline checks that drive the member's own code: ``raftkv check data``.

Owns: verifying a stopped member's data directory (``data``) and rebuilding its state from
snapshot + WAL with the server's real Applier to compare it with the backend (``rebuild``).
It sits above ``server`` because it runs the server's applier and reads its bootstrap files;
the file-level checks and the report it builds on (``guard.check_files``,
``guard.check_report``) stay in ``guard``, which imports nothing of the server.
"""
