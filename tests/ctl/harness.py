"""Side-by-side runner: the same client command through real ``etcdctl`` and ``raftkv``.

Contract: a server is started per test module on free 127.0.0.1 ports in a temp dir, every wait
is bounded, every process started here is killed at ``close()``.  The server kind is a parameter
(``RAFTKV_CTL_TEST_SERVERS``, default ``etcd``) so the same comparisons run against raftkv's own
server once it serves the v3 API.  Outputs are compared byte for byte after explicit masks.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.cluster.harness import free_ports

REPO = Path(__file__).resolve().parents[2]
ETCD = shutil.which("etcd") or ("/usr/bin/etcd" if os.path.exists("/usr/bin/etcd") else None)
ETCDCTL = shutil.which("etcdctl")
RUN_TIMEOUT = 30.0


def require_etcd_tools() -> tuple[str, str]:
    if ETCD is None:
        raise RuntimeError("etcd not found: apt-get install etcd-server")
    if ETCDCTL is None:
        raise RuntimeError("etcdctl not found: apt-get install etcd-client")
    return ETCD, ETCDCTL


@dataclass
class Result:
    rc: int
    stdout: bytes
    stderr: bytes

    def text(self) -> str:
        return self.stdout.decode("utf-8", "replace")


def _clean_stderr(raw: bytes) -> bytes:
    """Drop etcdctl's structured log lines (zap JSON) and Go panics' noise; keep messages."""
    keep = [ln for ln in raw.split(b"\n") if not ln.startswith(b'{"level"')]
    return b"\n".join(keep)


class Server:
    """A running v3 server (one member) with a client endpoint."""

    def __init__(
        self,
        kind: str,
        endpoint: str,
        procs: list[subprocess.Popen[bytes]],
        log: Path,
        closer: Callable[[], None] | None = None,
    ) -> None:
        self.kind = kind
        self.endpoint = endpoint
        self.procs = procs
        self.log = log
        self._closer = closer

    def close(self) -> None:
        if self._closer is not None:
            self._closer()
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait(timeout=5)


def wait_ready(
    endpoint: str, proc: subprocess.Popen[bytes] | None, log: Path, deadline_s: float = 30.0
) -> None:
    _, etcdctl = require_etcd_tools()
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited early:\n{log.read_text(errors='replace')[-3000:]}")
        r = subprocess.run(
            [
                etcdctl,
                f"--endpoints={endpoint}",
                "--dial-timeout=1s",
                "--command-timeout=2s",
                "put",
                "ctl-test-ready",
                "1",
            ],
            capture_output=True,
            timeout=RUN_TIMEOUT,
            check=False,
        )
        if r.returncode == 0:
            subprocess.run(
                [etcdctl, f"--endpoints={endpoint}", "del", "ctl-test-ready"],
                capture_output=True,
                timeout=RUN_TIMEOUT,
                check=True,
            )
            return
        time.sleep(0.2)
    raise RuntimeError(f"server at {endpoint} not ready in {deadline_s}s")


def start_etcd(root: Path, extra: Sequence[str] = ()) -> Server:
    etcd, _ = require_etcd_tools()
    root.mkdir(parents=True, exist_ok=True)
    client, peer = free_ports(2)
    log = root / "etcd.log"
    cmd = [
        etcd,
        "--name",
        "n1",
        "--data-dir",
        str(root / "data"),
        "--listen-client-urls",
        f"http://127.0.0.1:{client}",
        "--advertise-client-urls",
        f"http://127.0.0.1:{client}",
        "--listen-peer-urls",
        f"http://127.0.0.1:{peer}",
        "--initial-advertise-peer-urls",
        f"http://127.0.0.1:{peer}",
        "--initial-cluster",
        f"n1=http://127.0.0.1:{peer}",
        *extra,
    ]
    with open(log, "wb") as f:
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT)
    server = Server("etcd", f"127.0.0.1:{client}", [proc], log)
    try:
        wait_ready(server.endpoint, proc, log)
    except BaseException:
        server.close()
        raise
    return server


def start_raftkv(root: Path, extra: Sequence[str] = ()) -> Server:
    """A one-member raftkv cluster through the cluster test harness."""
    require_etcd_tools()
    from tests.cluster.harness import Cluster

    cluster = Cluster(root, 1, list(extra))
    root.mkdir(parents=True, exist_ok=True)
    cluster.start_all()
    member = cluster.members[0]
    try:
        wait_ready(member.endpoint, None, member.log_path)
    except BaseException:
        cluster.close()
        raise
    return Server("raftkv", member.endpoint, [], member.log_path, cluster.close)


STARTERS: dict[str, Callable[[Path, Sequence[str]], Server]] = {
    "etcd": start_etcd,
    "raftkv": start_raftkv,
}


def server_kinds() -> list[str]:
    raw = os.environ.get("RAFTKV_CTL_TEST_SERVERS", "etcd")
    return [k.strip() for k in raw.split(",") if k.strip()]


# --------------------------------------------------------------------------------- masks

Mask = Callable[[bytes], bytes]


def regex_mask(pattern: bytes, repl: bytes) -> Mask:
    rx = re.compile(pattern)
    return lambda data: rx.sub(repl, data)


REV_MASKS: list[Mask] = [
    regex_mask(rb'"(revision|create_revision|mod_revision)":\d+', rb'"\1":N'),
    regex_mask(rb'"((?:Prev)?(?:Revision|CreateRevision|ModRevision))" : \d+', rb'"\1" : N'),
]
LEASE_MASKS: list[Mask] = [
    regex_mask(rb"\b[0-9a-f]{16}\b", b"LEASEID"),
    regex_mask(rb'"(ID|id|lease)":\d+', rb'"\1":N'),
    regex_mask(rb'"(ID|Lease|PrevLease)" : \d+', rb'"\1" : N'),
]


_REV_FIELDS = ("revision", "create_revision", "mod_revision")


def _clear_revisions(msg: Any) -> None:
    for field, value in msg.ListFields():
        if field.name in _REV_FIELDS:
            msg.ClearField(field.name)
        elif field.message_type is not None:
            for item in value if _repeated(field) else [value]:
                _clear_revisions(item)


def _repeated(field: Any) -> bool:
    rep = getattr(field, "is_repeated", None)
    return bool(rep) if rep is not None else bool(field.label == field.LABEL_REPEATED)


def proto_rev_mask(type_name: str) -> Mask:
    """For ``-w protobuf``: parse as ``etcdserverpb.<type_name>`` and clear every revision."""

    def mask(data: bytes) -> bytes:
        from google.protobuf.message import DecodeError

        from raftkv.proto import rpc_pb2

        if not data:
            return data
        msg = getattr(rpc_pb2, type_name)()
        try:
            msg.ParseFromString(data)
        except DecodeError:
            return data  # not a message (an error text): compared verbatim
        _clear_revisions(msg)
        return bytes(msg.SerializeToString(deterministic=True))

    return mask


def rev_masks(fmt: str, type_name: str) -> list[Mask]:
    return [proto_rev_mask(type_name)] if fmt == "protobuf" else REV_MASKS


def apply_masks(data: bytes, masks: Iterable[Mask]) -> bytes:
    for m in masks:
        data = m(data)
    return data


# ------------------------------------------------------------------------------- runner


class Ctl:
    """Runs commands through both tools against one server."""

    def __init__(self, server: Server) -> None:
        self.server = server
        _, self.etcdctl_bin = require_etcd_tools()

    def _env(self, tool: str, with_endpoints: bool = True) -> dict[str, str]:
        """The environment for ``tool``; endpoints come from the environment unless the
        command names them (etcdctl refuses an --endpoints flag shadowing its variable)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("ETCDCTL_", "RAFTKV_"))}
        env["ETCDCTL_API"] = "3"
        if tool == "etcdctl":
            if with_endpoints:
                env["ETCDCTL_ENDPOINTS"] = self.server.endpoint
        else:
            if with_endpoints:
                env["RAFTKV_ENDPOINTS"] = self.server.endpoint
            env["PYTHONPATH"] = str(REPO / "src") + os.pathsep + env.get("PYTHONPATH", "")
        return env

    def argv(self, tool: str, args: Sequence[str]) -> list[str]:
        if tool == "etcdctl":
            return [self.etcdctl_bin, *args]
        return [sys.executable, "-m", "raftkv.ctl.main", *args]

    def run(self, tool: str, args: Sequence[str], stdin: bytes | None = None) -> Result:
        r = subprocess.run(
            self.argv(tool, args),
            input=stdin if stdin is not None else b"",
            capture_output=True,
            timeout=RUN_TIMEOUT,
            check=False,
            env=self._env(tool, not any(a.startswith("--endpoints") for a in args)),
            cwd=str(REPO),
        )
        return Result(r.returncode, r.stdout, _clean_stderr(r.stderr))

    def etcdctl(self, *args: str, stdin: bytes | None = None) -> Result:
        return self.run("etcdctl", args, stdin)

    def raftkv(self, *args: str, stdin: bytes | None = None) -> Result:
        return self.run("raftkv", args, stdin)

    def must(self, *args: str, stdin: bytes | None = None) -> Result:
        """An etcdctl command used for setup; it must succeed."""
        r = self.etcdctl(*args, stdin=stdin)
        assert r.rc == 0, (args, r)
        return r

    def reset(self, prefix: str, kvs: Sequence[tuple[str, str]] = ()) -> None:
        self.must("del", "--prefix", prefix)
        for k, v in kvs:
            self.must("put", k, v)

    def both(
        self,
        args: Sequence[str],
        stdin: bytes | None = None,
        setup: Callable[[], None] | None = None,
    ) -> tuple[Result, Result]:
        if setup is not None:
            setup()
        a = self.run("etcdctl", args, stdin)
        if setup is not None:
            setup()
        b = self.run("raftkv", args, stdin)
        return a, b

    def same(
        self,
        *args: str,
        stdin: bytes | None = None,
        setup: Callable[[], None] | None = None,
        masks: Iterable[Mask] = (),
        errors_only: bool = False,
    ) -> Result:
        """Assert both tools print the same stdout, stderr and exit code (after masks)."""
        masks = list(masks)
        a, b = self.both(args, stdin, setup)
        assert_same(a, b, masks, errors_only, args)
        return b


def error_lines(data: bytes) -> list[bytes]:
    return [ln for ln in data.split(b"\n") if ln.startswith(b"Error:")]


def assert_same(
    a: Result, b: Result, masks: Sequence[Mask] = (), errors_only: bool = False, what: object = ""
) -> None:
    out_a, out_b = apply_masks(a.stdout, masks), apply_masks(b.stdout, masks)
    assert out_b == out_a, f"stdout differs for {what}:\netcdctl: {out_a!r}\nraftkv:  {out_b!r}"
    if errors_only:
        err_a, err_b = error_lines(a.stderr), error_lines(b.stderr)
    else:
        err_a, err_b = apply_masks(a.stderr, masks), apply_masks(b.stderr, masks)
    assert err_b == err_a, f"stderr differs for {what}:\netcdctl: {err_a!r}\nraftkv:  {err_b!r}"
    assert b.rc == a.rc, f"exit code differs for {what}: etcdctl {a.rc}, raftkv {b.rc}"
