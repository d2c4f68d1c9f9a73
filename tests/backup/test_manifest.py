"""The manifest: its JSON round trip, refusal of what is not a manifest, chain queries, and the
atomic replace: a writer process killed (SIGKILL) at arbitrary moments leaves a manifest that
reads, and is one of the versions written, every time."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from raftkv.backup.destination import DirDestination
from raftkv.backup.manifest import (
    MANIFEST_NAME,
    BackupEntry,
    Manifest,
    ManifestError,
    RecordedState,
    decode_manifest,
    encode_manifest,
    format_time,
    microsecond_at_or_after,
    parse_time,
    read_manifest_file,
    write_file_atomic,
)
from tests.cluster.harness import REPO


def entry(
    i: int, kind: str = "full", base: str = "", prev: str = "", ok: bool = True
) -> BackupEntry:
    return BackupEntry(
        id=f"b{i}",
        kind=kind,
        file=f"b{i}.zst",
        from_revision=i,
        to_revision=i + 1,
        sha256="ab" * 32,
        size_raw=10,
        size_compressed=5,
        started="2024-05-01T10:00:00.000000Z",
        finished="2024-05-01T10:00:01.000000Z",
        cut_time="2024-05-01T10:00:00.500000Z",
        base=base,
        prev=prev,
        state=RecordedState(i + 1, -1, 1234, "00"),
        verified=ok,
        verify_method="x",
    )


def test_round_trip_and_chain() -> None:
    m = Manifest([entry(0), entry(1, "delta", "b0", "b0"), entry(2, "delta", "b0", "b1")])
    m.put(entry(3, "delta", "b0", "b2", ok=False))
    m.put(entry(4, "delta", "b0", "b3"))  # after an unverified link: not replayable
    back = decode_manifest(encode_manifest(m), "mem")
    assert back == m
    assert [e.id for e in back.chain("b0")] == ["b1", "b2"]
    assert [e.id for e in back.chain("b0", verified_only=False)] == ["b1", "b2", "b3", "b4"]
    assert back.newest_verified_full() == entry(0)
    assert parse_time("2024-05-01T10:00:00.500000Z") == pytest.approx(1714557600.5)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "not a backup manifest"),
        (b"[]", "not a JSON object"),
        (b'{"version": 9, "backups": []}', "manifest version 9"),
        (b'{"version": 1}', "no backups list"),
        (b'{"version": 1, "backups": [{"id": "x"}]}', "entry without"),
        (b"\xff\xfe", "not a backup manifest"),
    ],
)
def test_refuses_what_is_not_a_manifest(data: bytes, reason: str) -> None:
    with pytest.raises(ManifestError, match=reason) as exc:
        decode_manifest(data, "/some/manifest.json")
    assert "/some/manifest.json" in str(exc.value)


def test_duplicate_ids_refused() -> None:
    raw = json.loads(encode_manifest(Manifest([entry(0)])))
    raw["backups"].append(raw["backups"][0])
    with pytest.raises(ManifestError, match="twice"):
        decode_manifest(json.dumps(raw).encode(), "m")


_WRITER = """
import sys
from raftkv.backup.manifest import Manifest, encode_manifest, write_file_atomic
from tests.backup.test_manifest import entry
path = sys.argv[1]
i = 0
while True:
    i += 1
    write_file_atomic(path, encode_manifest(Manifest([entry(j) for j in range(i % 40 + 1)])))
    if i == 3:
        print("ready", flush=True)
"""


def test_killed_writer_leaves_a_readable_manifest(tmp_path: Path) -> None:
    path = tmp_path / MANIFEST_NAME
    env = {**os.environ, "PYTHONPATH": f"{REPO / 'src'}{os.pathsep}{REPO}"}
    for round_ in range(8):
        proc = subprocess.Popen(
            [sys.executable, "-c", _WRITER, str(path)], stdout=subprocess.PIPE, env=env
        )
        try:
            assert proc.stdout is not None
            assert proc.stdout.readline() == b"ready\n"
            time.sleep(0.01 * round_)
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
            if proc.stdout is not None:
                proc.stdout.close()
        m = read_manifest_file(str(path))  # never a torn file
        assert 1 <= len(m.backups) <= 40
        assert [e.id for e in m.backups] == [f"b{j}" for j in range(len(m.backups))]
    # what a killed writer may leave is a temporary file, which the next start removes
    dest = DirDestination(str(tmp_path))
    dest.cleanup_incomplete()
    assert sorted(os.listdir(tmp_path)) == [MANIFEST_NAME]


def test_write_replaces_and_missing_reads_empty(tmp_path: Path) -> None:
    path = tmp_path / "m.json"
    assert read_manifest_file(str(path)) == Manifest()
    write_file_atomic(str(path), b"one")
    write_file_atomic(str(path), encode_manifest(Manifest([entry(1)])))
    assert read_manifest_file(str(path)).backups == [entry(1)]
    assert sorted(os.listdir(tmp_path)) == ["m.json"]


def test_a_cut_time_and_its_text_compare_alike() -> None:
    rng = random.Random(7)
    for _ in range(10_000):
        ts = 1.7e9 + rng.random() * 1e8
        cut = microsecond_at_or_after(ts)
        assert ts <= cut < ts + 2e-6
        assert parse_time(format_time(cut)) == cut
