"""The load generator: many asyncio client loops spread over several processes.

Owns: splitting ``clients``, ``conns``, ``total`` and ``rate`` over ``procs`` spawned processes,
each running one asyncio loop with grpc.aio KV stubs; starting them together; collecting every
request's latency and every error; and producing :class:`~raftkv.benchmark.report.Stats`.

Contract: the clock starts when every process has connected its channels and is released by
the start event, and stops at the latest process finish (``time.monotonic`` is system-wide on
Linux), so process start-up and connection set-up are not measured.  Channel ``k`` (numbered
across all processes) dials ``endpoints[k % len(endpoints)]``, each over its own TCP connection.
Request numbers are global: process ``p`` issues the contiguous block ``[offset_p, offset_p +
quota_p)``, pulled by its client loops in order.  Channels use the TLS of ``LoadConfig.security``
(``raftkv.client.tls.channel_transport``); with a user, each channel authenticates once before
the clock starts and every request carries its token (``raftkv.client.auth.AioTokenSession``).
"""

from __future__ import annotations

import asyncio
import functools
import multiprocessing as mp
import os
import queue
import time
from array import array
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from raftkv.benchmark.report import Stats, build_stats
from raftkv.benchmark.workload import RequestFactory, Workload
from raftkv.client.security import ClientSecurity

CONNECT_TIMEOUT = 10.0
PROGRESS_EVERY = 50


@dataclass(frozen=True)
class LoadConfig:
    endpoints: tuple[str, ...]
    workload: Workload
    total: int = 10000
    clients: int = 1
    conns: int = 1
    procs: int = 0
    rate: float = 0.0
    request_timeout: float = 30.0
    seed: int | None = None
    connect_timeout: float = CONNECT_TIMEOUT
    security: ClientSecurity = field(default_factory=ClientSecurity)

    def effective_procs(self) -> int:
        """``procs`` (0 = cpu count) bounded by clients, conns and total: each process needs one
        channel and one client loop."""
        want = self.procs if self.procs > 0 else (os.cpu_count() or 1)
        return max(1, min(want, self.clients, self.conns, max(self.total, 1)))


@dataclass(frozen=True)
class ProcPlan:
    """One load process's share of the run."""

    index: int
    endpoints: tuple[str, ...]
    channel_offset: int
    channels: int
    clients: int
    offset: int
    quota: int
    rate: float


def split(n: int, parts: int) -> list[int]:
    """``n`` split into ``parts`` near-equal non-negative shares, larger shares first."""
    base, extra = divmod(n, parts)
    return [base + (1 if i < extra else 0) for i in range(parts)]


def plan(cfg: LoadConfig) -> list[ProcPlan]:
    procs = cfg.effective_procs()
    clients = split(cfg.clients, procs)
    conns = split(cfg.conns, procs)
    quotas = split(cfg.total, procs)
    plans = []
    chan_off = 0
    req_off = 0
    for p in range(procs):
        plans.append(
            ProcPlan(
                index=p,
                endpoints=cfg.endpoints,
                channel_offset=chan_off,
                channels=conns[p],
                clients=clients[p],
                offset=req_off,
                quota=quotas[p],
                rate=cfg.rate * quotas[p] / cfg.total if cfg.rate > 0 and cfg.total else 0.0,
            )
        )
        chan_off += conns[p]
        req_off += quotas[p]
    return plans


def go_code_name(name: str) -> str:
    """grpc-go's spelling of a status code (``DEADLINE_EXCEEDED`` -> ``DeadlineExceeded``), as
    etcd's benchmark prints it in its error distribution."""
    if name == "CANCELLED":
        return "Canceled"
    return "".join(part.capitalize() for part in name.split("_"))


class _Limiter:
    """Spaces request starts ``1/rate`` seconds apart across the loops of one process."""

    def __init__(self, rate: float) -> None:
        self._interval = 1.0 / rate
        self._next = time.monotonic()

    async def wait(self) -> None:
        now = time.monotonic()
        slot = max(now, self._next)
        self._next = slot + self._interval
        if slot > now:
            await asyncio.sleep(slot - now)


class LoadConnectError(ConnectionError):
    """A load process could not set up its channels; the message is the whole reason."""


async def _open_channels(pl: ProcPlan, cfg: LoadConfig) -> list[tuple[Any, Any]]:
    """``pl.channels`` ready channels, each with its authenticated ``AioTokenSession`` when
    there is a user (else None); LoadConnectError says why not."""
    import grpc

    from raftkv.client.auth import AioTokenSession
    from raftkv.client.conn import grpc_error_text
    from raftkv.client.tls import channel_transport, explain_failure

    options = [("grpc.use_local_subchannel_pool", 1)]
    endpoints = [
        pl.endpoints[(pl.channel_offset + c) % len(pl.endpoints)] for c in range(pl.channels)
    ]
    found = {
        ep: await asyncio.to_thread(channel_transport, ep, cfg.security.tls, cfg.connect_timeout)
        for ep in sorted(set(endpoints))
    }
    transports = {ep: t for ep, t in found.items() if t is not None}
    if len(transports) < len(found):
        unreachable = ", ".join(ep for ep in found if ep not in transports)
        raise LoadConnectError(f"could not reach {unreachable} to fetch its TLS certificate")
    channels = [transports[ep].aio_channel(options) for ep in endpoints]
    opened: list[tuple[Any, Any]] = []
    try:
        try:
            await asyncio.wait_for(
                asyncio.gather(*(ch.channel_ready() for ch in channels)), cfg.connect_timeout
            )
        except TimeoutError:
            for ep in sorted(set(endpoints)):
                why = await asyncio.to_thread(
                    explain_failure, ep, cfg.security.tls, cfg.connect_timeout
                )
                if why is not None:
                    raise LoadConnectError(why) from None
            raise LoadConnectError(
                f"could not connect to {', '.join(pl.endpoints)} within {cfg.connect_timeout:g}s"
            ) from None
        for ch in channels:
            session = None
            if cfg.security.credentials is not None:
                session = AioTokenSession(ch, cfg.security.credentials, cfg.connect_timeout)
                try:
                    await session.authenticate()
                except grpc.aio.AioRpcError as exc:
                    raise LoadConnectError(grpc_error_text(exc)) from None
            opened.append((ch, session))
    except BaseException:
        for ch in channels:
            await ch.close()
        raise
    return opened


async def _proc_async(
    pl: ProcPlan,
    cfg: LoadConfig,
    ready: Any,
    start: Any,
    progress: Any,
) -> tuple[bytes, dict[str, int], float, float]:
    import grpc

    from raftkv.proto import rpc_pb2_grpc

    seed = None if cfg.seed is None else cfg.seed * 1000 + pl.index
    factory = RequestFactory(cfg.workload, seed)
    opened = await _open_channels(pl, cfg)
    channels = [ch for ch, _session in opened]
    try:
        calls: list[Callable[..., Any]] = []
        for ch, session in opened:
            method = getattr(rpc_pb2_grpc.KVStub(ch), cfg.workload.grpc_method)
            calls.append(method if session is None else functools.partial(session.call, method))
        ready.put(pl.index)
        await asyncio.to_thread(start.wait)
        cpu0 = time.process_time()

        lats = array("d")
        errors: dict[str, int] = {}
        limiter = _Limiter(pl.rate) if pl.rate > 0 else None
        state = {"next": pl.offset, "done": 0}
        end = pl.offset + pl.quota
        timeout = cfg.request_timeout
        clock = time.perf_counter

        async def client_loop(call: Callable[..., Any]) -> None:
            while state["next"] < end:
                i = state["next"]
                state["next"] = i + 1
                req = factory.build(i)
                if limiter is not None:
                    await limiter.wait()
                t0 = clock()
                try:
                    await call(req, timeout=timeout)
                    lats.append(clock() - t0)
                except grpc.aio.AioRpcError as exc:
                    msg = (
                        f"rpc error: code = {go_code_name(exc.code().name)} desc = {exc.details()}"
                    )
                    errors[msg] = errors.get(msg, 0) + 1
                state["done"] += 1
                if state["done"] % PROGRESS_EVERY == 0:
                    with progress.get_lock():
                        progress.value += PROGRESS_EVERY

        await asyncio.gather(*(client_loop(calls[c % len(calls)]) for c in range(pl.clients)))
        finished = time.monotonic()
        with progress.get_lock():
            progress.value += state["done"] % PROGRESS_EVERY
        return lats.tobytes(), errors, finished, time.process_time() - cpu0
    finally:
        for ch in channels:
            await ch.close()


def _proc_main(
    pl: ProcPlan, cfg: LoadConfig, ready: Any, start: Any, progress: Any, out: Any
) -> None:
    try:
        coro = _proc_async(pl, cfg, ready, start, progress)
        try:
            import uvloop
        except ImportError:
            result = asyncio.run(coro)
        else:
            result = uvloop.run(coro)
        out.put((pl.index, result, None))
    except LoadConnectError as exc:  # reported to the parent, which fails the run
        out.put((pl.index, None, str(exc)))
    except BaseException as exc:
        out.put((pl.index, None, f"{type(exc).__name__}: {exc}"))


class BenchmarkError(Exception):
    """A load process could not connect or died; the run has no valid result."""


ProgressFn = Callable[[int, int], None]


def run(cfg: LoadConfig, on_progress: ProgressFn | None = None) -> Stats:
    """Runs the benchmark described by ``cfg`` and returns its statistics.

    ``on_progress(done, total)`` is called about every 0.2 s from the calling thread.
    """
    cfg.workload.validate()
    if cfg.total <= 0 or cfg.clients <= 0 or cfg.conns <= 0:
        raise ValueError("--total, --clients and --conns must be positive")
    if not cfg.endpoints:
        raise ValueError("no endpoints")
    plans = plan(cfg)
    ctx = mp.get_context("spawn")
    ready = ctx.Queue()
    out = ctx.Queue()
    start = ctx.Event()
    progress = ctx.Value("q", 0)
    procs = [
        ctx.Process(
            target=_proc_main,
            args=(pl, cfg, ready, start, progress, out),
            name=f"raftkv-bench-{pl.index}",
            daemon=True,
        )
        for pl in plans
    ]
    for p in procs:
        p.start()
    results: dict[int, tuple[bytes, dict[str, int], float, float]] = {}
    try:
        _await_ready(procs, ready, out, len(plans), cfg.connect_timeout + 30)
        t_start = time.monotonic()
        start.set()
        while len(results) < len(plans):
            try:
                idx, result, err = out.get(timeout=0.2)
            except queue.Empty:
                if on_progress is not None:
                    on_progress(int(progress.value), cfg.total)
                dead = [p.name for p in procs if not p.is_alive() and p.exitcode not in (0, None)]
                if dead:
                    raise BenchmarkError(f"load process exited: {', '.join(dead)}") from None
                continue
            if err is not None:
                raise BenchmarkError(f"load process {idx}: {err}")
            results[idx] = result
        if on_progress is not None:
            on_progress(cfg.total, cfg.total)
    finally:
        start.set()
        for p in procs:
            p.join(5)
            if p.is_alive():
                p.kill()
                p.join(5)
    lats = array("d")
    errors: dict[str, int] = {}
    finish = t_start
    cpu = 0.0
    for raw, errs, fin, used in results.values():
        cpu += used
        lats.frombytes(raw)
        for k, v in errs.items():
            errors[k] = errors.get(k, 0) + v
        finish = max(finish, fin)
    return build_stats(finish - t_start, lats, errors, client_cpu=cpu)


def _await_ready(procs: list[Any], ready: Any, out: Any, n: int, limit: float) -> None:
    deadline = time.monotonic() + limit
    got = 0
    while got < n:
        try:
            ready.get(timeout=0.2)
            got += 1
            continue
        except queue.Empty:
            pass
        try:
            idx, _result, err = out.get_nowait()
            raise BenchmarkError(f"load process {idx}: {err}")
        except queue.Empty:
            pass
        if time.monotonic() > deadline:
            raise BenchmarkError("load processes did not connect in time")
        dead = [p.name for p in procs if not p.is_alive()]
        if dead:
            raise BenchmarkError(f"load process exited before start: {', '.join(dead)}")
