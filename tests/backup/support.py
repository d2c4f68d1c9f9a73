"""Real processes for the backup tests: a workload, whole-store dumps, etcd clusters started
from restored data directories, and the ``raftkv`` command line.

Contract: every wait is bounded; ``EtcdCluster.close`` kills every process it started.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tests.cluster.harness import REPO, free_ports, require_etcdctl
from tests.compat.servers import require_etcd


def ctl(endpoint: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Debian's etcdctl against one endpoint."""
    res = subprocess.run(
        [require_etcdctl(), f"--endpoints={endpoint}", "--dial-timeout=2s",
         "--command-timeout=10s", *args],
        capture_output=True, text=True, timeout=60, check=False,
        env={**os.environ, "ETCDCTL_API": "3"},
    )  # fmt: skip
    if check and res.returncode != 0:
        raise AssertionError(f"etcdctl {' '.join(args)}: {res.returncode} {res.stderr.strip()}")
    return res


def raftkv(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """The ``raftkv`` command line in a child process."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO / "src") + os.pathsep + env.get("PYTHONPATH", "")
    res = subprocess.run(
        [sys.executable, "-m", "raftkv.ctl.main", *args],
        capture_output=True, text=True, timeout=300, check=False, env=env,
    )  # fmt: skip
    if check and res.returncode != 0:
        raise AssertionError(f"raftkv {' '.join(args)}: {res.returncode} {res.stderr.strip()}")
    return res


def workload(endpoint: str, keys: int = 60) -> dict[str, Any]:
    """Puts, overwrites, deletes, a txn, leases with keys, then a compaction in the middle of
    the history; returns what the history was built with (lease IDs, compacted revision)."""
    for i in range(keys):
        ctl(endpoint, "put", f"k/{i:03d}", f"v{i}-" + "x" * (i * 37 % 300))
    for i in range(0, keys, 3):
        ctl(endpoint, "put", f"k/{i:03d}", f"second-{i}")
    status = json.loads(ctl(endpoint, "endpoint", "status", "-w", "json").stdout)
    compact_at = int(status[0]["Status"]["header"]["revision"])
    for i in range(0, keys, 5):
        ctl(endpoint, "del", f"k/{i:03d}")
    txn = "\n".join(
        ['mod("k/001") > "0"', "", "put k/txn-a a", "put k/txn-b b", "del k/002", "", "", ""]
    )
    res = subprocess.run(
        [require_etcdctl(), f"--endpoints={endpoint}", "txn"],
        input=txn, capture_output=True, text=True, timeout=30, check=True,
        env={**os.environ, "ETCDCTL_API": "3"},
    )  # fmt: skip
    assert "SUCCESS" in res.stdout, res.stdout
    leases = []
    for ttl in (600, 900):
        out = ctl(endpoint, "lease", "grant", str(ttl)).stdout
        lease_hex = out.split()[1]
        leases.append(lease_hex)
        for j in range(3):
            ctl(endpoint, "put", f"leased/{ttl}/{j}", "l", f"--lease={lease_hex}")
    ctl(endpoint, "compaction", str(compact_at))
    ctl(endpoint, "put", "after/compaction", "yes")
    return {"leases": leases, "compacted": compact_at}


def kvs_of(get_json: dict[str, Any]) -> dict[str, tuple[str, int, int, int, int]]:
    """key -> (value, create revision, mod revision, version, lease) of ``etcdctl get -w
    json``'s output."""
    return {
        base64.b64decode(kv["key"]).decode(): (
            base64.b64decode(kv.get("value", "")).decode(),
            int(kv["create_revision"]),
            int(kv["mod_revision"]),
            int(kv["version"]),
            int(kv.get("lease", 0)),
        )
        for kv in get_json.get("kvs", [])
    }


def dump(endpoint: str) -> dict[str, Any]:
    """Every live key (with create/mod revision, version, lease), the revision, and every
    lease's granted TTL and keys."""
    res = json.loads(ctl(endpoint, "get", "", "--prefix", "-w", "json").stdout)
    kvs = kvs_of(res)
    leases = {}
    listed = ctl(endpoint, "lease", "list").stdout.split()
    for word in listed:
        if all(c in "0123456789abcdef" for c in word) and len(word) >= 8:
            ttl = json.loads(
                ctl(endpoint, "lease", "timetolive", word, "--keys", "-w", "json").stdout
            )
            keys = sorted(base64.b64decode(k).decode() for k in ttl.get("keys") or [])
            leases[int(ttl["id"])] = (int(ttl["granted-ttl"]), keys)
    return {"revision": int(res["header"]["revision"]), "kvs": kvs, "leases": leases}


def compacted_error(endpoint: str, rev: int) -> str:
    """The error etcdctl prints for a read at ``rev`` (empty when the read succeeds)."""
    res = ctl(endpoint, "get", "k/001", f"--rev={rev}", check=False)
    return res.stderr.strip().splitlines()[-1] if res.returncode else ""


class EtcdCluster:
    """Real etcd members started on data directories that ``etcdctl snapshot restore`` built."""

    def __init__(self, root: Path, size: int) -> None:
        self.root = root
        ports = free_ports(2 * size)
        self.names = [f"e{i + 1}" for i in range(size)]
        self.client = ports[0::2]
        self.peer = ports[1::2]
        self.initial_cluster = ",".join(
            f"{n}=http://127.0.0.1:{p}" for n, p in zip(self.names, self.peer, strict=True)
        )
        self.procs: list[subprocess.Popen[bytes]] = []

    def data_dir(self, i: int) -> Path:
        return self.root / f"{self.names[i]}.etcd"

    @property
    def endpoints(self) -> list[str]:
        return [f"127.0.0.1:{p}" for p in self.client]

    def restore(self, snapshot: Path) -> None:
        for i, name in enumerate(self.names):
            res = subprocess.run(
                [require_etcdctl(), "snapshot", "restore", str(snapshot),
                 "--name", name, "--data-dir", str(self.data_dir(i)),
                 "--initial-cluster", self.initial_cluster,
                 "--initial-cluster-token", "restored-etcd",
                 "--initial-advertise-peer-urls", f"http://127.0.0.1:{self.peer[i]}"],
                capture_output=True, text=True, timeout=120, check=False,
                env={**os.environ, "ETCDCTL_API": "3"},
            )  # fmt: skip
            assert res.returncode == 0, res.stderr

    def start(self, ctl_flags: tuple[str, ...] = ()) -> None:
        """Start every member and wait until each is healthy (``ctl_flags``: e.g. ``--user``
        when the restored state has auth enabled)."""
        for i, name in enumerate(self.names):
            log = open(self.root / f"{name}.log", "wb")  # noqa: SIM115 - child's stdout
            self.procs.append(
                subprocess.Popen(
                    [
                        require_etcd(),
                        "--name",
                        name,
                        "--data-dir",
                        str(self.data_dir(i)),
                        "--listen-client-urls",
                        f"http://127.0.0.1:{self.client[i]}",
                        "--advertise-client-urls",
                        f"http://127.0.0.1:{self.client[i]}",
                        "--listen-peer-urls",
                        f"http://127.0.0.1:{self.peer[i]}",
                        "--initial-advertise-peer-urls",
                        f"http://127.0.0.1:{self.peer[i]}",
                        "--initial-cluster",
                        self.initial_cluster,
                        "--initial-cluster-token",
                        "restored-etcd",
                    ],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
            log.close()
        deadline = time.monotonic() + 60
        for ep in self.endpoints:
            while ctl(ep, *ctl_flags, "endpoint", "health", check=False).returncode != 0:
                if time.monotonic() > deadline:
                    raise AssertionError(self.logs())
                time.sleep(0.3)

    def logs(self) -> str:
        return "\n".join(
            (self.root / f"{n}.log").read_text(errors="replace")[-3000:] for n in self.names
        )

    def close(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                p.wait(10)
