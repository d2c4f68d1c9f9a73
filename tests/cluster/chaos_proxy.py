"""A fault-injecting TCP proxy in front of each member's peer port (real processes, loopback).

Owns: ``ChaosNet`` — one asyncio loop in a thread, one listener per member.  Members advertise
the proxy's port as their peer URL and listen on their own, so every peer connection to member
B passes B's proxy.  The proxy reads the connection's first frame (the raftkv peer handshake,
``raftkv.peer.framing.Hello``) to learn which member dialed, then relays both ways.

Faults, changed at any time from any thread:
- ``block(a, b)``: nothing from member ``a`` reaches member ``b`` (its connections to b's proxy
  are closed and new ones refused after the handshake);  ``isolate(i)`` blocks both ways
  between ``i`` and everyone; ``heal()`` lifts every block and delay;
- ``delay(seconds)``: every relayed chunk waits up to that long (drawn per chunk, in order per
  direction, so TCP's ordering holds).

Every block and refusal is counted in ``stats`` (what the chaos test reports).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import threading
from collections import Counter
from collections.abc import Coroutine
from typing import Any

from raftkv.peer import framing


class ChaosNet:
    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="chaos-net", daemon=True)
        self._thread.start()
        self._servers: list[asyncio.Server] = []
        self.ids: dict[int, int] = {}  # member index -> member ID (set once members run)
        self._blocked: set[tuple[int, int]] = set()  # (from index, to index)
        self._delay = 0.0
        # (dialing member's ID, dialed member's index, both writers) of each open connection
        self._conns: list[tuple[int, int, asyncio.StreamWriter, asyncio.StreamWriter]] = []
        self.stats: Counter[str] = Counter()

    # -- from the test's thread ----------------------------------------------------------------

    def _run(self, coro: Coroutine[Any, Any, Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(10)

    def front(self, index: int, target_port: int) -> int:
        """Start the proxy of member ``index`` (relaying to ``target_port``); its port."""
        return int(self._run(self._listen(index, target_port)))

    def block(self, a: int, b: int) -> None:
        self.loop.call_soon_threadsafe(self._block, a, b)

    def isolate(self, i: int, n: int) -> None:
        for j in range(n):
            if j != i:
                self.block(i, j)
                self.block(j, i)

    def delay(self, seconds: float) -> None:
        self.loop.call_soon_threadsafe(setattr, self, "_delay", seconds)

    def heal(self) -> None:
        self.loop.call_soon_threadsafe(self._heal)

    def close(self) -> None:
        self._run(self._close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()

    # -- on the proxy's loop -------------------------------------------------------------------

    async def _listen(self, index: int, target_port: int) -> int:
        async def accept(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            await self._serve(index, target_port, r, w)

        server = await asyncio.start_server(accept, "127.0.0.1", 0)
        self._servers.append(server)
        return int(server.sockets[0].getsockname()[1])

    def _block(self, a: int, b: int) -> None:
        self._blocked.add((a, b))
        self.stats["blocks"] += 1
        for frm_id, to, w1, w2 in list(self._conns):
            if (frm_id, to) == (self.ids.get(a), b):
                self.stats["connections cut"] += 1
                w1.close()
                w2.close()

    def _heal(self) -> None:
        self._blocked.clear()
        self._delay = 0.0

    async def _close(self) -> None:
        for s in self._servers:
            s.close()
        for _f, _t, w1, w2 in self._conns:
            w1.close()
            w2.close()
        for s in self._servers:
            await s.wait_closed()
        # Let the relays see their connections closed and end.
        pending = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for t in pending:
            t.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    async def _serve(
        self, to: int, target_port: int, r: asyncio.StreamReader, w: asyncio.StreamWriter
    ) -> None:
        try:
            kind, payload = await framing.read_frame(r)
            hello = framing.decode_hello(payload)
        except (framing.FrameError, ConnectionError):
            w.close()
            return
        frm = next((i for i, mid in self.ids.items() if mid == hello.frm), -1)
        if (frm, to) in self._blocked:
            self.stats["connections refused"] += 1
            w.close()
            return
        try:
            tr, tw = await asyncio.open_connection("127.0.0.1", target_port)
        except OSError:
            w.close()
            return
        tw.write(framing.encode_frame(kind, payload))
        entry = (hello.frm, to, w, tw)
        self._conns.append(entry)
        try:
            await asyncio.gather(self._pipe(r, tw), self._pipe(tr, w), return_exceptions=True)
        finally:
            self._conns.remove(entry)
            w.close()
            tw.close()

    async def _pipe(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        try:
            while True:
                chunk = await src.read(65536)
                if not chunk:
                    break
                if self._delay:
                    await asyncio.sleep(self.rng.uniform(0, self._delay))
                dst.write(chunk)
                await dst.drain()
        finally:
            with contextlib.suppress(Exception):
                dst.close()
