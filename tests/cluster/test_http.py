"""The HTTP side on real processes: health probes that change as etcd's do when a member gets
a CORRUPT alarm and loses its leader, curl against the gateway, and the gateway over HTTPS
with client certificates and auth."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from tests.cluster.harness import Cluster, free_ports
from tests.tls_certs import make_certs


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def wait_answer(url: str, want: tuple[int, str], c: Cluster, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    got = get(url)
    while got != want:
        assert time.monotonic() < deadline, f"{url}: {got} != {want}\n" + c.dump_logs(30)
        time.sleep(0.1)
        got = get(url)


def health(ok: bool, reason: str = "") -> tuple[int, str]:
    body = json.dumps({"health": str(ok).lower(), "reason": reason}, separators=(",", ":"))
    return (200, body) if ok else (503, body + "\n")


def with_http_urls(c: Cluster) -> list[str]:
    ports = free_ports(len(c.members))
    for m, port in zip(c.members, ports, strict=True):
        m.extra_args += ["--listen-client-http-urls", f"http://127.0.0.1:{port}"]
    return [f"http://127.0.0.1:{p}" for p in ports]


def test_probes_follow_corruption_and_leader_loss(make_cluster: Callable[..., Cluster]) -> None:
    c = make_cluster(3, start=False)
    urls = with_http_urls(c)
    for i in range(3):
        env = {"RAFTKV_FAILPOINTS": "applyCorruptValue=on"} if i == 1 else None
        c.start(i, env=env)
    c.wait_ready()
    healthy, faulty = urls[0], urls[1]
    for url in urls:
        assert get(f"{url}/health") == health(True)
        assert get(f"{url}/livez") == (200, "ok\n")
        status, text = get(f"{url}/readyz?verbose")
        assert status == 200 and text.endswith("ok\n")
        assert "[+]data_corruption ok\n" in text and "[+]linearizable_read ok\n" in text
        version = json.loads(get(f"{url}/version")[1])
        assert version["etcdserver"].startswith("3.5.")
        c.wait_until(
            lambda url=url: json.loads(get(f"{url}/version")[1])["etcdcluster"] == "3.5.0",
            "the cluster version decided",
        )
    c.etcdctl("put", "k", "v", endpoints=c.members[0].endpoint)
    c.wait_corrupt_alarm(c.members[0].endpoint)
    # the alarm is the cluster's: every member reports it, as etcd's /health does
    for url in (healthy, faulty):
        wait_answer(f"{url}/health", health(False, "ALARM CORRUPT"), c)
        status, text = get(f"{url}/readyz")
        assert status == 503
        assert "[-]data_corruption failed: alarm activated: CORRUPT\n" in text
    # excluding the alarm: the healthy member serves, the diverged one is fenced
    assert get(f"{healthy}/health?exclude=CORRUPT") == health(True)
    assert get(f"{faulty}/health?exclude=CORRUPT") == health(
        False, "RANGE ERROR:etcdserver: corrupt cluster"
    )
    assert get(f"{faulty}/livez")[0] == 503
    assert get(f"{healthy}/readyz?exclude=data_corruption") == (200, "ok\n")
    # the healthy member loses its leader: linearizable checks fail, serializable ones pass
    c.kill(1)
    c.kill(2)
    wait_answer(f"{healthy}/health?exclude=CORRUPT", health(False, "RAFT NO LEADER"), c)
    assert get(f"{healthy}/health?exclude=CORRUPT&serializable=true") == health(True)
    assert get(f"{healthy}/livez") == (200, "ok\n")
    assert get(f"{healthy}/readyz/serializable_read") == (200, "ok\n")
    status, text = get(f"{healthy}/readyz/linearizable_read")
    assert status == 503 and text.startswith("[-]linearizable_read failed: ")
    _types, metrics = _metrics(healthy)
    assert metrics["etcd_server_health_failures"] >= 2
    assert metrics['etcd_server_healthchecks_total{name="linearizable_read",status="error",type="readyz"}'] >= 1  # fmt: skip


def _metrics(url: str) -> tuple[dict[str, str], dict[str, float]]:
    from tests.prom_text import parse

    return parse(get(f"{url}/metrics")[1])


CURL = shutil.which("curl")


def curl(*args: str) -> subprocess.CompletedProcess[str]:
    assert CURL is not None, "curl is not installed (scripts/test installs it)"
    return subprocess.run(
        [CURL, "-sS", "--max-time", "10", *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_gateway_over_https_with_certificates_and_auth(
    make_cluster: Callable[..., Cluster], tmp_path: Path
) -> None:
    certs = make_certs(tmp_path / "certs", client_name="root")
    (port,) = free_ports(1)
    base = f"https://127.0.0.1:{port}"
    c = make_cluster(
        1,
        extra_args=[
            f"--cert-file={certs.server_cert}",
            f"--key-file={certs.server_key}",
            f"--trusted-ca-file={certs.ca}",
            "--client-cert-auth",
            f"--listen-client-http-urls={base}",
        ],
    )
    tls = ["--cacert", str(certs.ca), "--cert", str(certs.client_cert)]
    tls += ["--key", str(certs.client_key)]

    def call(path: str, body: dict[str, object], *extra: str) -> tuple[int, dict[str, object]]:
        res = curl(*tls, *extra, "-w", "\n%{http_code}", "-X", "POST", base + path,
                   "-d", json.dumps(body))  # fmt: skip
        assert res.returncode == 0, res.stderr
        text, code = res.stdout.rsplit("\n", 1)
        return int(code), json.loads(text)

    res = curl(*tls, f"{base}/health")
    assert (res.returncode, res.stdout) == (0, '{"health":"true","reason":""}')
    refused = curl("--cacert", str(certs.ca), f"{base}/health")  # no client certificate
    assert refused.returncode != 0 and refused.stdout == ""
    assert call("/v3/auth/user/add", {"name": "root", "password": "pw"})[0] == 200
    assert call("/v3/auth/user/grant", {"user": "root", "role": "root"})[0] == 200
    assert call("/v3/auth/user/add", {"name": "app", "password": "apw"})[0] == 200
    assert call("/v3/auth/enable", {})[0] == 200
    code, answer = call("/v3/auth/authenticate", {"name": "app", "password": "apw"})
    assert code == 200
    token = str(answer["token"])
    code, answer = call("/v3/kv/put", {"key": "YQ==", "value": "MQ=="}, "-H", f"Authorization: {token}")  # fmt: skip
    assert (code, answer["message"]) == (403, "etcdserver: permission denied")
    code, answer = call("/v3/kv/put", {"key": "YQ=="}, "-H", "Authorization: forged")
    assert (code, answer["message"]) == (401, "etcdserver: invalid auth token")
    # no token: the client certificate's CN (root) is the user, as etcd's --client-cert-auth
    code, answer = call("/v3/kv/put", {"key": "YQ==", "value": "MQ=="})
    assert code == 200 and "header" in answer
    code, answer = call("/v3/auth/authenticate", {"name": "app", "password": "wrong"})
    assert (code, answer["message"]) == (
        400,
        "etcdserver: authentication failed, invalid user ID or password",
    )
    assert c.etcdctl("get", "a", "--print-value-only", "--user=root:pw").stdout.strip() == "1"
