"""Side-by-side benchmark: a 3-member real etcd against a 3-member raftkv on this machine.

Owns: starting each cluster on fresh loopback ports and temporary data directories (etcd from
``/usr/bin/etcd``, raftkv as ``python -m raftkv.ctl.main serve`` with the same etcd flags),
running the same scenarios with the same client (``raftkv.benchmark``) and parameters against
each, optionally ``etcdctl check perf``, stopping the cluster, and printing the comparison.

Run from the repository root::

    python bench/compare_etcd.py                      # quick run, all scenarios (< 2 min)
    python bench/compare_etcd.py --total 20000 --check-perf s,m --json out.json
    python bench/compare_etcd.py --security tls       # client and peer mTLS on both systems
    python bench/compare_etcd.py --security auth      # auth enabled, the load as user root

``--security tls`` gives both systems the same certificates (made with ``trustme``): https
client URLs with ``--client-cert-auth`` and https peer URLs with ``--peer-client-cert-auth``;
``--security auth`` enables auth (user ``root``, etcd's default bcrypt cost) and runs the
load authenticated (one Authenticate per connection, the token on every call).

Figures depend on the machine and on whatever else runs on it; nothing here asserts on them.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from raftkv.benchmark import report, runner  # noqa: E402
from raftkv.benchmark.workload import Workload  # noqa: E402
from raftkv.client.security import ClientSecurity, Credentials, TLSSettings  # noqa: E402

ETCD_BIN = shutil.which("etcd") or "/usr/bin/etcd"
ETCDCTL_BIN = shutil.which("etcdctl") or "/usr/bin/etcdctl"
RANGE_KEY = b"foo"


@dataclass(frozen=True)
class Scenario:
    name: str
    title: str
    clients: int
    conns: int
    workload: Workload
    seq_total: bool = False  # uses --total-seq instead of --total

    def load(
        self,
        endpoints: list[str],
        total: int,
        procs: int = 0,
        security: ClientSecurity | None = None,
    ) -> runner.LoadConfig:
        """This scenario as a load run: ``total`` requests against ``endpoints`` from ``procs``
        load processes (0: one per core), seed 1 as every benchmark here."""
        return runner.LoadConfig(
            endpoints=tuple(endpoints),
            workload=self.workload,
            total=total,
            clients=self.clients,
            conns=self.conns,
            procs=procs,
            seed=1,
            security=security or ClientSecurity(),
        )


def scenarios(val_size: int) -> list[Scenario]:
    return [
        Scenario(
            "put-1",
            "1 client, sequential puts",
            1,
            1,
            Workload("put", 8, val_size, key_space_size=100000, sequential=True),
            seq_total=True,
        ),
        Scenario(
            "put-10",
            "10 clients, puts",
            10,
            10,
            Workload("put", 8, val_size, key_space_size=100000, sequential=True),
        ),
        Scenario(
            "put-100",
            "100 clients, puts",
            100,
            10,
            Workload("put", 8, val_size, key_space_size=100000, sequential=True),
        ),
        Scenario(
            "range-l",
            "100 clients, linearizable range",
            100,
            10,
            Workload("range", range_key=RANGE_KEY),
        ),
        Scenario(
            "range-s",
            "100 clients, serializable range",
            100,
            10,
            Workload("range", range_key=RANGE_KEY, serializable=True),
        ),
    ]


def put100_rps(endpoints: list[str], total: int, val_size: int = 256) -> float:
    """Puts per second of the put-100 scenario (one load process) against ``endpoints``."""
    (sc,) = [s for s in scenarios(val_size) if s.name == "put-100"]
    return runner.run(sc.load(endpoints, total, procs=1)).rps


def free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


ROOT_PASSWORD = "bench-root"


@dataclass(frozen=True)
class Security:
    """What the clusters and their clients use: ``mode`` is none, tls or auth; ``certs`` the
    directory of ``ca.pem`` and ``member.pem``/``member-key.pem`` (valid for 127.0.0.1, used
    as server and as client certificate) for tls."""

    mode: str = "none"
    certs: Path | None = None

    @property
    def scheme(self) -> str:
        return "https" if self.mode == "tls" else "http"

    def member_flags(self) -> list[str]:
        if self.mode != "tls" or self.certs is None:
            return []
        ca, cert, key = (str(self.certs / n) for n in ("ca.pem", "member.pem", "member-key.pem"))
        return [
            f"--cert-file={cert}",
            f"--key-file={key}",
            f"--trusted-ca-file={ca}",
            "--client-cert-auth",
            f"--peer-cert-file={cert}",
            f"--peer-key-file={key}",
            f"--peer-trusted-ca-file={ca}",
            "--peer-client-cert-auth",
        ]

    def etcdctl_flags(self) -> list[str]:
        if self.mode == "auth":
            return [f"--user=root:{ROOT_PASSWORD}"]
        if self.mode != "tls" or self.certs is None:
            return []
        return [
            f"--cacert={self.certs / 'ca.pem'}",
            f"--cert={self.certs / 'member.pem'}",
            f"--key={self.certs / 'member-key.pem'}",
        ]

    def client(self) -> ClientSecurity:
        if self.mode == "auth":
            return ClientSecurity(credentials=Credentials("root", ROOT_PASSWORD))
        if self.mode != "tls" or self.certs is None:
            return ClientSecurity()
        tls = TLSSettings(
            cacert=str(self.certs / "ca.pem"),
            cert=str(self.certs / "member.pem"),
            key=str(self.certs / "member-key.pem"),
            insecure_transport=False,
        )
        return ClientSecurity(tls=tls)


def make_security(mode: str, root: Path) -> Security:
    if mode != "tls":
        return Security(mode)
    import trustme

    ca = trustme.CA(organization_name="raftkv bench")
    leaf = ca.issue_cert("127.0.0.1", "localhost", common_name="member")
    root.mkdir(parents=True, exist_ok=True)
    ca.cert_pem.write_to_path(str(root / "ca.pem"))
    leaf.cert_chain_pems[0].write_to_path(str(root / "member.pem"))
    leaf.private_key_pem.write_to_path(str(root / "member-key.pem"))
    return Security(mode, root)


class LocalCluster:
    """Three members of ``kind`` ("etcd" or "raftkv") on loopback; all killed by ``stop``."""

    def __init__(
        self,
        kind: str,
        root: Path,
        size: int = 3,
        security: Security | None = None,
        http: bool = False,
    ) -> None:
        """``http``: raftkv members also serve HTTP (the JSON gateway, health, metrics) on
        ``--listen-client-http-urls`` (``http_endpoints``); etcd serves it on its client URLs."""
        self.kind = kind
        self.root = root
        self.security = security or Security()
        ports = free_ports(3 * size)
        self.names = [f"{kind}{i + 1}" for i in range(size)]
        self.client_ports = ports[0 : 3 * size : 3]
        self.peer_ports = ports[1 : 3 * size : 3]
        self.http_ports = ports[2 : 3 * size : 3] if http and kind == "raftkv" else []
        self.procs: list[subprocess.Popen[bytes]] = []

    @property
    def http_endpoints(self) -> list[str]:
        """Where the JSON gateway answers."""
        if self.kind == "etcd":
            return self.endpoints
        return [f"{self.security.scheme}://127.0.0.1:{p}" for p in self.http_ports]

    @property
    def endpoints(self) -> list[str]:
        return [f"{self.security.scheme}://127.0.0.1:{p}" for p in self.client_ports]

    def _argv(self, i: int, initial: str) -> list[str]:
        prog = (
            [ETCD_BIN]
            if self.kind == "etcd"
            else [sys.executable, "-m", "raftkv.ctl.main", "serve"]
        )
        scheme = self.security.scheme
        client = f"{scheme}://127.0.0.1:{self.client_ports[i]}"
        peer = f"{scheme}://127.0.0.1:{self.peer_ports[i]}"
        return [
            *prog,
            "--name",
            self.names[i],
            "--data-dir",
            str(self.root / f"{self.names[i]}.data"),
            "--listen-client-urls",
            client,
            "--advertise-client-urls",
            client,
            "--listen-peer-urls",
            peer,
            "--initial-advertise-peer-urls",
            peer,
            "--initial-cluster",
            initial,
            "--initial-cluster-state",
            "new",
            *self.security.member_flags(),
            *(
                [f"--listen-client-http-urls={scheme}://127.0.0.1:{self.http_ports[i]}"]
                if self.http_ports
                else []
            ),
        ]

    def start(self, timeout: float = 60.0) -> None:
        initial = ",".join(
            f"{n}={self.security.scheme}://127.0.0.1:{p}"
            for n, p in zip(self.names, self.peer_ports, strict=True)
        )
        env = dict(os.environ)
        env["PYTHONPATH"] = str(REPO / "src") + os.pathsep + env.get("PYTHONPATH", "")
        for i in range(len(self.names)):
            with open(self.root / f"{self.names[i]}.log", "ab") as log:
                self.procs.append(
                    subprocess.Popen(
                        self._argv(i, initial), stdout=log, stderr=subprocess.STDOUT, env=env
                    )
                )
        deadline = time.monotonic() + timeout
        pending = set(self.endpoints)
        while pending:
            for p in self.procs:
                if p.poll() is not None:
                    raise RuntimeError(f"{self.kind} member exited: {self.log_tail()}")
            for ep in sorted(pending):
                if self.has_leader(ep):
                    pending.discard(ep)
            if pending:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{self.kind} not ready: {self.log_tail()}")
                time.sleep(0.3)

    def etcdctl(
        self, endpoints: str, *args: str, check: bool = True, timeout: float = 30.0
    ) -> subprocess.CompletedProcess[str]:
        """etcdctl with this cluster's TLS files or root user."""
        return etcdctl(
            endpoints, *self.security.etcdctl_flags(), *args, check=check, timeout=timeout
        )

    def enable_auth(self) -> None:
        """root (with the root role) and auth enabled, as ``etcdctl auth enable`` does."""
        eps = ",".join(self.endpoints)
        etcdctl(eps, "user", "add", f"root:{ROOT_PASSWORD}")
        etcdctl(eps, "auth", "enable")

    def has_leader(self, ep: str) -> bool:
        res = self.etcdctl(ep, "endpoint", "status", "-w", "json", check=False)
        if res.returncode != 0:
            return False
        data = json.loads(res.stdout)
        return bool(data and data[0]["Status"].get("leader"))

    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    def leader_pid(self) -> int | None:
        for ep, p in zip(self.endpoints, self.procs, strict=True):
            res = self.etcdctl(ep, "endpoint", "status", "-w", "json", check=False)
            if res.returncode == 0:
                st = json.loads(res.stdout)[0]["Status"]
                if st.get("leader") == st["header"]["member_id"]:
                    return p.pid
        return None

    def log_tail(self, n: int = 15) -> str:
        out = []
        for name in self.names:
            path = self.root / f"{name}.log"
            if path.exists():
                lines = path.read_text(errors="replace").splitlines()[-n:]
                out.append(f"== {name} ==\n" + "\n".join(lines))
        return "\n".join(out)

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)
        self.procs.clear()


def etcdctl(
    endpoints: str, *args: str, check: bool = True, timeout: float = 30.0
) -> subprocess.CompletedProcess[str]:
    res = subprocess.run(
        [ETCDCTL_BIN, "--endpoints", endpoints, "--dial-timeout=2s", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "ETCDCTL_API": "3"},
    )
    if check and res.returncode != 0:
        raise RuntimeError(f"etcdctl {' '.join(args)}: {res.stderr.strip()}")
    return res


def parse_check_perf(text: str) -> dict[str, str]:
    """Verdicts of ``etcdctl check perf``: ``throughput``, ``slowest``, ``stddev`` and ``result``.

    etcdctl 3.4 prints some failures without a ``FAIL:`` prefix ("Slowest request took too
    long: ..."); those count as failures too.
    """
    out: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if line in ("PASS", "FAIL"):
            out["result"] = line
            continue
        m = re.match(r"(?:(PASS|FAIL):\s*)?(.*)$", line)
        assert m is not None
        verdict, body = m.group(1), m.group(2)
        for key, marker in (
            ("throughput", "Throughput"),
            ("slowest", "Slowest request"),
            ("stddev", "Stddev"),
        ):
            if body.startswith(marker):
                if verdict is None:
                    verdict = "FAIL" if "too " in body else "PASS"
                out[key] = f"{verdict}: {body}"
    return out


def run_cluster(kind: str, args: argparse.Namespace, selected: list[Scenario]) -> dict[str, object]:
    root = Path(tempfile.mkdtemp(prefix=f"cmp-{kind}-"))
    cluster = LocalCluster(kind, root, security=make_security(args.security, root / "certs"))
    results: dict[str, object] = {"scenarios": {}, "check_perf": {}}
    try:
        log(f"starting 3-member {kind} ...")
        t0 = time.monotonic()
        cluster.start()
        log(f"{kind} ready in {time.monotonic() - t0:.1f}s: {','.join(cluster.endpoints)}")
        eps = ",".join(cluster.endpoints)
        if args.security == "auth":
            cluster.enable_auth()
        cluster.etcdctl(eps, "put", RANGE_KEY.decode(), "x" * args.val_size)
        scen_results: dict[str, object] = {}
        for sc in selected:
            total = args.total_seq if sc.seq_total else args.total
            cfg = sc.load(cluster.endpoints, total, args.procs, cluster.security.client())
            log(f"{kind}: {sc.title} (total {total}, procs {cfg.effective_procs()}) ...")
            stats = runner.run(cfg)
            log(
                f"{kind}: {sc.name}: {stats.rps:.0f} req/s, "
                f"p99 {stats.percentile_map()['p99'] * 1000:.1f} ms, errors {stats.error_count}"
            )
            if args.verbose:
                print(f"\n### {kind}: {sc.title}", flush=True)
                print(report.format_text(stats), flush=True)
            scen_results[sc.name] = stats.to_json()
        results["scenarios"] = scen_results
        perf: dict[str, object] = {}
        for load in args.check_perf:
            log(f"{kind}: etcdctl check perf --load={load} (about 60 s) ...")
            res = cluster.etcdctl(eps, "check", "perf", f"--load={load}", check=False, timeout=600)
            perf[load] = {
                "exit": res.returncode,
                "output": (res.stdout + res.stderr).strip(),
                "lines": parse_check_perf(res.stdout),
            }
        results["check_perf"] = perf
    finally:
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)
    return results


def log(msg: str) -> None:
    print(f"[compare] {msg}", file=sys.stderr, flush=True)


def format_table(
    selected: list[Scenario], etcd: dict[str, object], raftkv: dict[str, object]
) -> str:
    header = (
        "scenario",
        "etcd req/s",
        "raftkv req/s",
        "ratio",
        "etcd p99",
        "raftkv p99",
        "client CPU etcd/raftkv",
    )
    rows = [header]
    e_sc = etcd.get("scenarios", {})
    r_sc = raftkv.get("scenarios", {})
    assert isinstance(e_sc, dict) and isinstance(r_sc, dict)
    for sc in selected:
        e, r = e_sc.get(sc.name), r_sc.get(sc.name)
        if e is None or r is None:
            continue
        ratio = r["rps"] / e["rps"] if e["rps"] else 0.0
        rows.append(
            (
                sc.title,
                f"{e['rps']:.0f}",
                f"{r['rps']:.0f}",
                f"{ratio:.2f}",
                f"{e['percentiles']['p99'] * 1000:.1f} ms",
                f"{r['percentiles']['p99'] * 1000:.1f} ms",
                f"{e['client_cpu'] / e['total']:.2f} / {r['client_cpu'] / r['total']:.2f} cores",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = []
    for n, row in enumerate(rows):
        lines.append("| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |")
        if n == 0:
            lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def format_check_perf(kind: str, perf: dict[str, object]) -> str:
    out = []
    for load, res in perf.items():
        assert isinstance(res, dict)
        lines = res["lines"]
        assert isinstance(lines, dict)
        out.append(f"--- {kind}: etcdctl check perf --load={load} (exit {res['exit']})")
        for key in ("throughput", "slowest", "stddev", "result"):
            if key in lines:
                out.append(f"  {lines[key]}")
        if not lines:
            out.extend("  " + ln for ln in str(res["output"]).splitlines()[-5:])
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--total", type=int, default=3000, help="requests per 100-client scenario")
    ap.add_argument(
        "--total-seq", type=int, default=0, help="requests for the 1-client scenario (total/5)"
    )
    ap.add_argument("--val-size", type=int, default=256, help="value size of puts")
    ap.add_argument("--procs", type=int, default=0, help="load processes (0 = cpu count)")
    ap.add_argument(
        "--scenarios",
        default="put-1,put-100,range-l,range-s",
        help="comma-separated subset of put-1,put-100,range-l,range-s",
    )
    ap.add_argument(
        "--systems", default="etcd,raftkv", help="comma-separated subset of etcd,raftkv"
    )
    ap.add_argument(
        "--check-perf", default="", help="etcdctl check perf loads to run, e.g. s or s,m"
    )
    ap.add_argument(
        "--security",
        default="none",
        choices=("none", "tls", "auth"),
        help="client and peer mTLS, or auth enabled, on both systems (default none)",
    )
    ap.add_argument("--json", default="", help="write all results to this file")
    ap.add_argument("-v", "--verbose", action="store_true", help="print each full report")
    args = ap.parse_args(argv)
    args.total_seq = args.total_seq or max(1, args.total // 5)
    args.check_perf = [x for x in args.check_perf.split(",") if x]
    by_name = {s.name: s for s in scenarios(args.val_size)}
    wanted = [x for x in args.scenarios.split(",") if x]
    unknown = [x for x in wanted if x not in by_name]
    if unknown:
        ap.error(f"unknown scenarios: {', '.join(unknown)}")
    selected = [by_name[x] for x in wanted]
    systems = [x for x in args.systems.split(",") if x]
    results: dict[str, dict[str, object]] = {}
    for kind in systems:
        if kind not in ("etcd", "raftkv"):
            ap.error(f"unknown system {kind}")
        results[kind] = run_cluster(kind, args, selected)
    if "etcd" in results and "raftkv" in results:
        print(format_table(selected, results["etcd"], results["raftkv"]))
    else:
        for kind, res in results.items():
            sc = res["scenarios"]
            assert isinstance(sc, dict)
            for name, st in sc.items():
                print(
                    f"{kind} {name}: {st['rps']:.0f} req/s p99 {st['percentiles']['p99'] * 1000:.1f} ms"
                )
    for kind, res in results.items():
        perf = res["check_perf"]
        assert isinstance(perf, dict)
        if perf:
            print(format_check_perf(kind, perf))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
