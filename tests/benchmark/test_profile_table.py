"""bench/profile_table.py attributes each running sample to the component whose code ran it,
compiled (mypyc) frames included, and drops the samples of waiting threads."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import profile_table

LOOP = "run_forever (loop.c:33192);Loop__run (loop.c:20313)"
READY = "RaftNode._process_ready (raftkv/server/raft_node.py:541)"


def test_compiled_frames_are_their_modules() -> None:
    # the Ready loop calls the compiled core and applier: the samples are theirs, not its
    core = f"{LOOP};{READY};CPyDef_leader___maybe_send_append (__native_raftkv.c:128964)"
    types = f"{LOOP};{READY};CPyDef_raft___types___Entry (__native_raftkv.c:160121)"
    apply = (
        f"{LOOP};RaftNode._apply_loop (raft_node.py:448);"
        "CPyPy_applier___Applier____apply_put (__native_raftkv.c:193694);"
        "CPyDef_sorted_keys___SortedKeys___add (__native_raftkv.c:58929);"
        "internal_bisect_left (_bisectmodule.c:176)"
    )
    assert profile_table.component(core.split(";")) == "Raft core (raftkv.raft)"
    assert profile_table.component(types.split(";")) == "Raft core (raftkv.raft)"
    assert profile_table.component(apply.split(";")) == "apply (applier, MVCC, digest)"
    assert profile_table.component(f"{LOOP};{READY}".split(";")) == "Ready loop"


def test_table_drops_waits(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    profile = tmp_path / "leader.txt"
    wal_thread = (
        "Thread._bootstrap (threading.py:1002);SerialWorker._serve (worker.py:63);"
        "PyThread_acquire_lock_timed (libpython3.11.so.1.0);"
        "0x7ff7dbeaed90 (libc.so.6);0x7ff7dbea3f16 (libc.so.6)"
    )
    core = f"{LOOP};{READY};CPyDef_leader___maybe_send_append (__native_raftkv.c:1)"
    profile.write_text(f"{wal_thread} 90\n{core} 30\n{LOOP};{READY} 10\n")
    assert profile_table.main([str(profile), "--ms-per-request", "0.2"]) == 0
    out = capsys.readouterr().out
    assert "| Raft core (raftkv.raft) | 150.0 |" in out  # 30 of 40 running samples of 200 µs
    assert "| Ready loop | 50.0 |" in out
    assert "40 running samples, 90 waiting samples dropped" in out
