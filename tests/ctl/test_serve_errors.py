"""``raftkv serve``'s clean edges, each through a real ``python -m raftkv.ctl.main serve``:

- a member that cannot start (data dir a file or without permission, a port in use, bad TLS
  material, a corrupt WAL) prints one line naming the cause and the path or URL and exits 1;
  the traceback only with ``--log-level debug``; ``--log-format json`` gives JSON objects only;
- a fatal error after start-up (the snapshot directory removed under a running member) is one
  line too;
- a watch starting exactly at the compacted revision is served, one below it is canceled
  (etcd's ``startRev < compactRev``), checked with etcdctl against raftkv and, when installed,
  the real etcd;
- ``serve --help`` shows every flag's default; an unknown flag prints ``serve``'s usage, exit 2.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

from raftkv.server.config import _FLAGS
from raftkv.wal.files import list_segments
from raftkv.wal.record import RecordType
from raftkv.wal.replay import read_segments
from tests.cluster.harness import (
    ETCDCTL,
    REPO,
    Cluster,
    free_ports,
    installation_env,
    require_etcdctl,
)
from tests.tls_certs import make_certs

RUN_TIMEOUT = 60.0
SETPRIV = shutil.which("setpriv")
# Root passes permission bits through these two capabilities; without them it is refused.
DROP_DAC = ["--bounding-set=-dac_override,-dac_read_search"]


def _serve_argv(
    data_dir: Path, client: int, peer: int, *extra: str, scheme: str = "http", name: str = "n1"
) -> list[str]:
    return [
        sys.executable,
        "-m",
        "raftkv.ctl.main",
        "serve",
        "--name",
        name,
        "--data-dir",
        str(data_dir),
        "--listen-client-urls",
        f"{scheme}://127.0.0.1:{client}",
        "--advertise-client-urls",
        f"{scheme}://127.0.0.1:{client}",
        "--listen-peer-urls",
        f"http://127.0.0.1:{peer}",
        "--initial-advertise-peer-urls",
        f"http://127.0.0.1:{peer}",
        *extra,
    ]


def _run(
    argv: Sequence[str], prefix: Sequence[str] = (), env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run a member that must stop by itself; stdout and stderr together."""
    full_env = installation_env(REPO / "src")
    full_env.update(env or {})
    return subprocess.run(
        [*prefix, *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=RUN_TIMEOUT,
        env=full_env,
        cwd=str(REPO),
        check=False,
    )


def _failure(res: subprocess.CompletedProcess[str]) -> str:
    """The one failure line's message; the run exited 1 without a traceback."""
    out = res.stdout
    assert res.returncode == 1, out
    assert "Traceback" not in out, out
    lines = [ln for ln in out.splitlines() if " CRITICAL " in ln]
    assert len(lines) == 1, out
    return lines[0].split(" CRITICAL raftkv.run: ", 1)[1]


@pytest.fixture
def ports() -> tuple[int, int]:
    client, peer = free_ports(2)
    return client, peer


@pytest.fixture
def listening() -> Iterator[Callable[[int], None]]:
    """Occupy a port with a listening socket for the test's duration."""
    held: list[socket.socket] = []

    def hold(port: int) -> None:
        s = socket.socket()
        s.bind(("127.0.0.1", port))
        s.listen()
        held.append(s)

    yield hold
    for s in held:
        s.close()


def _unprivileged(tmp: Path) -> list[str]:
    """A command prefix under which permission bits apply: none for an ordinary user; for
    root, setpriv without the capabilities that let root pass them (the process stays root,
    so everything root owns stays reachable).  Skips the test when neither works, checked by
    listing a directory of mode 000 under the prefix."""
    if os.geteuid() != 0:
        return []
    if SETPRIV is None:
        pytest.skip("running as root without setpriv: permission bits do not apply to root")
    probe = tmp / "probe"
    probe.mkdir()
    probe.chmod(0)
    try:
        listing = "import os, sys; os.listdir(sys.argv[1])"
        res = subprocess.run(
            [SETPRIV, *DROP_DAC, sys.executable, "-c", listing, str(probe)],
            capture_output=True,
            timeout=RUN_TIMEOUT,
            check=False,
        )
    finally:
        probe.chmod(0o700)
    if res.returncode == 0:
        pytest.skip("running as root: dropping CAP_DAC_OVERRIDE does not apply permission bits")
    return [SETPRIV, *DROP_DAC]


# --------------------------------------------------------------------------- start-up failures


def test_data_dir_is_a_file(tmp_path: Path, ports: tuple[int, int]) -> None:
    data = tmp_path / "data"
    data.write_text("not a directory")
    res = _run(_serve_argv(data, *ports))
    assert _failure(res) == f"cannot open data dir {data}: Not a directory"


def test_data_dir_under_a_file(tmp_path: Path, ports: tuple[int, int]) -> None:
    (tmp_path / "file").write_text("x")
    data = tmp_path / "file" / "data"
    assert (
        _failure(_run(_serve_argv(data, *ports))) == f"cannot open data dir {data}: Not a directory"
    )


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        (0o000, "cannot open data dir {}: Permission denied"),
        (0o500, "cannot write to data dir {}: Permission denied"),
    ],
)
def test_data_dir_without_permission(
    tmp_path: Path, ports: tuple[int, int], mode: int, expected: str
) -> None:
    prefix = _unprivileged(tmp_path)
    data = tmp_path / "data"
    data.mkdir()
    data.chmod(mode)
    try:
        res = _run(_serve_argv(data, *ports), prefix=prefix)
        assert _failure(res) == expected.format(data)
    finally:
        data.chmod(0o700)


@pytest.mark.parametrize("which", ["client requests", "peer traffic"])
def test_port_in_use(
    tmp_path: Path, ports: tuple[int, int], listening: Callable[[int], None], which: str
) -> None:
    client, peer = ports
    busy = client if which == "client requests" else peer
    listening(busy)
    data = tmp_path / "data"
    res = _run(_serve_argv(data, client, peer))
    msg = f"cannot listen for {which} on http://127.0.0.1:{busy}: Address already in use"
    assert _failure(res) == msg
    assert not data.exists()  # as etcd: listeners first, nothing created


def test_missing_cert_file(tmp_path: Path, ports: tuple[int, int]) -> None:
    certs = make_certs(tmp_path / "certs")
    missing = tmp_path / "certs" / "missing.pem"
    argv = _serve_argv(
        tmp_path / "data",
        *ports,
        f"--cert-file={missing}",
        f"--key-file={certs.server_key}",
        scheme="https",
    )
    assert _failure(_run(argv)) == f"cannot read {missing}: No such file or directory"


def test_unreadable_cert_file(tmp_path: Path, ports: tuple[int, int]) -> None:
    prefix = _unprivileged(tmp_path)
    certs = make_certs(tmp_path / "certs")
    certs.server_cert.chmod(0)
    argv = _serve_argv(
        tmp_path / "data",
        *ports,
        f"--cert-file={certs.server_cert}",
        f"--key-file={certs.server_key}",
        scheme="https",
    )
    res = _run(argv, prefix=prefix)
    assert _failure(res) == f"cannot read {certs.server_cert}: Permission denied"


@pytest.mark.parametrize(("prefix", "scheme"), [("", "https"), ("peer-", "http")])
def test_cert_and_key_do_not_match(
    tmp_path: Path, ports: tuple[int, int], prefix: str, scheme: str
) -> None:
    certs = make_certs(tmp_path / "certs")
    argv = _serve_argv(
        tmp_path / "data",
        *ports,
        f"--{prefix}cert-file={certs.server_cert}",
        f"--{prefix}key-file={certs.client_key}",
        scheme=scheme,
    )
    assert _failure(_run(argv)) == (
        f"certificate {certs.server_cert} and key {certs.client_key} do not load: "
        "KEY_VALUES_MISMATCH"
    )


def _stopped_member(root: Path) -> Cluster:
    """A one-member cluster that wrote a few keys and was stopped cleanly."""
    c = Cluster(root, 1)
    root.mkdir(parents=True, exist_ok=True)
    try:
        c.start_all()
        for i in range(5):
            c.etcdctl("put", f"k{i}", f"v{i}")
        assert c.stop(0) == 0, c.dump_logs()
    finally:
        c.close()
    return c


def _flip_a_middle_record(wal_dir: Path) -> tuple[str, int]:
    """Invert one data byte of an entry record that has records after it; (segment, offset)."""
    [read] = list(read_segments(list_segments(str(wal_dir))))
    records = read.scan.records
    victim = next(r for r in records[:-1] if r.type == RecordType.ENTRY and len(r.data) > 0)
    pos = victim.offset + 13  # the frame header (length, prev crc, type) is 13 bytes
    with open(read.segment.path, "r+b") as f:
        f.seek(pos)
        byte = f.read(1)
        f.seek(pos)
        f.write(bytes([byte[0] ^ 0xFF]))
    return read.segment.path, victim.offset


@pytest.fixture
def corrupt_wal(tmp_path: Path) -> tuple[Cluster, str, int]:
    require_etcdctl()
    c = _stopped_member(tmp_path / "c")
    segment, offset = _flip_a_middle_record(c.members[0].data_dir / "member" / "wal")
    return c, segment, offset


def _restart_argv(c: Cluster, *extra: str) -> list[str]:
    m = c.members[0]
    extra = ("--initial-cluster", c.initial_cluster, *extra)
    return _serve_argv(m.data_dir, m.client_port, m.peer_port, *extra, name=m.name)


def test_corrupt_wal_names_the_file_and_offset(corrupt_wal: tuple[Cluster, str, int]) -> None:
    c, segment, offset = corrupt_wal
    line = _failure(_run(_restart_argv(c)))
    assert line.startswith(f"wal: corrupt segment {segment} at offset {offset}: "), line


def test_traceback_only_at_debug(corrupt_wal: tuple[Cluster, str, int]) -> None:
    c, segment, offset = corrupt_wal
    res = _run(_restart_argv(c, "--log-level", "debug"))
    assert res.returncode == 1
    assert f"wal: corrupt segment {segment} at offset {offset}" in res.stdout
    assert "Traceback (most recent call last)" in res.stdout
    assert "WALCorruptionError" in res.stdout


def test_json_failure_is_one_object(corrupt_wal: tuple[Cluster, str, int]) -> None:
    c, segment, offset = corrupt_wal
    res = _run(_restart_argv(c, "--log-format", "json"))
    assert res.returncode == 1
    objs = [json.loads(line) for line in res.stdout.splitlines() if line.strip()]
    fatal = [o for o in objs if o["level"] == "fatal"]
    assert len(fatal) == 1, res.stdout
    assert fatal[0]["msg"].startswith(f"wal: corrupt segment {segment} at offset {offset}: ")
    assert "stacktrace" not in fatal[0]


def test_bad_failpoints_spec_is_one_line(tmp_path: Path, ports: tuple[int, int]) -> None:
    res = _run(_serve_argv(tmp_path / "data", *ports), env={"RAFTKV_FAILPOINTS": "nope=on"})
    assert res.returncode == 2
    assert res.stdout.startswith("raftkv serve: RAFTKV_FAILPOINTS: unknown failpoint 'nope'")
    assert len(res.stdout.strip().splitlines()) == 1


# ------------------------------------------------------------------ a fatal error after start-up


def test_fatal_error_after_start_is_one_json_line(tmp_path: Path, ports: tuple[int, int]) -> None:
    require_etcdctl()  # scripts/test installs it: a missing one fails, never skips
    client, peer = ports
    data = tmp_path / "data"
    log_path = tmp_path / "member.log"
    argv = _serve_argv(data, client, peer, "--snapshot-count", "3", "--log-format", "json")
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=installation_env(REPO / "src"),
            cwd=str(REPO),
        )
    try:
        _etcdctl_until(client, ["put", "ready", "1"], lambda r: r.returncode == 0, proc)
        shutil.rmtree(data / "member" / "snap")  # the next snapshot cannot be written
        deadline = time.monotonic() + 30
        i = 0
        while proc.poll() is None and time.monotonic() < deadline:
            _etcdctl(client, ["put", f"k{i}", "v"])
            i += 1
        assert proc.wait(timeout=30) == 1
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
    out = log_path.read_text()
    assert "Traceback" not in out, out
    objs = [json.loads(line) for line in out.splitlines() if line.strip()]
    stopped = [o for o in objs if o["msg"].startswith("member stopped on a fatal error: ")]
    assert len(stopped) == 1 and stopped[0]["level"] == "fatal", out
    assert f"{data / 'member' / 'snap'}" in stopped[0]["msg"]
    assert stopped[0]["msg"].endswith(": No such file or directory")


def _etcdctl(client: int, args: list[str]) -> subprocess.CompletedProcess[str]:
    assert ETCDCTL is not None
    return subprocess.run(
        [
            ETCDCTL,
            f"--endpoints=127.0.0.1:{client}",
            "--dial-timeout=1s",
            "--command-timeout=2s",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        env={**os.environ, "ETCDCTL_API": "3"},
        check=False,
    )


def _etcdctl_until(
    client: int,
    args: list[str],
    ok: Callable[[subprocess.CompletedProcess[str]], bool],
    proc: subprocess.Popen[bytes] | None = None,
) -> subprocess.CompletedProcess[str]:
    deadline = time.monotonic() + 30
    while True:
        res = _etcdctl(client, args)
        if ok(res):
            return res
        assert proc is None or proc.poll() is None, "the member exited"
        assert time.monotonic() < deadline, res
        time.sleep(0.2)


# ------------------------------------------------------------- watch at the compacted revision


def _raftkv_endpoint(root: Path) -> Iterator[str]:
    c = Cluster(root, 1)
    root.mkdir(parents=True, exist_ok=True)
    try:
        c.start_all()
        yield c.members[0].endpoint
    finally:
        c.close()


def _etcd_endpoint(root: Path) -> Iterator[str]:
    from tests.compat.servers import require_etcd
    from tests.ctl.harness import start_etcd

    require_etcd()
    server = start_etcd(root)
    try:
        yield server.endpoint
    finally:
        server.close()


@pytest.fixture(params=["raftkv", "etcd"])
def endpoint(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    start = _raftkv_endpoint if request.param == "raftkv" else _etcd_endpoint
    yield from start(tmp_path / str(request.param))


def _watch(
    endpoint: str, args: list[str], want_lines: int, tmp: Path
) -> tuple[int | None, list[str], str]:
    """``etcdctl watch``: until it printed ``want_lines`` lines or exited (bounded);
    (exit status or None when it was stopped, stdout lines, stderr)."""
    assert ETCDCTL is not None
    out_path, err_path = tmp / "watch.out", tmp / "watch.err"
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        proc = subprocess.Popen(
            [ETCDCTL, f"--endpoints={endpoint}", "watch", *args],
            stdout=out,
            stderr=err,
            env={**os.environ, "ETCDCTL_API": "3"},
        )
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and proc.poll() is None:
            if len(out_path.read_text().splitlines()) >= want_lines:
                break
            time.sleep(0.05)
        code = proc.poll()
    finally:
        if proc.poll() is None:
            proc.terminate()
        proc.wait(10)
    return code, out_path.read_text().splitlines(), err_path.read_text()


def test_watch_at_the_compacted_revision(endpoint: str, tmp_path: Path) -> None:
    require_etcdctl()
    client = int(endpoint.rsplit(":", 1)[1])
    for i in range(1, 5):
        _etcdctl_until(client, ["put", "cw/k", f"v{i}"], lambda r: r.returncode == 0)
    res = _etcdctl(client, ["put", "cw/k", "v5", "-w", "json"])
    compacted = int(json.loads(res.stdout)["header"]["revision"])
    _etcdctl(client, ["put", "cw/k", "v6"])
    assert _etcdctl(client, ["compaction", str(compacted)]).returncode == 0

    code, lines, err = _watch(endpoint, ["cw/k", f"--rev={compacted}"], 6, tmp_path)
    assert code is None, err  # still watching: served, not canceled
    assert lines == ["PUT", "cw/k", "v5", "PUT", "cw/k", "v6"], (lines, err)

    code, lines, err = _watch(endpoint, ["cw/k", f"--rev={compacted - 1}"], 1, tmp_path)
    assert code is not None and code != 0, (lines, err)
    assert lines == []
    assert "required revision has been compacted" in err, err


# ----------------------------------------------------------------------------------- the help


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "raftkv.ctl.main", *args],
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        env=installation_env(REPO / "src"),
        cwd=str(REPO),
        check=False,
    )


def test_help_shows_every_default() -> None:
    res = _cli("serve", "--help")
    assert res.returncode == 0, res.stderr
    text = " ".join(res.stdout.split())  # argparse wraps the help lines
    assert text.count("(default:") == len(_FLAGS) + 1  # and --config-file
    for flag, default in [
        ("--name NAME", "'default'"),
        ("--listen-client-urls LISTEN-CLIENT-URLS", "'http://127.0.0.1:2379'"),
        ("--snapshot-count SNAPSHOT-COUNT", "'100000'"),
        ("--quota-backend-bytes QUOTA-BACKEND-BYTES", "'2147483648'"),
        ("--backend-batch-interval BACKEND-BATCH-INTERVAL", "'100ms'"),
        ("--strict-reconfig-check [STRICT-RECONFIG-CHECK]", "'true'"),
        ("--auto-tls [AUTO-TLS]", "'false'"),
        ("--cert-file CERT-FILE", "''"),
    ]:
        start = text.index(flag, text.index("options:"))
        assert text[start:].split("--", 2)[1].rstrip().endswith(f"(default: {default})"), flag


def test_unknown_flag_prints_serve_usage() -> None:
    res = _cli("serve", "--bogus")
    assert res.returncode == 2
    assert res.stdout == ""
    assert res.stderr.startswith("usage: raftkv serve ")
    assert res.stderr.rstrip().endswith("raftkv serve: error: unrecognized arguments: --bogus")
    assert "Traceback" not in res.stderr
