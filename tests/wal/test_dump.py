"""Tests of ``python -m raftkv.wal dump``."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

from raftkv.raft.types import ConfState, Entry, EntryType, HardState
from raftkv.wal import WAL, WalSnapshot, encode_metadata
from raftkv.wal.dump import dump, find_wal_dir, main
from raftkv.wal.files import list_segments

SRC = Path(__file__).resolve().parents[2] / "src"


def make_wal(d: Path) -> None:
    with WAL.create(str(d), encode_metadata(0xA, 0xB), segment_size=1024) as w:
        w.save(HardState(2, 1, 3), [Entry(2, i, data=b"x" * 30) for i in range(1, 30)])
        w.save(None, [Entry(2, 30, EntryType.CONF_CHANGE, b"cc")])
        w.save_snapshot(WalSnapshot(3, 2, ConfState((1, 2), (3,))))


def test_dump_prints_every_record(tmp_path: Path) -> None:
    d = tmp_path / "member" / "wal"
    d.parent.mkdir()
    make_wal(d)
    assert find_wal_dir(str(tmp_path)) == str(d)
    out = io.StringIO()
    assert dump(str(d), out) == 0
    text = out.getvalue()
    assert "member_id=a cluster_id=b" in text
    assert "CONF_CHANGE data=2B" in text
    assert "vote=1 commit=3" in text
    assert "voters=[1, 2] learners=[3]" in text
    assert "30 entry record(s)" in text
    assert text.count("segment 0000") == len(list_segments(str(d))) > 1


def test_dump_reports_torn_tail_and_corruption(tmp_path: Path) -> None:
    d = tmp_path / "wal"
    make_wal(d)
    last = list_segments(str(d))[-1].path
    size = len(Path(last).read_bytes().rstrip(b"\0"))
    with open(last, "r+b") as f:
        f.seek(size + 8)
        f.write(b"\x01\x02\x03")  # junk after the last record
    out = io.StringIO()
    assert dump(str(d), out) == 0
    assert "torn tail at offset" in out.getvalue()
    first = list_segments(str(d))[0].path
    raw = bytearray(Path(first).read_bytes())
    raw[100] ^= 0xFF
    Path(first).write_bytes(bytes(raw))
    out = io.StringIO()
    assert dump(str(d), out) == 1
    assert f"CORRUPTION: wal: corrupt segment {first} at offset" in out.getvalue()


def test_main_as_module(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    make_wal(tmp_path / "wal")
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    proc = subprocess.run(
        [sys.executable, "-m", "raftkv.wal", "dump", "--data-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "ENTRY" in proc.stdout and "SNAPSHOT" in proc.stdout
    assert main(["dump", "--data-dir", str(tmp_path / "missing")]) == 2
    assert "no WAL found" in capsys.readouterr().err
    assert main(["dump", "--wal-dir", str(tmp_path / "wal")]) == 0
