"""Loopback throughput of the peer transport (a figure, not a test; nothing asserts on it).

Run: ``PYTHONPATH=src python -m tests.peer.throughput [--messages N] [--uvloop]``.
Two transports on 127.0.0.1; member 1 streams MsgApp messages (one 64-byte entry
each) to member 2 in bursts, keeping at most ``window`` in flight so the bounded
queue never drops; prints messages/s and the mean number of messages per write.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time

from raftkv.raft.types import Message
from tests.peer.harness import Node, app, mesh


async def measure(n_msgs: int, burst: int, window: int) -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as tmp:
        a, b = Node(1, tmp), Node(2, tmp)
        await a.t.start()
        await b.t.start()
        try:
            await mesh([a, b])
            batches: list[list[Message]] = [
                [app(1, 2, i, b"v" * 64) for i in range(s, min(s + burst, n_msgs))]
                for s in range(0, n_msgs, burst)
            ]
            start = time.perf_counter()
            sent = 0
            for batch in batches:
                while sent - len(b.received) > window:
                    await asyncio.sleep(0.0005)
                a.t.send(batch)
                sent += len(batch)
                await asyncio.sleep(0)
            while len(b.received) < n_msgs:
                await asyncio.sleep(0.0005)
            elapsed = time.perf_counter() - start
            if a.t.peer_stats(2).messages_dropped:
                raise RuntimeError("messages were dropped; lower --window")
            writes = a.t.peer_stats(2).writes
            return n_msgs / elapsed, n_msgs / max(writes, 1)
        finally:
            await a.t.stop()
            await b.t.stop()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--messages", type=int, default=200_000)
    p.add_argument("--burst", type=int, default=500)
    p.add_argument("--window", type=int, default=3000)
    p.add_argument("--uvloop", action="store_true")
    args = p.parse_args(argv)
    if args.uvloop:
        import uvloop

        uvloop.install()
    rate, per_write = asyncio.run(measure(args.messages, args.burst, args.window))
    loop = "uvloop" if args.uvloop else "asyncio"
    print(f"{args.messages} messages: {rate:,.0f} msg/s, {per_write:.0f} msgs/write ({loop})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
