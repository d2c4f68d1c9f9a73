"""The ceiling of Python's gRPC stack on this machine: a null etcd KV server.

Starts a grpc.aio server (uvloop when installed) that implements etcd's KV.Range and KV.Put
by returning a constant response — no Raft, no storage, no validation — and drives it with
the same load generator and parameters as ``compare_etcd.py``'s 100-client scenarios.  What
it measures is the most one raftkv member process could answer if everything behind the gRPC
layer cost nothing; compare it with etcd's figures from ``compare_etcd.py``.

    python bench/grpc_ceiling.py --total 20000
    python bench/grpc_ceiling.py --compare-runtime --rounds 3   # member runtime vs gRPC defaults

The null server runs with a member's runtime settings (``raftkv.server.runtime``: gRPC's
switches, the GC thresholds) unless ``--grpc-defaults``; ``--compare-runtime`` alternates
both, puts only, and also prints the server's CPU per call.

``NullFleet`` puts null servers in a cluster's place (one port per member, several processes
sharing each port as a member's fronts do); ``front_process.py --setups etcd,null`` measures
them beside etcd and raftkv in the same rounds: the ceiling of any member on Python's gRPC.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "bench"))

from compare_etcd import free_ports  # noqa: E402
from cpu_per_request import process_cpu  # noqa: E402

from raftkv.benchmark import report, runner  # noqa: E402
from raftkv.benchmark.workload import Workload  # noqa: E402


def serve(port: int, member_runtime: bool) -> None:
    if member_runtime:
        from raftkv.server.runtime import apply_grpc_defaults, tune_gc

        apply_grpc_defaults()
        tune_gc()
    import grpc.aio

    from raftkv.proto import rpc_pb2 as pb
    from raftkv.proto import rpc_pb2_grpc as pb_grpc

    class NullKV(pb_grpc.KVServicer):
        async def Range(self, request: pb.RangeRequest, context: object) -> pb.RangeResponse:
            return pb.RangeResponse(header=pb.ResponseHeader(revision=1))

        async def Put(self, request: pb.PutRequest, context: object) -> pb.PutResponse:
            return pb.PutResponse(header=pb.ResponseHeader(revision=1))

        async def DeleteRange(
            self, request: pb.DeleteRangeRequest, context: object
        ) -> pb.DeleteRangeResponse:
            return pb.DeleteRangeResponse(header=pb.ResponseHeader(revision=1))

    async def main() -> None:
        # SO_REUSEPORT, as a member's fronts: processes of one fleet member share its port
        server = grpc.aio.server(options=[("grpc.so_reuseport", 1)])
        pb_grpc.add_KVServicer_to_server(NullKV(), server)  # type: ignore[abstract]
        server.add_insecure_port(f"127.0.0.1:{port}")
        await server.start()
        await server.wait_for_termination()

    try:
        import uvloop

        uvloop.run(main())
    except ImportError:
        asyncio.run(main())


def start_server(member_runtime: bool, port: int = 0) -> tuple[subprocess.Popen[bytes], int]:
    """One null server process on ``port`` (0: a free one); returns it and its port."""
    port = port or free_ports(1)[0]
    argv = [sys.executable, __file__, "--serve", str(port)]
    if not member_runtime:
        argv.append("--grpc-defaults")
    env = dict(os.environ)
    env.pop("GRPC_EXPERIMENTS", None)
    proc = subprocess.Popen(argv, env=env)
    time.sleep(1.5)
    return proc, port


def load(port: int, workload: Workload, total: int) -> report.Stats:
    cfg = runner.LoadConfig(
        endpoints=(f"127.0.0.1:{port}",),
        workload=workload,
        total=total,
        clients=100,
        conns=10,
        seed=1,
    )
    return runner.run(cfg)


PUTS = Workload("put", 8, 256, key_space_size=100000, sequential=True)


def compare_runtime(total: int, rounds: int) -> None:
    print("| gRPC runtime | puts/s | server CPU ms/call | client CPU ms/call |")
    print("|---|---|---|---|")
    for _ in range(rounds):
        for member_runtime in (False, True):
            proc, port = start_server(member_runtime)
            try:
                before = process_cpu(proc.pid)
                stats = load(port, PUTS, total)
                server = (process_cpu(proc.pid) - before) / total * 1e3
            finally:
                proc.kill()
                proc.wait(10)
            name = "member (raftkv serve)" if member_runtime else "gRPC defaults"
            client = stats.client_cpu / total * 1e3
            print(f"| {name} | {stats.rps:.0f} | {server:.3f} | {client:.3f} |", flush=True)


class NullFleet:
    """Null servers in place of a cluster: ``members`` ports, ``processes`` per port."""

    def __init__(self, members: int, processes: int) -> None:
        ports = free_ports(members)
        self.endpoints = [f"http://127.0.0.1:{p}" for p in ports]
        self.procs = [start_server(True, port)[0] for port in ports for _ in range(processes)]

    def stop(self) -> None:
        for proc in self.procs:
            proc.kill()
            proc.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--total", type=int, default=10000)
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    parser.add_argument(
        "--grpc-defaults",
        action="store_true",
        help="run the null server with gRPC's and Python's defaults, not a member's runtime",
    )
    parser.add_argument(
        "--compare-runtime",
        action="store_true",
        help="alternate gRPC defaults and the member runtime (puts), with server CPU per call",
    )
    parser.add_argument("--rounds", type=int, default=2, help="rounds of --compare-runtime")
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, member_runtime=not args.grpc_defaults)
        return
    if args.compare_runtime:
        compare_runtime(args.total, args.rounds)
        return
    proc, port = start_server(member_runtime=not args.grpc_defaults)
    try:
        print("| scenario (null gRPC server) | req/s | p99 |")
        print("|---|---|---|")
        for title, workload in (
            ("100 clients, puts", PUTS),
            ("100 clients, range", Workload("range", range_key=b"foo", serializable=True)),
        ):
            stats = load(port, workload, args.total)
            p99 = stats.percentile_map()["p99"] * 1000
            print(f"| {title} | {stats.rps:.0f} | {p99:.1f} ms |", flush=True)
    finally:
        proc.kill()
        proc.wait(10)


if __name__ == "__main__":
    main()
