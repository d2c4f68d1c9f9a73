"""Shared fixtures for the MVCC tests: a fresh LMDB backend and store per test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from raftkv.mvcc import Backend, BackendConfig, KVStore

SMALL_MAP = 64 * 1024 * 1024


def open_store(path: Path, **kwargs: int) -> KVStore:
    return KVStore(Backend(path, BackendConfig(map_size=SMALL_MAP, sync_mode="nosync")), **kwargs)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[KVStore]:
    s = open_store(tmp_path / "db")
    yield s
    s.backend.close()
