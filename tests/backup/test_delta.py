"""Delta files: encode/decode round trips, damage refused with the one documented error, and
the merge of a full snapshot and deltas into an etcd-format snapshot that restores.

Hypothesis builds deltas of random revisions, events and lease tables; every encoding decodes
to the same delta, and any flipped byte, truncation or garbage decodes or raises
``DeltaFormatError`` and nothing else.  The merge is checked record by record and through the
real restore (``restore_snapshot``): the restored revision and keys are what the events say.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

from raftkv.backup.bbolt import BoltReader, write_bolt
from raftkv.backup.delta import (
    DELETE,
    PUT,
    Delta,
    DeltaFormatError,
    MergeError,
    RevisionEvents,
    decode_delta,
    decompress_delta,
    encode_delta,
    merge_snapshot,
    read_delta_file,
    write_delta_file,
)
from raftkv.backup.restore import RestoreOptions, restore_snapshot
from raftkv.backup.snapshot_file import open_snapshot
from raftkv.mvcc.revision import rev_to_bytes
from raftkv.proto import kv_pb2


def kv(key: bytes, value: bytes, rev: int, create: int, version: int, lease: int = 0) -> bytes:
    return kv_pb2.KeyValue(
        key=key, value=value, create_revision=create, mod_revision=rev, version=version, lease=lease
    ).SerializeToString()


@st.composite
def deltas(draw: st.DrawFn) -> Delta:
    start = draw(st.integers(0, 1 << 40))
    revs = sorted(set(draw(st.lists(st.integers(1, 500), max_size=12))))
    groups = []
    for r in revs:
        events = tuple(
            (
                draw(st.sampled_from((PUT, DELETE))),
                kv(
                    draw(st.binary(min_size=1, max_size=12)),
                    draw(st.binary(max_size=40)),
                    start + r,
                    1,
                    1,
                ),
            )
            for _ in range(draw(st.integers(1, 4)))
        )
        groups.append(RevisionEvents(start + r, draw(st.floats(0, 2e9)), events))
    end = start + (revs[-1] if revs else 0) + draw(st.integers(0, 3))
    leases = tuple(
        sorted(
            draw(
                st.dictionaries(st.integers(1, 1 << 62), st.integers(1, 10**6), max_size=5)
            ).items()
        )
    )
    return Delta(
        base=draw(st.text(max_size=20)),
        prev=draw(st.text(max_size=20)),
        from_revision=start,
        to_revision=end,
        created=draw(st.floats(0, 2e9)),
        cut_time=draw(st.floats(0, 2e9)),
        groups=tuple(groups),
        leases=leases,
    )


@settings(max_examples=150, deadline=None)
@given(deltas())
def test_round_trip(delta: Delta) -> None:
    assert decode_delta(encode_delta(delta)) == delta
    buf = io.BytesIO()
    write_delta_file(buf, delta)
    assert decode_delta(decompress_delta(buf.getvalue(), "f"), "f") == delta


@settings(max_examples=300, deadline=None)
@given(deltas(), st.data())
def test_damaged_raw_input_raises_only_the_documented_error(
    delta: Delta, data: st.DataObject
) -> None:
    raw = bytearray(encode_delta(delta))
    how = data.draw(st.sampled_from(("flip", "truncate", "garbage", "splice")))
    if how == "flip":
        pos = data.draw(st.integers(0, len(raw) - 1))
        raw[pos] ^= 1 << data.draw(st.integers(0, 7))
    elif how == "truncate":
        raw = raw[: data.draw(st.integers(0, len(raw) - 1))]
    elif how == "garbage":
        raw = bytearray(data.draw(st.binary(max_size=200)))
    else:
        raw += data.draw(st.binary(min_size=1, max_size=30))
    try:
        decode_delta(bytes(raw), "d")
    except DeltaFormatError as exc:
        assert exc.path == "d" and 0 <= exc.offset <= len(raw)
    else:
        assert how == "flip"  # only a flip may leave a decodable delta (e.g. inside a float)


@settings(max_examples=150, deadline=None)
@given(deltas(), st.data())
def test_damaged_compressed_file_is_refused(delta: Delta, data: st.DataObject) -> None:
    buf = io.BytesIO()
    write_delta_file(buf, delta)
    blob = bytearray(buf.getvalue())
    flipped = data.draw(st.booleans())
    if flipped:
        pos = data.draw(st.integers(0, len(blob) - 1))
        blob[pos] ^= 1 << data.draw(st.integers(0, 7))
    else:
        blob = blob[: data.draw(st.integers(0, len(blob) - 1))]
    try:
        got = decode_delta(decompress_delta(bytes(blob), "z"), "z")
    except DeltaFormatError:
        return
    # zstd's checksum covers the content, not every header bit: a flip there may be harmless
    assert flipped and got == delta


def test_file_errors_name_the_file_and_offset(tmp_path: Path) -> None:
    delta = Delta(
        "f",
        "f",
        10,
        12,
        1.0,
        2.0,
        (RevisionEvents(11, 1.5, ((PUT, kv(b"a", b"1", 11, 11, 1)),)),),
        ((7, 60),),
    )
    good = tmp_path / "good.delta.zst"
    with open(good, "wb") as f:
        write_delta_file(f, delta)
    assert read_delta_file(str(good)) == delta
    empty = tmp_path / "empty.delta.zst"
    empty.write_bytes(b"")
    with pytest.raises(DeltaFormatError, match="empty delta file") as exc:
        read_delta_file(str(empty))
    assert exc.value.path == str(empty)
    trunc = tmp_path / "trunc.delta.zst"
    trunc.write_bytes(good.read_bytes()[:-3])
    with pytest.raises(DeltaFormatError, match="truncated zstd frame"):
        read_delta_file(str(trunc))
    # an intact zstd frame around a damaged record: the offset points at the record
    raw = bytearray(encode_delta(delta))
    raw[30] ^= 0xFF
    inner = tmp_path / "inner.delta.zst"
    inner.write_bytes(zstandard.ZstdCompressor().compress(bytes(raw)))
    with pytest.raises(DeltaFormatError) as exc:
        read_delta_file(str(inner))
    assert str(exc.value).startswith(f"{inner}: offset 12:")


def test_encoder_refuses_out_of_order_revisions() -> None:
    bad = Delta(
        "f",
        "f",
        10,
        20,
        0.0,
        0.0,
        (RevisionEvents(10, 0.0, ((PUT, kv(b"a", b"", 10, 10, 1)),)),),
        (),
    )
    with pytest.raises(ValueError, match="out of order"):
        encode_delta(bad)


def _full_snapshot(path: Path) -> None:
    """A minimal etcd snapshot: keys a (rev 2) and b (rev 3), compacted nowhere, a lease."""
    keys = [
        (rev_to_bytes(2 << 32), kv(b"a", b"1", 2, 2, 1)),
        (rev_to_bytes(3 << 32), kv(b"b", b"2", 3, 3, 1)),
    ]
    with open(path, "w+b") as f:
        size = write_bolt(f, [(b"key", keys), (b"lease", []), (b"meta", [])])
        f.seek(0)
        digest = hashlib.sha256(f.read(size)).digest()
        f.write(digest)


def test_merge_then_restore(tmp_path: Path) -> None:
    full = tmp_path / "full.db"
    _full_snapshot(full)
    d1 = Delta(
        "full",
        "full",
        3,
        5,
        0.0,
        0.0,
        (
            RevisionEvents(
                4, 0.0, ((PUT, kv(b"a", b"x", 4, 2, 2)), (DELETE, kv(b"b", b"", 4, 0, 0)))
            ),
            RevisionEvents(5, 0.0, ((PUT, kv(b"c", b"3", 5, 5, 1, lease=99)),)),
        ),
        ((99, 600),),
    )
    merged = tmp_path / "merged.db"
    with open_snapshot(str(full)) as reader:
        summary = merge_snapshot(reader, 3, [d1], 5, d1.leases, str(merged))
    assert summary.revision == 5 and summary.events == 3
    with open_snapshot(str(merged)) as reader:
        keys = list(reader.items(b"key"))
        assert [k for k, _v in keys][2:] == [
            rev_to_bytes(4 << 32),
            rev_to_bytes((4 << 32) | 1, tombstone=True),
            rev_to_bytes(5 << 32),
        ]
        assert kv_pb2.KeyValue.FromString(keys[3][1]) == kv_pb2.KeyValue(key=b"b")
        assert len(list(reader.items(b"lease"))) == 1
    result = restore_snapshot(
        RestoreOptions(snapshot=str(merged), name="n", data_dir=str(tmp_path / "n.raftkv"))
    )
    assert result.state.revision == 5 and result.imported.leases == 1
    assert not result.verified  # a merge records no state hash of its own

    partial = tmp_path / "partial.db"
    with open_snapshot(str(full)) as reader:
        assert merge_snapshot(reader, 3, [d1], 4, (), str(partial)).revision == 4
    with pytest.raises(MergeError, match="does not continue"), open_snapshot(str(full)) as reader:
        merge_snapshot(reader, 2, [d1], 5, (), str(tmp_path / "gap.db"))
    with BoltReader(str(partial), length=(partial.stat().st_size - 32)) as r:
        assert r.count(b"key") == 4
