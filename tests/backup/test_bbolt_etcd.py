"""The bbolt reader and writer against a real etcd 3.4.

A real etcd takes ~2000 keys of varied sizes (some values larger than a page, so the backend
has overflow pages; some keys written in one txn, so revisions share a main revision; a few
keys on leases; overwrites, a delete and a compaction), then ``etcdctl snapshot save``. The
reader must pass check() on that file and give back exactly what etcd serves. The writer's
copy of it must satisfy etcd itself: the same ``snapshot status`` hash, revision and key count,
a successful ``snapshot restore``, and an etcd started on the restored directory serving every
key with the same value, revisions, version and lease.

Every process is killed in a ``finally``; ports come from ``free_ports``; waits are bounded.
"""

from __future__ import annotations

import base64
import hashlib
import json
import random
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from raftkv.backup.bbolt import BoltReader, write_bolt
from raftkv.proto import kv_pb2, rpc_pb2, rpc_pb2_grpc
from tests.backup.support import EtcdCluster
from tests.cluster.harness import require_etcdctl
from tests.compat.servers import Target, require_etcd, start_etcd

Kv = dict[str, Any]  # one entry of `etcdctl get -w json`'s "kvs", defaults filled in


def _etcdctl(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    res = subprocess.run(
        [require_etcdctl(), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={"ETCDCTL_API": "3", "PATH": "/usr/bin:/bin"},
        check=False,
    )
    assert res.returncode == 0, f"etcdctl {args}: {res.stderr[-2000:]}"
    return res


def _ok(res: subprocess.CompletedProcess[bytes]) -> str:
    assert res.returncode == 0, res.stderr.decode(errors="replace")[-2000:]
    return res.stdout.decode()


def _all_kvs(target: Target) -> dict[bytes, Kv]:
    out = json.loads(_ok(target.ctl("get", "", "--prefix", "-w", "json", timeout=60)))
    kvs: dict[bytes, Kv] = {}
    for kv in out.get("kvs", []):
        key = base64.b64decode(kv["key"])
        kvs[key] = {
            "value": base64.b64decode(kv.get("value", "")),
            "create_revision": int(kv.get("create_revision", 0)),
            "mod_revision": int(kv.get("mod_revision", 0)),
            "version": int(kv.get("version", 0)),
            "lease": int(kv.get("lease", 0)),
        }
    return kvs


def _populate(target: Target) -> None:
    rng = random.Random(2024)
    keys = sorted(
        {
            f"/registry/{rng.choice('abcde')}/{rng.randbytes(rng.randint(1, 60)).hex()}"
            for _ in range(2000)
        }
    )

    def value(i: int) -> bytes:
        if i % 97 == 0:
            return rng.randbytes(rng.randint(4097, 20000))  # overflow pages in etcd's backend
        return rng.randbytes(rng.randint(0, 400))

    with grpc.insecure_channel(target.endpoints[0]) as channel:
        kv = rpc_pb2_grpc.KVStub(channel)
        batch = keys[:1500]
        for start in range(0, len(batch), 100):  # one txn: one main revision, many sub revisions
            ops = [
                rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=k.encode(), value=value(i)))
                for i, k in enumerate(batch[start : start + 100], start)
            ]
            kv.Txn(rpc_pb2.TxnRequest(success=ops), timeout=10)
        for i, k in enumerate(keys[1500:], 1500):
            kv.Put(rpc_pb2.PutRequest(key=k.encode(), value=value(i)), timeout=10)
        for k in keys[::50]:  # overwrites: version 2
            kv.Put(rpc_pb2.PutRequest(key=k.encode(), value=rng.randbytes(50)), timeout=10)
        lease_line = _ok(target.ctl("lease", "grant", "3600"))
        lease = re.search(r"lease ([0-9a-f]+) granted", lease_line)
        assert lease is not None, lease_line
        for n in range(3):
            _ok(target.ctl("put", f"--lease={lease.group(1)}", f"/leased/{n}", f"held-{n}"))
        _ok(target.ctl("del", keys[7]))
        status = kv.Range(rpc_pb2.RangeRequest(key=b"/"), timeout=10)
        _ok(target.ctl("compact", str(status.header.revision - 5)))
        for k in keys[1::40]:  # writes after the compaction
            kv.Put(rpc_pb2.PutRequest(key=k.encode(), value=b"after compaction"), timeout=10)


@pytest.fixture(scope="module")
def snapshot(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, dict[bytes, Kv]]]:
    require_etcd()
    root = tmp_path_factory.mktemp("bbolt-etcd")
    target = start_etcd(root / "etcd")
    try:
        _populate(target)
        expected = _all_kvs(target)
        path = root / "snap.db"
        _ok(target.ctl("snapshot", "save", str(path), timeout=60))
    finally:
        target.close()
    yield path, expected


def _latest_from_key_bucket(r: BoltReader) -> dict[bytes, Kv]:
    latest: dict[bytes, Kv] = {}
    for rev, raw in r.items(b"key"):
        assert len(rev) in (17, 18) and rev[8:9] == b"_"
        kv = kv_pb2.KeyValue.FromString(raw)
        if len(rev) == 18:  # tombstone
            assert rev.endswith(b"t")
            latest.pop(kv.key, None)
            continue
        assert int.from_bytes(rev[:8], "big") == kv.mod_revision
        latest[kv.key] = {
            "value": kv.value,
            "create_revision": kv.create_revision,
            "mod_revision": kv.mod_revision,
            "version": kv.version,
            "lease": kv.lease,
        }
    return latest


def test_reader_on_etcd_snapshot(snapshot: tuple[Path, dict[bytes, Kv]]) -> None:
    path, expected = snapshot
    data = path.read_bytes()
    assert hashlib.sha256(data[:-32]).digest() == data[-32:]
    with BoltReader(path, length=len(data) - 32) as r:
        assert r.size == len(data) - 32 == _status(path)["totalSize"]
        r.check()
        assert {b"key", b"meta", b"lease", b"members", b"cluster"} <= set(r.buckets())
        assert _latest_from_key_bucket(r) == expected
        assert r.count(b"lease") == 1
        first_rev = next(r.items(b"key"))[0]
        assert r.get(b"key", first_rev) is not None and r.get(b"key", b"\x00" * 17) is None
    assert len(expected) > 1900 and any(len(kv["value"]) > 4096 for kv in expected.values())


def _status(path: Path) -> dict[str, int]:
    out = json.loads(_etcdctl("snapshot", "status", "-w", "json", str(path)).stdout)
    return {k: out[k] for k in ("hash", "revision", "totalKey", "totalSize")}


def test_writer_copy_is_accepted_by_etcd(
    snapshot: tuple[Path, dict[bytes, Kv]], tmp_path: Path
) -> None:
    path, expected = snapshot
    size = path.stat().st_size
    copy = tmp_path / "copy.db"
    with BoltReader(path, length=size - 32) as r, open(copy, "w+b") as f:
        n = write_bolt(f, ((name, r.items(name)) for name in r.buckets()))
        f.seek(0)
        f.write(hashlib.sha256(f.read(n)).digest())
    with BoltReader(copy, length=n) as c:
        c.check()
    copy_status, status = _status(copy), _status(path)
    assert copy_status.pop("totalSize") == n
    status.pop("totalSize")
    assert copy_status == status

    etcd = EtcdCluster(tmp_path / "restored", 1)
    (tmp_path / "restored").mkdir()
    etcd.restore(copy)
    try:
        etcd.start()
        assert _all_kvs(Target("etcd", etcd.endpoints, [])) == expected
    finally:
        etcd.close()


@pytest.mark.parametrize(("page_size", "txid"), [(1024, 7), (16384, 2)])
def test_writer_page_sizes_read_by_etcd(
    snapshot: tuple[Path, dict[bytes, Kv]], tmp_path: Path, page_size: int, txid: int
) -> None:
    """Go's bbolt (inside etcdctl) reads other page sizes and an odd txid: every bucket and
    key hashed to the same value as the original snapshot's."""
    path, _ = snapshot
    copy = tmp_path / "copy.db"
    with BoltReader(path, length=path.stat().st_size - 32) as r, open(copy, "w+b") as f:
        n = write_bolt(f, ((b, r.items(b)) for b in r.buckets()), page_size=page_size, txid=txid)
        f.seek(0)
        f.write(hashlib.sha256(f.read(n)).digest())
    copy_status, status = _status(copy), _status(path)
    assert copy_status.pop("totalSize") == n
    status.pop("totalSize")
    assert copy_status == status
