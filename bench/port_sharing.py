"""What sharing the gRPC client port with HTTP/1.1 would cost raftkv.

etcd serves gRPC and HTTP/1.1 on one port (cmux sniffs each connection, in Go, for free).
grpcio owns its listening socket and cannot take over a connection someone else accepted, so a
Python member could only share the port by accepting every connection itself, sniffing the
first bytes (``PRI * HTTP/2.0`` is gRPC) and relaying gRPC connections to the real gRPC
listener: every call's bytes cross the relay twice.  This measures that relay, the cheapest
one asyncio offers (uvloop, protocols writing straight into the peer transport, no copies in
Python), in front of each member of a 3-member raftkv: put-100 (the ``compare_etcd`` client)
direct and through the relays, alternated, with the relays' CPU per put.

Run from the repository root::

    python bench/port_sharing.py --rounds 5

Figures depend on the machine; nothing asserts on them.  The relay here is a measuring
device, not a feature: raftkv serves HTTP on ``--listen-client-http-urls`` instead.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from compare_etcd import LocalCluster, free_ports, log, put100_rps

HTTP2_PREFACE = b"PRI * HTTP/2.0"


class _Pipe(asyncio.Protocol):
    """One direction's sink: what arrives is written to ``peer`` as it is."""

    def __init__(self) -> None:
        # uvloop's transports are not asyncio.Transport subclasses: typed by use
        self.transport: Any = None
        self.peer: Any = None
        self.pending: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        if self.peer is None:
            self.pending.append(data)
        else:
            self.peer.write(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.peer is not None:
            self.peer.close()


class _Front(_Pipe):
    """An accepted connection: sniffed on its first bytes, then relayed to the gRPC port."""

    def __init__(self, target: tuple[str, int]) -> None:
        super().__init__()
        self.target = target

    def data_received(self, data: bytes) -> None:
        if self.peer is None and not self.pending:
            if not data.startswith(HTTP2_PREFACE[: len(data)]):
                self.transport.close()  # HTTP/1.1 would go to the HTTP server here
                return
            asyncio.get_running_loop().create_task(self._connect())
        super().data_received(data)

    async def _connect(self) -> None:
        loop = asyncio.get_running_loop()
        back_transport, back = await loop.create_connection(_Pipe, *self.target)
        back.peer = self.transport
        for chunk in back.pending:  # the server's first frames may have come already
            self.transport.write(chunk)
        back.pending.clear()
        self.peer = back_transport
        for chunk in self.pending:
            back_transport.write(chunk)
        self.pending.clear()


async def _relay(listen_port: int, target_port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: _Front(("127.0.0.1", target_port)), "127.0.0.1", listen_port
    )
    async with server:
        await server.serve_forever()


def relay_main(listen_port: int, target_port: int) -> None:
    try:
        import uvloop

        uvloop.run(_relay(listen_port, target_port))
    except ImportError:
        asyncio.run(_relay(listen_port, target_port))


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--total", type=int, default=5000)
    p.add_argument(
        "--relay", nargs=2, type=int, metavar=("LISTEN", "TARGET"), help=argparse.SUPPRESS
    )
    args = p.parse_args(argv)
    if args.relay:
        relay_main(*args.relay)
        return 0
    root = Path(tempfile.mkdtemp(prefix="bench-share-"))
    cluster = LocalCluster("raftkv", root)
    relays: list[subprocess.Popen[bytes]] = []
    direct: list[float] = []
    shared: list[float] = []
    relay_cpu: list[float] = []
    try:
        cluster.start()
        ports = free_ports(len(cluster.client_ports))
        for listen, target in zip(ports, cluster.client_ports, strict=True):
            relays.append(
                subprocess.Popen([sys.executable, __file__, "--relay", str(listen), str(target)])
            )
        time.sleep(1.0)
        relayed = [f"http://127.0.0.1:{port}" for port in ports]
        for r in range(args.rounds):
            direct.append(put100_rps(cluster.endpoints, args.total))
            before = sum(cpu_seconds(p.pid) for p in relays)
            shared.append(put100_rps(relayed, args.total))
            relay_cpu.append((sum(cpu_seconds(p.pid) for p in relays) - before) / args.total)
            log(
                f"round {r + 1}: direct {direct[-1]:.0f} puts/s, through relays "
                f"{shared[-1]:.0f} puts/s, relay CPU {relay_cpu[-1] * 1e6:.0f} us/put"
            )
    finally:
        for proc in relays:
            proc.kill()
            proc.wait(5)
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)
    ratios = [s / d for d, s in zip(direct, shared, strict=True)]
    print(f"\nput-100 direct          median {statistics.median(direct):.0f}/s "
          f"(min {min(direct):.0f}, max {max(direct):.0f})")  # fmt: skip
    print(f"put-100 through relays  median {statistics.median(shared):.0f}/s "
          f"(min {min(shared):.0f}, max {max(shared):.0f})")  # fmt: skip
    print(f"ratio relayed / direct  median {statistics.median(ratios):.2f} "
          f"(min {min(ratios):.2f}, max {max(ratios):.2f})")  # fmt: skip
    print(f"relay CPU per put       median {statistics.median(relay_cpu) * 1e6:.0f} us")
    return 0


if __name__ == "__main__":
    sys.exit(main())
