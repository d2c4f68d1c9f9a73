"""Shared pieces of the backup agent's real-process tests (no tests of its own): the agent as
a child process, a bounded background write load (puts, deletes, txns, leases) through
Debian's etcdctl, manifest reads, whole-store reads at a revision, and a member started from
a point-in-time restore.

Contract: every wait is bounded; every process started here is killed by its owner's
``finally`` (``stop_agent``, ``Load.stop``, ``Cluster.close``).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from tests.backup.support import kvs_of, raftkv
from tests.cluster.harness import REPO, Cluster, require_etcdctl


def running_cluster(tmp_path: Path, size: int = 3) -> Iterator[Cluster]:
    """For a fixture: a running raftkv cluster, killed after the test (logs printed on
    failure)."""
    require_etcdctl()
    root = tmp_path / "cluster"
    root.mkdir()
    c = Cluster(root, size)
    try:
        c.start_all()
        yield c
    except BaseException:
        print(c.dump_logs())
        raise
    finally:
        c.close()


def agent_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "raftkv.ctl.main", "backup", *args]


def start_agent(
    log: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    full_env = dict(os.environ)
    full_env["PYTHONPATH"] = str(REPO / "src") + os.pathsep + full_env.get("PYTHONPATH", "")
    full_env.update(env or {})
    out = open(log, "ab")  # noqa: SIM115 - handed to the child
    try:
        return subprocess.Popen(
            agent_cmd("run", *args), stdout=out, stderr=subprocess.STDOUT, env=full_env
        )
    finally:
        out.close()


def stop_agent(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> int:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    return int(proc.returncode)


def wait_for(cond: Callable[[], Any], timeout: float, what: str, log: Path | None = None) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(0.1)
    tail = log.read_text(errors="replace")[-4000:] if log is not None and log.exists() else ""
    raise AssertionError(f"timed out waiting for {what}\n{tail}")


def manifest(dest: Path) -> list[dict[str, Any]]:
    path = dest / "manifest.json"
    if not path.exists():
        return []
    return list(json.loads(path.read_text())["backups"])


def verified(dest: Path, kind: str) -> list[dict[str, Any]]:
    return [e for e in manifest(dest) if e["kind"] == kind and e["verified"]]


class Load:
    """Writes in a thread until stopped (at most ``limit`` operations): puts, overwrites,
    deletes, a txn every few steps, and keys attached to leases granted along the way."""

    def __init__(self, cluster: Cluster, endpoint: str, limit: int = 2000) -> None:
        self.cluster = cluster
        self.endpoint = endpoint
        self.limit = limit
        self.done = threading.Event()
        self.ops = 0
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> Load:
        self.thread.start()
        return self

    def _ctl(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return self.cluster.etcdctl(*args, endpoints=self.endpoint, stdin=stdin)

    def _run(self) -> None:
        try:
            i = 0
            lease = ""
            while not self.done.is_set() and i < self.limit:
                k = f"load/{i % 23:02d}"
                self._ctl("put", k, f"v{i}-" + "x" * (i % 50))
                if i % 5 == 4:
                    self._ctl("del", f"load/{(i * 7) % 23:02d}")
                if i % 7 == 6:
                    txn = f'mod("{k}") > "0"\n\nput txn/a a{i}\nput txn/b b{i}\ndel load/03\n\n\n'
                    self._ctl("txn", stdin=txn)
                if i % 11 == 0:
                    lease = self._ctl("lease", "grant", "600").stdout.split()[1]
                if lease:
                    self._ctl("put", f"leased/{i % 5}", f"l{i}", f"--lease={lease}")
                if i % 33 == 32 and lease:
                    self._ctl("lease", "revoke", lease)
                    lease = ""
                i += 1
                self.ops = i
        except BaseException as exc:
            self.error = exc

    def stop(self) -> None:
        self.done.set()
        self.thread.join(60)
        if self.error is not None:
            raise self.error


def revision(cluster: Cluster, endpoint: str) -> int:
    st = json.loads(cluster.etcdctl("endpoint", "status", "-w", "json", endpoints=endpoint).stdout)
    return int(st[0]["Status"]["header"]["revision"])


def store_at(
    cluster: Cluster, endpoint: str, rev: int = 0
) -> dict[str, tuple[str, int, int, int, int]]:
    """Every key at ``rev`` (0: now): value, create and mod revision, version, lease."""
    args = ["get", "", "--from-key", "-w", "json"]
    if rev:
        args.append(f"--rev={rev}")
    return kvs_of(json.loads(cluster.etcdctl(*args, endpoints=endpoint).stdout))


def restore_and_start(root: Path, backups: Path | str, *point: str) -> tuple[Cluster, str]:
    """A one-member cluster started from ``raftkv backup restore backups <point>``; returns it
    (the caller closes it) and the restore's output line."""
    root.mkdir(parents=True, exist_ok=True)
    c = Cluster(root, 1)
    m = c.members[0]
    res = raftkv(
        "backup", "restore", str(backups), *point,
        "--name", m.name, "--data-dir", str(m.data_dir),
        "--initial-cluster", c.initial_cluster,
        "--initial-advertise-peer-urls", m.peer_url,
        "--initial-cluster-token", "pitr",
    )  # fmt: skip
    try:
        c.start_all()
    except BaseException:
        c.close()
        raise
    return c, res.stdout.strip()


def fill(endpoint: str, keys: int, size: int, prefix: str = "bulk/") -> None:
    """``keys`` keys of ``size`` random bytes each, written 100 to a txn over gRPC."""
    import grpc

    from raftkv.proto import rpc_pb2 as pb
    from raftkv.proto import rpc_pb2_grpc

    with grpc.insecure_channel(endpoint) as channel:
        kv = rpc_pb2_grpc.KVStub(channel)
        for start in range(0, keys, 100):
            ops = [
                pb.RequestOp(
                    request_put=pb.PutRequest(
                        key=f"{prefix}{i:07d}".encode(), value=os.urandom(size)
                    )
                )
                for i in range(start, min(keys, start + 100))
            ]
            kv.Txn(pb.TxnRequest(success=ops), timeout=30)


def snapshot_sources(cluster: Cluster) -> list[int]:
    """Indexes of the members streaming a client snapshot right now."""
    return [
        i
        for i, m in enumerate(cluster.members)
        if any((m.data_dir / "member" / "snap").glob("client-snapshot-*.db"))
    ]
