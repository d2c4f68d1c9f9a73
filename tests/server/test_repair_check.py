"""Repair's check of a fetched backend (``_inspect_backend``): every stored value is verified
with the check a follower makes of a received snapshot (``raftkv.mvcc.backend.verify_file``)
before anything else is read from it (real LMDB in a temporary dir)."""

from __future__ import annotations

from pathlib import Path

import pytest

from raftkv.mvcc.backend import BUCKET_KEY, Backend, BackendConfig, flip_last_byte, seal
from raftkv.server.repair import RepairError, _inspect_backend

CONFIG = BackendConfig(map_size=64 << 20)


def fetched(workdir: Path, *, flip: bool) -> None:
    """A fetched backend (``workdir/data.mdb``) without a consistent index, holding one key
    whose stored value has its last byte flipped when ``flip``."""
    backend = Backend(workdir, CONFIG)
    stored = seal(b"k1", b"v1")
    with backend.env.begin(write=True) as txn:
        txn.put(b"k1", flip_last_byte(stored) if flip else stored, db=backend.db(BUCKET_KEY))
    backend.close()


def test_a_fetched_backend_with_a_corrupt_value_is_refused(tmp_path: Path) -> None:
    fetched(tmp_path, flip=True)
    with pytest.raises(
        RepairError, match=r"fetched backend is corrupt: .*bucket 'key' at key 6b31"
    ):
        _inspect_backend(str(tmp_path), CONFIG)


def test_a_fetched_backend_whose_values_pass_is_read_on(tmp_path: Path) -> None:
    fetched(tmp_path, flip=False)
    with pytest.raises(RepairError, match="fetched backend has no consistent index"):
        _inspect_backend(str(tmp_path), CONFIG)
