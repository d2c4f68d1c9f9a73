"""Real raftkv member processes on 127.0.0.1 for integration tests, driven by real etcdctl.

Contract: every wait is bounded; every process started is killed at ``close()``; member logs
are kept in the test's temporary directory and printed by ``dump_logs`` when a test fails.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from raftkv.proto import rpc_pb2 as pb
from raftkv.proto import rpc_pb2_grpc as pb_grpc
from tests.tls_certs import PeerCerts

REPO = Path(__file__).resolve().parents[2]
ETCDCTL = shutil.which("etcdctl")
CORRUPT_ALARM = 2  # etcd's AlarmType.CORRUPT


def require_etcdctl() -> str:
    if ETCDCTL is None:
        raise RuntimeError("etcdctl not found: apt-get install etcd-client")
    return ETCDCTL


def installation_env(src: Path | None) -> dict[str, str]:
    """The environment of a process of the installation whose source is ``src`` (put first on
    PYTHONPATH; None: the interpreter's installed raftkv)."""
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    if src is not None:
        env["PYTHONPATH"] = str(src)
    return env


PORT_RANGE = (20000, 32767)
"""Where test members listen: below the machine's ephemeral range (32768-60999), so an
outgoing connection never takes a port between its check here and the member's bind."""


def free_ports(n: int) -> list[int]:
    """``n`` distinct ports of ``PORT_RANGE`` that nothing listens on now (checked by binding
    each, with the others held), picked at random so concurrent runs rarely meet."""
    rng = random.SystemRandom()
    socks: list[socket.socket] = []
    try:
        while len(socks) < n:
            s = socket.socket()
            try:
                s.bind(("127.0.0.1", rng.randint(*PORT_RANGE)))
            except OSError:
                s.close()
                continue
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


@dataclass(frozen=True)
class ClusterTLS:
    """A cluster on TLS: ``certs`` holds one CA, a certificate per member name (served on its
    URLs and presented when it dials) and one named ``client`` for etcdctl.  ``client``:
    https client URLs with ``--client-cert-auth``; ``peer``: https peer URLs with
    ``--peer-client-cert-auth``."""

    certs: PeerCerts
    client: bool = True
    peer: bool = True

    def member_args(self, name: str) -> list[str]:
        c = self.certs
        args = []
        if self.client:
            args += [f"--cert-file={c.cert(name)}", f"--key-file={c.key(name)}"]
            args += [f"--trusted-ca-file={c.ca}", "--client-cert-auth"]
        if self.peer:
            args += [f"--peer-cert-file={c.cert(name)}", f"--peer-key-file={c.key(name)}"]
            args += [f"--peer-trusted-ca-file={c.ca}", "--peer-client-cert-auth"]
        return args

    def etcdctl_args(self) -> list[str]:
        c = self.certs
        if not self.client:
            return []
        return [f"--cacert={c.ca}", f"--cert={c.cert('client')}", f"--key={c.key('client')}"]


@dataclass
class MemberProc:
    name: str
    client_port: int
    peer_port: int
    data_dir: Path
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    extra_args: list[str] = field(default_factory=list)
    # The installation the member runs: an interpreter, and the source tree put first on its
    # PYTHONPATH (None: the interpreter's installed raftkv); rolling upgrades swap these.
    python: str = sys.executable
    src: Path | None = REPO / "src"
    client_scheme: str = "http"
    peer_scheme: str = "http"
    # The peer port the others dial, when something (a proxy) stands in front of peer_port.
    advertise_peer_port: int | None = None

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.client_port}"

    @property
    def client_url(self) -> str:
        return f"{self.client_scheme}://{self.endpoint}"

    @property
    def peer_url(self) -> str:
        return f"{self.peer_scheme}://127.0.0.1:{self.peer_port}"

    @property
    def advertised_peer_url(self) -> str:
        port = self.advertise_peer_port or self.peer_port
        return f"{self.peer_scheme}://127.0.0.1:{port}"

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


class Cluster:
    def __init__(
        self,
        root: Path,
        size: int,
        extra_args: list[str] | None = None,
        tls: ClusterTLS | None = None,
        peer_front: Callable[[int, int], int] | None = None,
    ) -> None:
        """``peer_front(index, peer_port)``: the port of something relaying to a member's peer
        port (a fault-injecting proxy), advertised to the others in its place."""
        self.root = root
        self.tls = tls
        # Extra etcdctl flags for every call (e.g. ``--user`` once auth is enabled).
        self.etcdctl_flags: list[str] = []
        ports = free_ports(2 * size)
        self.members = [
            MemberProc(
                name=f"m{i + 1}",
                client_port=ports[2 * i],
                peer_port=ports[2 * i + 1],
                data_dir=root / f"m{i + 1}.raftkv",
                log_path=root / f"m{i + 1}.log",
                extra_args=list(extra_args or []) + (tls.member_args(f"m{i + 1}") if tls else []),
                client_scheme="https" if tls and tls.client else "http",
                peer_scheme="https" if tls and tls.peer else "http",
            )
            for i in range(size)
        ]
        if peer_front is not None:
            for i, m in enumerate(self.members):
                m.advertise_peer_port = peer_front(i, m.peer_port)
        self.initial_cluster = ",".join(f"{m.name}={m.advertised_peer_url}" for m in self.members)

    @property
    def endpoints(self) -> str:
        return ",".join(m.endpoint for m in self.members)

    def start(self, i: int, env: dict[str, str] | None = None) -> None:
        m = self.members[i]
        assert not m.alive(), f"{m.name} is already running"
        args = [
            m.python,
            "-m",
            "raftkv.ctl.main",
            "serve",
            "--name",
            m.name,
            "--data-dir",
            str(m.data_dir),
            "--listen-client-urls",
            m.client_url,
            "--advertise-client-urls",
            m.client_url,
            "--listen-peer-urls",
            m.peer_url,
            "--initial-advertise-peer-urls",
            m.advertised_peer_url,
            "--initial-cluster",
            self.initial_cluster,
            *m.extra_args,
        ]
        full_env = installation_env(m.src)
        full_env.update(env or {})
        log = open(m.log_path, "ab")  # noqa: SIM115 - handed to the child process
        m.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=full_env)
        log.close()

    def add_member(
        self,
        *,
        learner: bool = False,
        endpoints: str | None = None,
        extra_args: list[str] | None = None,
    ) -> int:
        """``etcdctl member add`` a new member, then start it with ``--initial-cluster-state
        existing`` and ``extra_args`` (default: the first member's); returns its index.  The
        caller waits for it (``wait_ready``)."""
        ports = free_ports(2)
        i = len(self.members)
        name = f"m{i + 1}"
        while any(m.name == name for m in self.members):
            name += "x"
        m = MemberProc(
            name=name,
            client_port=ports[0],
            peer_port=ports[1],
            data_dir=self.root / f"{name}.raftkv",
            log_path=self.root / f"{name}.log",
            extra_args=[
                *(self.members[0].extra_args if extra_args is None else extra_args),
                "--initial-cluster-state",
                "existing",
            ],
            client_scheme=self.members[0].client_scheme,
            peer_scheme=self.members[0].peer_scheme,
        )
        args = ["member", "add", name, f"--peer-urls={m.peer_url}"]
        if learner:
            args.append("--learner")
        self.etcdctl(*args, endpoints=endpoints or self.live_endpoints())
        self.members.append(m)
        self.initial_cluster = ",".join(
            [*(f"{x.name}={x.peer_url}" for x in self.members if x.alive()), f"{name}={m.peer_url}"]
        )
        self.start(i)
        return i

    def live_endpoints(self) -> str:
        return ",".join(m.endpoint for m in self.members if m.alive())

    def wait_until(self, cond: Callable[[], bool], what: str, timeout: float = 30) -> None:
        """Until ``cond()`` holds; fails after ``timeout`` seconds with the member logs."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if cond():
                return
            time.sleep(0.2)
        raise AssertionError(f"timed out ({timeout}s) waiting for {what}\n" + self.dump_logs())

    def check_consistency(
        self,
        endpoints: str | None = None,
        python: str = sys.executable,
        src: Path | None = REPO / "src",
    ) -> str:
        """``raftkv check consistency`` (of the installation ``python``/``src``) over
        ``endpoints`` (default: the live members); asserts exit 0, returns its output."""
        cmd = ["check", "consistency", "--endpoints", endpoints or self.live_endpoints()]
        res = subprocess.run(
            [python, "-m", "raftkv.ctl.main", *cmd],
            capture_output=True,
            text=True,
            timeout=60,
            env=installation_env(src),
        )
        assert res.returncode == 0, (
            f"check consistency:\n{res.stdout}\n{res.stderr}\n" + self.dump_logs()
        )
        return res.stdout

    def start_all(self) -> None:
        for i in range(len(self.members)):
            self.start(i)
        self.wait_ready()

    def kill(self, i: int) -> None:
        """SIGKILL: the member gets no chance to flush or clean up."""
        m = self.members[i]
        if m.proc is not None and m.proc.poll() is None:
            m.proc.send_signal(signal.SIGKILL)
            m.proc.wait(10)
        m.proc = None

    def stop(self, i: int) -> int:
        m = self.members[i]
        assert m.proc is not None
        m.proc.send_signal(signal.SIGTERM)
        code = m.proc.wait(20)
        m.proc = None
        return code

    def close(self) -> None:
        for i in range(len(self.members)):
            self.kill(i)

    def dump_logs(self, tail: int = 60) -> str:
        out = []
        for m in self.members:
            if m.log_path.exists():
                lines = m.log_path.read_text(errors="replace").splitlines()[-tail:]
                out.append(f"===== {m.name} =====\n" + "\n".join(lines))
        return "\n".join(out)

    # -- client side ----------------------------------------------------------------------

    def etcdctl(
        self,
        *args: str,
        endpoints: str | None = None,
        check: bool = True,
        stdin: str | None = None,
        timeout: float = 20,
    ) -> subprocess.CompletedProcess[str]:
        endpoints = endpoints or self.endpoints
        if self.tls is not None and self.tls.client:
            endpoints = ",".join(f"https://{e.split('://')[-1]}" for e in endpoints.split(","))
        cmd = [
            require_etcdctl(),
            "--endpoints",
            endpoints,
            *(self.tls.etcdctl_args() if self.tls else []),
            *self.etcdctl_flags,
            "--dial-timeout=2s",
            "--command-timeout=5s",
            *args,
        ]
        res = subprocess.run(
            cmd,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**os.environ, "ETCDCTL_API": "3"},
        )
        if check and res.returncode != 0:
            raise AssertionError(
                f"etcdctl {' '.join(args)} failed ({res.returncode}): {res.stderr.strip()}\n"
                + self.dump_logs(20)
            )
        return res

    def status(self, i: int) -> dict[str, object] | None:
        res = self.etcdctl(
            "endpoint", "status", "-w", "json", endpoints=self.members[i].endpoint, check=False
        )
        if res.returncode != 0:
            return None
        data = json.loads(res.stdout)
        return data[0]["Status"] if data else None

    def wait_ready(self, members: list[int] | None = None, timeout: float = 30) -> None:
        """Until every listed member answers status and knows a leader."""
        idx = members if members is not None else list(range(len(self.members)))
        deadline = time.monotonic() + timeout
        pending = set(idx)
        while pending and time.monotonic() < deadline:
            for i in sorted(pending):
                if not self.members[i].alive():
                    raise AssertionError(f"{self.members[i].name} exited\n" + self.dump_logs())
                st = self.status(i)
                if st is not None and st.get("leader"):
                    pending.discard(i)
            if pending:
                time.sleep(0.2)
        if pending:
            raise AssertionError(f"members {sorted(pending)} not ready\n" + self.dump_logs())

    def listen_metrics(self) -> list[int]:
        """Give every member a /metrics listener on a free port (call before they start);
        returns the ports, by member."""
        ports = free_ports(len(self.members))
        for m, port in zip(self.members, ports, strict=True):
            m.extra_args += ["--listen-metrics-urls", f"http://127.0.0.1:{port}"]
        return ports

    def member_id(self, i: int) -> int:
        st = self.status(i)
        assert st is not None, f"{self.members[i].name} does not answer status"
        return int(st["header"]["member_id"])  # type: ignore[index]

    def corrupt_alarms(self, endpoint: str) -> set[int]:
        """Member IDs under a CORRUPT alarm as ``endpoint`` lists them (empty if it cannot)."""
        res = self.etcdctl("alarm", "list", "-w", "json", endpoints=endpoint, check=False)
        if res.returncode != 0 or not res.stdout.strip():
            return set()
        alarms = json.loads(res.stdout).get("alarms") or []
        return {int(a["memberID"]) for a in alarms if a.get("alarm") == CORRUPT_ALARM}

    def wait_corrupt_alarm(self, endpoint: str, timeout: float = 20) -> tuple[set[int], float]:
        """Member IDs under a CORRUPT alarm, and how long it took to see the first one."""
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            if ids := self.corrupt_alarms(endpoint):
                return ids, time.monotonic() - t0
            time.sleep(0.1)
        raise AssertionError("no CORRUPT alarm raised\n" + self.dump_logs())

    def leader_index(self) -> int | None:
        for i, m in enumerate(self.members):
            if not m.alive():
                continue
            st = self.status(i)
            if st is not None and st.get("leader") == st["header"]["member_id"]:  # type: ignore[index]
                return i
        return None

    def hashkv(self, i: int, rev: int = 0) -> tuple[int, int]:
        res = self.etcdctl(
            "endpoint", "hashkv", "-w", "json", f"--rev={rev}", endpoints=self.members[i].endpoint
        )
        data = json.loads(res.stdout)[0]["HashKV"]
        return int(data["hash"]), int(data["header"]["revision"])

    def get_all(self, i: int, prefix: str = "", serializable: bool = True) -> dict[str, str]:
        args = ["get", prefix, "-w", "json"]  # "" with --from-key: every key
        args += ["--prefix"] if prefix else ["--from-key"]
        if serializable:
            args.append("--consistency=s")
        res = self.etcdctl(*args, endpoints=self.members[i].endpoint)
        import base64

        kvs = json.loads(res.stdout).get("kvs", [])
        return {
            base64.b64decode(kv["key"]).decode(): base64.b64decode(kv.get("value", "")).decode()
            for kv in kvs
        }


class Writer(threading.Thread):
    """Puts distinct keys (``prefix`` + a counter) in a loop, the next endpoint after a failure;
    records what was acknowledged.  ``endpoints`` is a list or, for a cluster whose members
    change, a callable giving the live ones; ``pause`` seconds between acknowledged puts leave
    the cores to restarts and joins, not only to puts."""

    def __init__(
        self,
        endpoints: list[str] | Callable[[], list[str]],
        prefix: str,
        pause: float = 0.0,
    ) -> None:
        super().__init__(daemon=True)
        self.endpoints = endpoints if callable(endpoints) else (lambda: list(endpoints))
        self.prefix = prefix
        self.pause = pause
        self.acked: dict[str, str] = {}
        self.failures = 0
        self.stop_flag = threading.Event()

    def run(self) -> None:
        channels: dict[str, grpc.Channel] = {}
        try:
            n = i = 0
            while not self.stop_flag.is_set():
                eps = self.endpoints()
                ep = eps[i % len(eps)]
                if ep not in channels:
                    channels[ep] = grpc.insecure_channel(ep)
                key, value = f"{self.prefix}{n:06d}", f"v{n}"
                try:
                    pb_grpc.KVStub(channels[ep]).Put(
                        pb.PutRequest(key=key.encode(), value=value.encode()), timeout=3
                    )
                    self.acked[key] = value
                    if self.pause:
                        time.sleep(self.pause)
                except grpc.RpcError:
                    self.failures += 1
                    i += 1
                    time.sleep(0.05)
                n += 1
        finally:
            for ch in channels.values():
                ch.close()

    def finish(self) -> dict[str, str]:
        """Stop and return what was acknowledged."""
        self.stop_flag.set()
        self.join(20)
        assert not self.is_alive(), "the writer did not stop"
        return dict(self.acked)
