"""Torn tails are repaired; corruption before the tail is reported with file and offset.

Property tests feed the WAL reader random bytes, random truncations and random
byte flips: opening either succeeds with a prefix of what was written or raises
WALCorruptionError, nothing else, and never silently drops a record that is
followed by a valid one.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from raftkv.raft.types import Entry, HardState
from raftkv.wal import WAL, WALCorruptionError
from raftkv.wal.files import list_segments, segment_name
from raftkv.wal.record import Record, RecordType, append_entries, scan_segment

SEG = 2048
PROPS = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def ents(lo: int, hi: int) -> list[Entry]:
    return [Entry(1, i, data=f"entry-{i}".encode().ljust(40, b"#")) for i in range(lo, hi)]


@dataclass
class Layout:
    """A written WAL and the frames of its segments."""

    dir: Path
    segments: list[Path]
    records: list[list[Record]]
    ends: list[int]


def build(dirpath: Path, n: int = 60, batch: int = 3) -> Layout:
    with WAL.create(str(dirpath), b"meta", segment_size=SEG) as w:
        for i in range(1, n + 1, batch):
            last_batch = i + batch > n
            w.save(None if last_batch else HardState(1, 1, i), ents(i, min(i + batch, n + 1)))
    segs = [Path(s.path) for s in list_segments(str(dirpath))]
    records, ends = [], []
    for p in segs:
        scan = scan_segment(p.read_bytes(), None)
        assert scan.damage is None
        records.append(scan.records)
        ends.append(scan.end)
    return Layout(dirpath, segs, records, ends)


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Layout:
    layout = build(tmp_path_factory.mktemp("base") / "wal")
    assert len(layout.segments) >= 3
    return layout


@pytest.fixture
def copy(base: Layout) -> Iterator[Path]:
    with tempfile.TemporaryDirectory() as tmp:
        dst = Path(tmp) / "wal"
        shutil.copytree(base.dir, dst)
        yield dst


def fresh_copy(base: Layout) -> tuple[tempfile.TemporaryDirectory[str], Path]:
    tmp = tempfile.TemporaryDirectory()
    dst = Path(tmp.name) / "wal"
    shutil.copytree(base.dir, dst)
    return tmp, dst


def read_entries(d: Path) -> tuple[HardState, list[Entry]]:
    with WAL.open(str(d), segment_size=SEG) as w:
        _, hs, got = w.read_all()
    return hs, got


def frame_end(rec: Record) -> int:
    """End of the record's CRC (start of its padding)."""
    return rec.offset + 13 + len(rec.data) + 4


def padded_end(rec: Record) -> int:
    """End of the record's frame, padding included."""
    return rec.offset + 8 + ((len(rec.data) + 9 + 7) & ~7)


def entry_records(layout: Layout, seg: int) -> list[Record]:
    return [r for r in layout.records[seg] if r.type == RecordType.ENTRY]


# -- torn tails -----------------------------------------------------------------


def test_truncated_last_record_is_repaired_with_broken_copy(base: Layout, copy: Path) -> None:
    last = copy / base.segments[-1].name
    original = last.read_bytes()
    rec = entry_records(base, -1)[-1]
    with open(last, "r+b") as f:
        f.truncate(rec.offset + 20)
    _, got = read_entries(copy)
    assert got == ents(1, 60)  # entry 60 lost: it was being written
    assert (copy / (last.name + ".broken")).read_bytes() == original[: rec.offset + 20]
    assert last.stat().st_size == SEG  # preallocated again
    # the repaired WAL accepts appends and replays them
    with WAL.open(str(copy), segment_size=SEG) as w:
        w.read_all()
        w.save(HardState(1, 1, 61), ents(60, 62))
    assert read_entries(copy)[1] == ents(1, 62)


@pytest.mark.parametrize("damage", ["zero_second_half", "zero_all", "garbage_tail", "junk_after"])
def test_torn_tail_shapes_are_repaired(base: Layout, copy: Path, damage: str) -> None:
    last = copy / base.segments[-1].name
    rec = entry_records(base, -1)[-1]
    data = bytearray(last.read_bytes())
    start, end = rec.offset, frame_end(rec)
    if damage == "zero_second_half":
        data[(start + end) // 2 : end] = bytes(end - (start + end) // 2)
    elif damage == "zero_all":
        data[start:end] = bytes(end - start)
    elif damage == "garbage_tail":
        data[start + 8 : end] = os.urandom(end - start - 8)
    else:  # a valid tail, then junk in the preallocated space
        start = base.ends[-1] + 40
        data[start : start + 100] = os.urandom(100)
    last.write_bytes(bytes(data))
    expected = ents(1, 61) if damage == "junk_after" else ents(1, 60)
    assert read_entries(copy)[1] == expected
    # a wholly zeroed record is indistinguishable from never written: nothing to repair
    assert (copy / (last.name + ".broken")).exists() == (damage != "zero_all")
    with WAL.open(str(copy), segment_size=SEG) as w:
        w.read_all()
        w.save(None, [Entry(1, len(expected) + 1, data=b"x" * 300)])
    assert read_entries(copy)[1] == [*expected, Entry(1, len(expected) + 1, data=b"x" * 300)]


# -- corruption before the tail -------------------------------------------------------


def test_flip_in_middle_of_last_segment_names_file_and_offset(base: Layout, copy: Path) -> None:
    last = copy / base.segments[-1].name
    rec = entry_records(base, -1)[1]
    data = bytearray(last.read_bytes())
    data[rec.offset + 20] ^= 0x40
    last.write_bytes(bytes(data))
    with pytest.raises(WALCorruptionError) as info:
        WAL.open(str(copy), segment_size=SEG)
    err = info.value
    assert err.path == str(last) and err.offset == rec.offset
    assert f"{last} at offset {rec.offset}" in str(err)
    assert last.read_bytes() == bytes(data)  # nothing was modified
    assert not (copy / (last.name + ".broken")).exists()


def test_corrupt_length_field_before_valid_records(base: Layout, copy: Path) -> None:
    last = copy / base.segments[-1].name
    rec = entry_records(base, -1)[0]
    data = bytearray(last.read_bytes())
    data[rec.offset + 3] ^= 0x01  # length now claims a larger record
    last.write_bytes(bytes(data))
    with pytest.raises(WALCorruptionError, match="valid record follows") as info:
        WAL.open(str(copy), segment_size=SEG)
    assert info.value.offset == rec.offset


@pytest.mark.parametrize("seg", [0, 1])
def test_flip_in_non_last_segment_is_corruption(base: Layout, copy: Path, seg: int) -> None:
    path = copy / base.segments[seg].name
    rec = base.records[seg][-1]  # even the last record of a closed segment
    data = bytearray(path.read_bytes())
    data[rec.offset + 14] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(WALCorruptionError, match="not the last segment") as info:
        WAL.open(str(copy), segment_size=SEG)
    assert info.value.path == str(path) and info.value.offset == rec.offset


def test_truncated_non_last_segment_is_corruption(base: Layout, copy: Path) -> None:
    path = copy / base.segments[1].name
    rec = base.records[1][-1]
    with open(path, "r+b") as f:
        f.truncate(rec.offset + 10)
    with pytest.raises(WALCorruptionError) as info:
        WAL.open(str(copy), segment_size=SEG)
    assert info.value.path == str(path) and info.value.offset == rec.offset


def test_chain_break_is_corruption(base: Layout, copy: Path) -> None:
    """A self-consistent record that does not link to its predecessor."""
    last = copy / base.segments[-1].name
    recs = entry_records(base, -1)
    victim = recs[-1]
    forged = bytearray()
    append_entries(forged, ents(60, 61), prev=0xDEADBEEF)
    data = bytearray(last.read_bytes())
    data[victim.offset : victim.offset + len(forged)] = forged
    last.write_bytes(bytes(data))
    with pytest.raises(WALCorruptionError, match="chain broken") as info:
        WAL.open(str(copy), segment_size=SEG)
    assert info.value.offset == victim.offset


# -- properties -------------------------------------------------------------------------


@PROPS
@given(data=st.binary(max_size=600), keep_header=st.booleans())
def test_random_segment_bytes_open_or_corruption_error(data: bytes, keep_header: bool) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp) / "wal"
        WAL.create(str(d), b"meta", segment_size=256).close()
        seg = d / segment_name(0, 0)
        header = seg.read_bytes().rstrip(b"\0") if keep_header else b""
        header += b"\0" * (-len(header) % 8)
        seg.write_bytes(header + data)
        try:
            with WAL.open(str(d), segment_size=256) as w:
                md, _, got = w.read_all()
        except WALCorruptionError as exc:
            assert exc.path == str(seg) and exc.offset is not None
            assert exc.offset >= 0
            return
        assert md == b"meta" and keep_header and got == []


@PROPS
@given(st.data())
def test_random_truncation_of_last_segment_keeps_a_prefix(
    base: Layout, data: st.DataObject
) -> None:
    recs = base.records[-1]
    first_end = padded_end(recs[0])
    cut = data.draw(st.integers(first_end, base.ends[-1]))
    tmp, d = fresh_copy(base)
    with tmp:
        last = d / base.segments[-1].name
        with open(last, "r+b") as f:
            f.truncate(cut)
        _, got = read_entries(d)
        survivors = [r for r in entry_records(base, -1) if padded_end(r) <= cut]
        expected_last = 60 - len(entry_records(base, -1)) + len(survivors)
        assert got == ents(1, expected_last + 1)


@PROPS
@given(st.data())
def test_random_byte_flip_in_last_segment(base: Layout, data: st.DataObject) -> None:
    recs = base.records[-1]
    pos = data.draw(st.integers(0, base.ends[-1] - 1))
    bit = data.draw(st.integers(0, 7))
    hit = next(r for r in recs if r.offset <= pos < padded_end(r))
    tmp, d = fresh_copy(base)
    with tmp:
        last = d / base.segments[-1].name
        raw = bytearray(last.read_bytes())
        raw[pos] ^= 1 << bit
        last.write_bytes(bytes(raw))
        in_padding = pos >= frame_end(hit)
        try:
            _, got = read_entries(d)
        except WALCorruptionError as exc:
            assert not in_padding
            assert exc.path == str(last)
            assert exc.offset == hit.offset or hit is recs[0]
            return
        if in_padding:
            assert got == ents(1, 61)
        else:  # only the very last record may be treated as torn
            assert hit is recs[-1]
            assert got == ents(1, 60)
