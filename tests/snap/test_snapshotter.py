"""Tests of raftkv.snap: snapshot files, corruption handling, WAL matching, retention."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from raftkv.raft.types import ConfState, Entry, HardState, Snapshot, SnapshotMetadata
from raftkv.snap import (
    SnapshotCorruptionError,
    Snapshotter,
    decode_snapshot_file,
    encode_snapshot_file,
    parse_snapshot_name,
    snapshot_name,
)
from raftkv.wal import WAL, WalSnapshot, valid_snapshot_entries


def snap(index: int, term: int = 1, data: bytes = b"state") -> Snapshot:
    return Snapshot(
        SnapshotMetadata(index, term, ConfState((1, 2, 3), (9,))), data + b"@%d" % index
    )


def test_save_and_load_round_trip(tmp_path: Path) -> None:
    s = Snapshotter(str(tmp_path / "snap"))
    path = s.save(snap(10, 2))
    assert path is not None and os.path.basename(path) == snapshot_name(2, 10)
    assert os.path.basename(path) == "0000000000000002-000000000000000a.snap"
    assert s.load(path) == snap(10, 2)
    assert s.load_newest() == snap(10, 2)
    assert not list((tmp_path / "snap").glob("*.tmp"))
    assert s.save(Snapshot()) is None  # an empty snapshot is not written
    assert s.names() == [snapshot_name(2, 10)]


def test_names_are_ordered_newest_first_by_term_then_index(tmp_path: Path) -> None:
    s = Snapshotter(str(tmp_path), retention=0)
    for term, index in [(1, 300), (2, 20), (1, 5), (2, 100)]:
        s.save(snap(index, term))
    assert [parse_snapshot_name(n) for n in s.names()] == [(2, 100), (2, 20), (1, 300), (1, 5)]
    assert parse_snapshot_name("x.snap") is None


def test_retention_purges_oldest(tmp_path: Path) -> None:
    s = Snapshotter(str(tmp_path), retention=3)
    for i in range(1, 7):
        s.save(snap(i * 10))
    assert [parse_snapshot_name(n) for n in s.names()] == [(1, 60), (1, 50), (1, 40)]
    with pytest.raises(ValueError):
        Snapshotter(str(tmp_path), retention=-1)


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda b: b[:10], "too short"),
        (lambda b: b"XXXXXXXX" + b[8:], "bad magic"),
        (lambda b: b[:-1] + bytes([b[-1] ^ 1]), "crc mismatch"),
        (lambda b: b[:-3], "crc mismatch"),
        (lambda b: b + b"extra", "crc mismatch"),
    ],
)
def test_load_rejects_corrupt_files_naming_the_path(
    tmp_path: Path, mutate: object, reason: str
) -> None:
    s = Snapshotter(str(tmp_path))
    path = s.save(snap(5))
    assert path is not None
    raw = Path(path).read_bytes()
    Path(path).write_bytes(mutate(raw))  # type: ignore[operator]
    with pytest.raises(SnapshotCorruptionError, match=reason) as info:
        s.load(path)
    assert info.value.path == path and path in str(info.value)


def test_load_rejects_name_that_disagrees_with_metadata(tmp_path: Path) -> None:
    s = Snapshotter(str(tmp_path))
    path = s.save(snap(5))
    assert path is not None
    wrong = tmp_path / snapshot_name(1, 6)
    os.rename(path, wrong)
    with pytest.raises(SnapshotCorruptionError, match="disagrees"):
        s.load(str(wrong))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300), st.booleans())
def test_decoder_returns_snapshot_or_corruption_error(data: bytes, with_magic: bool) -> None:
    raw = (b"RKVSNAP\x00" + data) if with_magic else data
    try:
        result = decode_snapshot_file("x.snap", raw)
    except SnapshotCorruptionError as exc:
        assert exc.path == "x.snap"
        return
    assert isinstance(result, Snapshot)


def test_encoded_file_decodes_and_any_flip_is_detected() -> None:
    raw = encode_snapshot_file(snap(3))
    assert decode_snapshot_file("f", raw) == snap(3)
    for pos in range(len(raw)):
        flipped = bytearray(raw)
        flipped[pos] ^= 0x01
        with pytest.raises(SnapshotCorruptionError):
            decode_snapshot_file("f", bytes(flipped))


def test_load_newest_available_requires_a_wal_marker_and_skips_broken(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    s = Snapshotter(str(tmp_path / "snap"))
    for i in (10, 20, 30):
        s.save(snap(i))
    # 30 has no WAL marker (crash between the snapshot file and the marker)
    walsnaps = [WalSnapshot(0, 0), WalSnapshot(10, 1), WalSnapshot(20, 1)]
    assert s.load_newest_available(walsnaps) == snap(20)
    # corrupt 20: it is renamed *.broken, reported, and 10 is used instead
    p20 = tmp_path / "snap" / snapshot_name(1, 20)
    p20.write_bytes(p20.read_bytes()[:-1])
    with caplog.at_level(logging.ERROR, logger="raftkv.snap"):
        assert s.load_newest_available(walsnaps) == snap(10)
    assert not p20.exists() and (tmp_path / "snap" / (p20.name + ".broken")).exists()
    assert str(p20) in caplog.text
    assert s.load_newest_available([WalSnapshot(0, 0)]) is None
    assert s.load_newest_available([WalSnapshot(10, 2)]) is None  # term must match too


def test_stale_temporaries_are_removed(tmp_path: Path) -> None:
    (tmp_path / (snapshot_name(1, 1) + ".tmp")).write_bytes(b"partial")
    s = Snapshotter(str(tmp_path))
    assert not list(tmp_path.glob("*.tmp")) and s.names() == []


def test_with_wal_restart_flow(tmp_path: Path) -> None:
    """The server's restart sequence: WAL markers pick the snapshot, the WAL
    replays from it."""
    wal_dir, snap_dir = str(tmp_path / "wal"), str(tmp_path / "snap")
    s = Snapshotter(snap_dir)
    with WAL.create(wal_dir, b"m", segment_size=4096) as w:
        w.save(HardState(1, 1, 50), [Entry(1, i, data=b"e%d" % i) for i in range(1, 61)])
        s.save(snap(50))
        w.save_snapshot(WalSnapshot(50, 1, snap(50).metadata.conf_state))
        w.release_lock_to(50)
    newest = s.load_newest_available(valid_snapshot_entries(wal_dir))
    assert newest == snap(50)
    meta = newest.metadata
    with WAL.open(wal_dir, WalSnapshot(meta.index, meta.term, meta.conf_state)) as w:
        _, hs, entries = w.read_all()
    assert [e.index for e in entries] == list(range(51, 61)) and hs.commit == 50
