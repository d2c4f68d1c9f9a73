"""The HTTP side, measured beside a real etcd in the same run.

Two measurements, each over alternated rounds (median and spread; nothing asserts on them):

- ``gateway`` (default): puts through the JSON gateway (``POST /v3/kv/put``) with
  ``--clients`` keep-alive connections spread over the three members, driven by ``wrk``
  (``apt-get install wrk``): a 3-member raftkv (gateway on ``--listen-client-http-urls``)
  against a 3-member etcd (gateway on its client URLs).
- ``grpc-cost``: raftkv's gRPC put-100 (the ``compare_etcd`` client) on a cluster serving
  HTTP on ``--listen-client-http-urls`` against one that serves none: what the HTTP listener
  costs the gRPC path.

Run from the repository root::

    python bench/http_gateway.py --rounds 5
    python bench/http_gateway.py --mode grpc-cost --rounds 5
"""

from __future__ import annotations

import argparse
import base64
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from compare_etcd import LocalCluster, log, put100_rps

WRK = shutil.which("wrk") or "wrk"


WRK_SCRIPT = """
keys = {%s}
n = 0
wrk.method = "POST"
request = function()
  n = n + 1
  local body = '{"key":"' .. keys[(n %% #keys) + 1] .. '","value":"%s"}'
  return wrk.format(nil, "/v3/kv/put", nil, body)
end
"""


def gateway_puts(endpoints: list[str], seconds: float, clients: int, work: Path) -> float:
    """Puts per second through ``POST /v3/kv/put`` with ``wrk`` (C, two threads: the client
    costs little next to the members), ``clients`` connections spread over the members;
    raises when any answer is not 200."""
    keys = ",".join(f'"{base64.b64encode(b"gw%06d" % i).decode()}"' for i in range(10000))
    script = work / "put.lua"
    script.write_text(WRK_SCRIPT % (keys, base64.b64encode(b"v" * 256).decode()))
    per_member = max(1, clients // len(endpoints))
    procs = [
        subprocess.Popen(
            [WRK, "-t1", f"-c{per_member}", f"-d{seconds}s", "-s", str(script), url],
            stdout=subprocess.PIPE,
            text=True,
        )
        for url in endpoints
    ]
    total = 0.0
    for proc in procs:
        out, _ = proc.communicate(timeout=seconds + 60)
        if "Non-2xx" in out or proc.returncode != 0:
            raise RuntimeError(f"wrk saw failed requests:\n{out}")
        (rate,) = re.findall(r"Requests/sec:\s+([\d.]+)", out)
        total += float(rate)
    return total


def summary(values: list[float]) -> str:
    return (
        f"median {statistics.median(values):7.0f}/s  (min {min(values):.0f}, max {max(values):.0f})"
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--mode", choices=("gateway", "grpc-cost"), default="gateway")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--total", type=int, default=5000, help="gRPC puts per round (grpc-cost)")
    p.add_argument("--seconds", type=int, default=10, help="wrk's duration per round (gateway)")
    p.add_argument("--clients", type=int, default=99, help="HTTP connections over all members")
    args = p.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="bench-http-"))
    if args.mode == "gateway":
        a = LocalCluster("etcd", root / "etcd")
        b = LocalCluster("raftkv", root / "raftkv", http=True)
    else:
        a = LocalCluster("raftkv", root / "plain")
        b = LocalCluster("raftkv", root / "http", http=True)
    labels = (
        ("etcd gateway", "raftkv gateway")
        if args.mode == "gateway"
        else ("raftkv gRPC put-100, no HTTP listener", "raftkv gRPC put-100, HTTP listener")
    )
    results: tuple[list[float], list[float]] = ([], [])
    try:
        for cluster in (a, b):
            (cluster.root).mkdir(parents=True)
            cluster.start()
        for r in range(args.rounds):
            for i, cluster in enumerate((a, b)):
                if args.mode == "gateway":
                    rate = gateway_puts(cluster.http_endpoints, args.seconds, args.clients, root)
                else:
                    rate = put100_rps(cluster.endpoints, args.total)
                results[i].append(rate)
                log(f"round {r + 1}: {labels[i]}: {rate:.0f} puts/s")
    finally:
        for cluster in (a, b):
            cluster.stop()
        shutil.rmtree(root, ignore_errors=True)
    ratios = [y / x for x, y in zip(*results, strict=True)]
    print(f"\n{labels[0]:40s} {summary(results[0])}")
    print(f"{labels[1]:40s} {summary(results[1])}")
    print(
        f"{'ratio (second / first, per round)':40s} median {statistics.median(ratios):.2f} "
        f"(min {min(ratios):.2f}, max {max(ratios):.2f})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
