"""Tests of the WAL's normal life: create, save, cut, reopen, snapshots, release."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from raftkv.raft.types import ConfState, Entry, EntryType, HardState
from raftkv.wal import (
    WAL,
    WALClosedError,
    WALError,
    WALExistsError,
    WALGapError,
    WALLockedError,
    WALNotFoundError,
    WalSnapshot,
    WALSnapshotMismatchError,
    WALSnapshotNotFoundError,
    decode_metadata,
    encode_metadata,
    valid_snapshot_entries,
)
from raftkv.wal.files import list_segments, parse_segment_name, segment_name
from raftkv.wal.record import HEADER_SIZE, RecordType, scan_segment

SEG = 4096


def ents(lo: int, hi: int, term: int = 1, size: int = 40) -> list[Entry]:
    return [Entry(term, i, data=f"{term}:{i}:".encode().ljust(size, b".")) for i in range(lo, hi)]


def test_create_then_reopen_empty(tmp_path: Path) -> None:
    d = str(tmp_path / "wal")
    w = WAL.create(d, b"meta", segment_size=SEG)
    assert w.read_all() == (b"meta", HardState(), [])
    w.close()
    assert [os.path.basename(p) for p in map(str, sorted(Path(d).iterdir()))] == [
        segment_name(0, 0)
    ]
    assert os.path.getsize(os.path.join(d, segment_name(0, 0))) == SEG  # preallocated
    with WAL.open(d) as w2:
        assert w2.read_all() == (b"meta", HardState(), [])
        with pytest.raises(WALError, match="once"):
            w2.read_all()


def test_create_refuses_existing_wal_and_open_requires_one(tmp_path: Path) -> None:
    d = str(tmp_path / "wal")
    WAL.create(d, b"m", segment_size=SEG).close()
    with pytest.raises(WALExistsError):
        WAL.create(d, b"m", segment_size=SEG)
    with pytest.raises(WALNotFoundError):
        WAL.open(str(tmp_path / "nothing"))
    empty = tmp_path / "empty"
    empty.mkdir()
    WAL.create(str(empty), b"m", segment_size=SEG).close()  # an empty directory is fine
    assert not (tmp_path / "empty.tmp").exists()


def test_save_and_replay_entries_and_hard_state(tmp_path: Path) -> None:
    d = str(tmp_path / "wal")
    with WAL.create(d, b"m", segment_size=SEG) as w:
        w.save(HardState(1, 1, 0), ents(1, 4))
        w.save(HardState(1, 1, 3), [])
        w.save(None, ents(4, 6))
        w.save(HardState(), [])  # an empty hard state is not written
        assert w.last_index == 5
    with WAL.open(d, segment_size=SEG) as w:
        md, hs, got = w.read_all()
    assert md == b"m"
    assert hs == HardState(1, 1, 3)
    assert got == ents(1, 6)


def test_later_entries_overwrite_the_log_suffix(tmp_path: Path) -> None:
    d = str(tmp_path / "wal")
    with WAL.create(d, b"m", segment_size=SEG) as w:
        w.save(HardState(1, 1, 1), ents(1, 6, term=1))
        w.save(HardState(2, 2, 1), ents(3, 5, term=2))  # new leader truncates at 3
    with WAL.open(d) as w:
        _, hs, got = w.read_all()
    assert got == ents(1, 3, term=1) + ents(3, 5, term=2)
    assert hs == HardState(2, 2, 1)


def test_entry_types_and_large_data_survive(tmp_path: Path) -> None:
    d = str(tmp_path / "wal")
    big = Entry(1, 1, EntryType.NORMAL, os.urandom(3 * SEG))  # larger than a segment
    cc = Entry(1, 2, EntryType.CONF_CHANGE, b"cc")
    with WAL.create(d, b"m", segment_size=SEG) as w:
        w.save(HardState(1, 0, 2), [big, cc])
        w.save(None, [Entry(1, 3)])
    with WAL.open(d, segment_size=SEG) as w:
        assert w.read_all()[2] == [big, cc, Entry(1, 3)]
        assert len(w.segments) == 2


def test_cut_chains_segments_and_names_them_by_next_index(tmp_path: Path) -> None:
    d = str(tmp_path / "wal")
    with WAL.create(d, b"m", segment_size=SEG) as w:
        for i in range(1, 301):
            w.save(HardState(1, 1, i - 1), ents(i, i + 1))
    segs = list_segments(d)
    assert len(segs) > 3
    assert [s.seq for s in segs] == list(range(len(segs)))
    prev_crc = 0
    for pos, seg in enumerate(segs):
        data = Path(seg.path).read_bytes()
        scan = scan_segment(data, prev_crc)
        assert scan.damage is None
        kinds = [r.type for r in scan.records]
        assert kinds[:3] == [RecordType.CRC, RecordType.METADATA, RecordType.HARD_STATE] or (
            pos == 0 and kinds[:3] == [RecordType.CRC, RecordType.METADATA, RecordType.SNAPSHOT]
        )
        first_entry = next(r for r in scan.records if r.type == RecordType.ENTRY)
        index = int.from_bytes(first_entry.data[8:16], "little")
        assert index == (seg.index if pos else 1)
        prev_crc = scan.records[-1].crc
        if pos < len(segs) - 1:
            assert len(data) == scan.end  # closed segments are truncated
    with WAL.open(d, segment_size=SEG) as w:
        _, hs, got = w.read_all()
    assert got == ents(1, 301) and hs == HardState(1, 1, 299)


def test_snapshot_markers_select_the_replay_start(tmp_path: Path) -> None:
    d = str(tmp_path / "wal")
    cs = ConfState((1, 2, 3), (4,))
    with WAL.create(d, b"m", segment_size=SEG) as w:
        w.save(HardState(1, 1, 100), ents(1, 101))
        w.save_snapshot(WalSnapshot(50, 1, cs))
        w.save(HardState(1, 1, 200), ents(101, 201))
    with WAL.open(d, WalSnapshot(50, 1, cs), segment_size=SEG) as w:
        _, hs, got = w.read_all()
    assert got == ents(51, 201) and hs == HardState(1, 1, 200)
    with pytest.raises(WALSnapshotMismatchError, match="term 1"):
        WAL.open(d, WalSnapshot(50, 2))
    with pytest.raises(WALSnapshotNotFoundError):
        WAL.open(d, WalSnapshot(60, 1))
    assert valid_snapshot_entries(d) == [WalSnapshot(0, 0), WalSnapshot(50, 1, cs)]
    # the directory lock was released by the failed opens
    WAL.open(d, WalSnapshot(50, 1, cs)).close()


def test_valid_snapshot_entries_ignores_uncommitted_markers(tmp_path: Path) -> None:
    d = str(tmp_path / "wal")
    with WAL.create(d, b"m", segment_size=SEG) as w:
        w.save(HardState(1, 1, 5), ents(1, 11))
        w.save_snapshot(WalSnapshot(5, 1))
        w.save_snapshot(WalSnapshot(10, 1))  # not yet committed by the hard state
    assert valid_snapshot_entries(d) == [WalSnapshot(0, 0), WalSnapshot(5, 1)]


def test_valid_snapshot_entries_after_crash_between_marker_and_hard_state(
    tmp_path: Path,
) -> None:
    """etcd's rule: a marker counts only if the WAL's last hard state commits it."""
    d = str(tmp_path / "wal")
    with WAL.create(d, b"m", segment_size=SEG) as w:
        w.save(HardState(1, 1, 5), ents(1, 11))
        w.save_snapshot(WalSnapshot(10, 1))
        w.save(HardState(1, 1, 10), [])
    assert valid_snapshot_entries(d) == [WalSnapshot(0, 0), WalSnapshot(10, 1)]
    # The crash tore the hard state record written after the marker.
    tail = list_segments(d)[-1].path
    with open(tail, "rb") as f:
        data = f.read()
    scan = scan_segment(data, None)
    last = scan.records[-1]
    assert last.type == RecordType.HARD_STATE
    with open(tail, "r+b") as f:  # only the record's header reached the disk
        f.seek(last.offset + HEADER_SIZE)
        f.write(bytes(scan.end - last.offset - HEADER_SIZE))
    assert valid_snapshot_entries(d) == [WalSnapshot(0, 0)]
    # The last hard state decides even when the marker is in an older segment.
    with WAL.open(d, WalSnapshot(0, 0), segment_size=SEG) as w:
        w.read_all()
        w.save(HardState(1, 1, 10), ents(11, 200))
    assert len(list_segments(d)) > 1
    assert valid_snapshot_entries(d) == [WalSnapshot(0, 0), WalSnapshot(10, 1)]


def test_release_lock_to_drops_only_wholly_older_segments(tmp_path: Path) -> None:
    d = str(tmp_path / "wal")
    with WAL.create(d, b"m", segment_size=SEG) as w:
        for i in range(1, 301, 10):
            w.save(HardState(1, 1, i + 9), ents(i, i + 10))
        w.save_snapshot(WalSnapshot(150, 1))
        before = list_segments(d)
        w.release_lock_to(150)
        after = list_segments(d)
        keep = [s for s in before if s.index <= 150][-1]
        assert after[0] == keep and after[-1] == before[-1]
        assert len(after) < len(before)
        w.release_lock_to(10**9)  # never drops the tail
        assert list_segments(d)[-1] == before[-1]
        w.save(None, ents(301, 303))
    tail = list_segments(d)
    assert len(tail) == 1
    with pytest.raises(WALNotFoundError, match="covers snapshot index 150"):
        WAL.open(d, WalSnapshot(150, 1))


def test_open_after_release_replays_from_snapshot(tmp_path: Path) -> None:
    d = str(tmp_path / "wal")
    with WAL.create(d, b"m", segment_size=SEG) as w:
        w.save(HardState(1, 1, 200), ents(1, 201))
        w.save_snapshot(WalSnapshot(150, 1))
        w.release_lock_to(150)
        w.save(HardState(1, 1, 210), ents(201, 211))
    with WAL.open(d, WalSnapshot(150, 1), segment_size=SEG) as w:
        md, hs, got = w.read_all()
    assert md == b"m" and hs == HardState(1, 1, 210) and got == ents(151, 211)


def test_directory_is_locked_while_open(tmp_path: Path) -> None:
    d = str(tmp_path / "wal")
    w = WAL.create(d, b"m", segment_size=SEG)
    with pytest.raises(WALLockedError):
        WAL.open(d)
    w.close()
    w.close()  # idempotent
    with pytest.raises(WALClosedError):
        w.save(None, ents(1, 2))
    WAL.open(d).close()


def test_write_then_sync_in_a_thread(tmp_path: Path) -> None:
    d = str(tmp_path / "wal")
    with WAL.create(d, b"m", segment_size=SEG) as w:
        for i in range(1, 200, 20):
            w.write(HardState(1, 1, i), ents(i, i + 20))
            t = threading.Thread(target=w.sync)
            t.start()
            t.join()
        w.save(None, ents(200, 201), sync=False)
    with WAL.open(d) as w:
        _, hs, got = w.read_all()
    assert got == ents(1, 201) and hs == HardState(1, 1, 181)
    assert len(list_segments(d)) > 1


def test_unsynced_saves_still_cut_at_the_size_limit(tmp_path: Path) -> None:
    d = str(tmp_path / "wal")
    with WAL.create(d, b"m", segment_size=SEG) as w:
        for i in range(1, 200):
            w.save(None, ents(i, i + 1), sync=False)
        assert len(w.segments) > 1
    with WAL.open(d) as w:
        assert w.read_all()[2] == ents(1, 200)


def test_stale_temporary_segment_is_removed_on_open(tmp_path: Path) -> None:
    d = str(tmp_path / "wal")
    WAL.create(d, b"m", segment_size=SEG).close()
    stale = Path(d) / (segment_name(1, 5) + ".tmp")
    stale.write_bytes(b"half written")
    with WAL.open(d) as w:
        assert w.read_all()[0] == b"m"
    assert not stale.exists()


def test_metadata_helpers_and_names() -> None:
    raw = encode_metadata(0x1234, 0xABCD)
    assert decode_metadata(raw) == (0x1234, 0xABCD)
    assert decode_metadata(b"short") is None
    assert segment_name(1, 0x10) == "0000000000000001-0000000000000010.wal"
    assert parse_segment_name("0000000000000001-0000000000000010.wal") == (1, 16)
    assert parse_segment_name("0000000000000001-0000000000000010.wal.broken") is None


def test_sequence_gap_is_corruption(tmp_path: Path) -> None:
    from raftkv.wal import WALCorruptionError

    d = str(tmp_path / "wal")
    with WAL.create(d, b"m", segment_size=SEG) as w:
        w.save(None, ents(1, 300))
        w.save(None, ents(300, 600))
        w.save(None, ents(600, 601))
    segs = list_segments(d)
    assert len(segs) == 3
    os.remove(segs[1].path)
    with pytest.raises(WALCorruptionError, match="sequence gap") as info:
        WAL.open(d)
    assert info.value.path == segs[2].path


def test_gaps_are_refused_before_anything_is_written(tmp_path: Path) -> None:
    d = str(tmp_path / "wal")
    with WAL.create(d, b"m", segment_size=SEG) as w:
        w.save(None, ents(1, 3))
        with pytest.raises(ValueError, match="gap after index 2"):
            w.save(None, ents(4, 5))
        with pytest.raises(ValueError, match="not consecutive"):
            w.save(None, [*ents(3, 4), *ents(5, 6)])
        with pytest.raises(ValueError, match="not encodable"):
            w.save(None, [Entry(-1, 3)])
        # bootstrapping from a snapshot: marker first, then the entries after it
        w.save_snapshot(WalSnapshot(10, 1))
        w.save(None, ents(11, 13))
    with WAL.open(d, WalSnapshot(10, 1)) as w:
        assert w.read_all()[2] == ents(11, 13)
    with pytest.raises(WALGapError, match=r"cannot fill 3\.\.10"):
        WAL.open(d)  # entries 3..10 only exist inside the snapshot at 10
