"""The ceiling of Python's gRPC stack on this machine: a null etcd KV server.

Starts a grpc.aio server (uvloop when installed) that implements etcd's KV.Range and KV.Put
by returning a constant response — no Raft, no storage, no validation — and drives it with
the same load generator and parameters as ``compare_etcd.py``'s 100-client scenarios.  What
it measures is the most one raftkv member process could answer if everything behind the gRPC
layer cost nothing; compare it with etcd's figures from ``compare_etcd.py``.

    python bench/grpc_ceiling.py --total 20000
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from raftkv.benchmark import runner  # noqa: E402
from raftkv.benchmark.workload import Workload  # noqa: E402


def serve(port: int) -> None:
    import grpc.aio

    from raftkv.proto import rpc_pb2 as pb
    from raftkv.proto import rpc_pb2_grpc as pb_grpc

    class NullKV(pb_grpc.KVServicer):
        async def Range(self, request: pb.RangeRequest, context: object) -> pb.RangeResponse:
            return pb.RangeResponse(header=pb.ResponseHeader(revision=1))

        async def Put(self, request: pb.PutRequest, context: object) -> pb.PutResponse:
            return pb.PutResponse(header=pb.ResponseHeader(revision=1))

    async def main() -> None:
        server = grpc.aio.server()
        pb_grpc.add_KVServicer_to_server(NullKV(), server)  # type: ignore[abstract]
        server.add_insecure_port(f"127.0.0.1:{port}")
        await server.start()
        await server.wait_for_termination()

    try:
        import uvloop

        uvloop.run(main())
    except ImportError:
        asyncio.run(main())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--total", type=int, default=10000)
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve)
        return
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    proc = subprocess.Popen([sys.executable, __file__, "--serve", str(port)])
    try:
        time.sleep(1.5)
        print("| scenario (null gRPC server) | req/s | p99 |")
        print("|---|---|---|")
        for title, workload in (
            ("100 clients, puts", Workload("put", 8, 256, key_space_size=100000, sequential=True)),
            ("100 clients, range", Workload("range", range_key=b"foo", serializable=True)),
        ):
            cfg = runner.LoadConfig(
                endpoints=(f"127.0.0.1:{port}",),
                workload=workload,
                total=args.total,
                clients=100,
                conns=10,
                seed=1,
            )
            stats = runner.run(cfg)
            p99 = stats.percentile_map()["p99"] * 1000
            print(f"| {title} | {stats.rps:.0f} | {p99:.1f} ms |", flush=True)
    finally:
        proc.kill()
        proc.wait(10)


if __name__ == "__main__":
    main()
