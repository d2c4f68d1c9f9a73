"""Servers for compatibility tests: a real etcd 3.4 member and raftkv clusters, each on free
loopback ports in a temporary directory, plus ``Target``, a uniform handle to run etcdctl and
client scripts against either.

Contract: every wait is bounded; every process started here is killed by ``close()``; a server
that does not come up raises with the tail of its log.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tests.cluster.harness import Cluster, free_ports, require_etcdctl

ETCD = shutil.which("etcd") or ("/usr/bin/etcd" if os.path.exists("/usr/bin/etcd") else None)
HERE = Path(__file__).resolve().parent
SCENARIOS = HERE / "etcd3_scenarios.py"


def require_etcd() -> str:
    if ETCD is None:
        raise RuntimeError("etcd not found: apt-get install etcd-server")
    return ETCD


def _ctl_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ETCDCTL_")}
    env["ETCDCTL_API"] = "3"
    return env


@dataclass
class Target:
    """One server (etcd or raftkv) and the client endpoints to reach it."""

    kind: str
    endpoints: list[str]
    log_paths: list[Path]
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    cluster: Cluster | None = None
    ctl_flags: list[str] = field(default_factory=list)  # etcdctl's TLS / auth flags for ctl()

    def ctl(
        self, *args: str, stdin: str | bytes | None = None, timeout: float = 30
    ) -> subprocess.CompletedProcess[bytes]:
        """Run etcdctl against the first endpoint; never raises on a non-zero exit."""
        data = stdin.encode() if isinstance(stdin, str) else stdin
        return subprocess.run(
            [
                require_etcdctl(),
                f"--endpoints={self.endpoints[0]}",
                "--dial-timeout=3s",
                "--command-timeout=10s",
                *self.ctl_flags,
                *args,
            ],
            input=data if data is not None else b"",
            capture_output=True,
            timeout=timeout,
            env=_ctl_env(),
            check=False,
        )

    def ctl_binary(self) -> str:
        return require_etcdctl()

    def ctl_env(self) -> dict[str, str]:
        return _ctl_env()

    def log_tail(self, lines: int = 40) -> str:
        out = []
        for p in self.log_paths:
            if p.exists():
                tail = p.read_text(errors="replace").splitlines()[-lines:]
                out.append(f"===== {p.name} =====\n" + "\n".join(tail))
        return "\n".join(out)

    def close(self) -> None:
        if self.cluster is not None:
            self.cluster.close()
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                p.wait(10)


def _wait_status(
    endpoint: str,
    proc: subprocess.Popen[bytes] | None,
    log: Path,
    ctl_flags: Sequence[str] = (),
) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited early:\n{log.read_text(errors='replace')[-3000:]}")
        res = subprocess.run(
            [require_etcdctl(), f"--endpoints={endpoint}", "--dial-timeout=1s",
             "--command-timeout=2s", *ctl_flags, "endpoint", "status"],
            capture_output=True, timeout=30, env=_ctl_env(), check=False,
        )  # fmt: skip
        if res.returncode == 0:
            return
        time.sleep(0.2)
    raise RuntimeError(
        f"server at {endpoint} not ready:\n{log.read_text(errors='replace')[-3000:]}"
    )


def start_etcd(
    root: Path,
    client_scheme: str = "http",
    extra: Sequence[str] = (),
    ctl_flags: Sequence[str] = (),
) -> Target:
    """A fresh one-member etcd; no request is made that changes its revision.

    ``client_scheme="https"`` serves clients over TLS: ``extra`` (more etcd flags) then names
    the certificate files, ``ctl_flags`` the etcdctl flags that reach it (kept on the Target
    for ``ctl()``), and the endpoint is ``https://127.0.0.1:PORT``.
    """
    etcd = require_etcd()
    root.mkdir(parents=True, exist_ok=True)
    client, peer = free_ports(2)
    log = root / "etcd.log"
    client_url = f"{client_scheme}://127.0.0.1:{client}"
    cmd = [
        etcd,
        "--name", "m1",
        "--data-dir", str(root / "etcd.data"),
        "--listen-client-urls", client_url,
        "--advertise-client-urls", client_url,
        "--listen-peer-urls", f"http://127.0.0.1:{peer}",
        "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
        "--initial-cluster", f"m1=http://127.0.0.1:{peer}",
        *extra,
    ]  # fmt: skip
    with open(log, "wb") as f:
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT)
    endpoint = client_url if client_scheme == "https" else f"127.0.0.1:{client}"
    target = Target("etcd", [endpoint], [log], [proc], ctl_flags=list(ctl_flags))
    try:
        _wait_status(target.endpoints[0], proc, log, ctl_flags)
    except BaseException:
        target.close()
        raise
    return target


def start_raftkv(root: Path, size: int) -> Target:
    root.mkdir(parents=True, exist_ok=True)
    cluster = Cluster(root, size)
    target = Target(
        f"raftkv{size}",
        [m.endpoint for m in cluster.members],
        [m.log_path for m in cluster.members],
        cluster=cluster,
    )
    try:
        cluster.start_all()
    except BaseException:
        target.close()
        raise
    return target


def run_etcd3(
    scenario: str,
    endpoints: list[str],
    timeout: float = 120,
    extra_env: dict[str, str] | None = None,
) -> str:
    """Run one ``etcd3_scenarios`` scenario in a child process; its JSON output (stdout)."""
    env = dict(os.environ) | (extra_env or {})
    env["PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION"] = "python"
    res = subprocess.run(
        [sys.executable, str(SCENARIOS), scenario, ",".join(endpoints)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        check=False,
    )
    if res.returncode != 0:
        raise AssertionError(f"etcd3 scenario {scenario} failed:\n{res.stderr[-4000:]}")
    return res.stdout
