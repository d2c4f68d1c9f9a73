"""Membership changes side by side: learner catch-up and throughput while members come and go,
for a 3-member real etcd and raftkv on this machine.

Owns: for each kind in turn (etcd from ``/usr/bin/etcd``, raftkv as ``raftkv serve``, both
started by ``compare_etcd.LocalCluster`` with the same etcd flags), on fresh loopback ports and
temporary data directories:

1. *learner catch-up*: load ``--keys`` keys of ``--val-size`` bytes through the KV API (100-put
   txns, ``snapshot_compare.load``); ``etcdctl member add NAME --learner``; start the new member
   (``--initial-cluster-state existing``); time (a) from the new process's start until its
   ``endpoint status`` raftAppliedIndex reaches the leader's raftIndex read just before the
   start, and (b) until ``etcdctl member promote`` succeeds (tried every ``--promote-every``
   seconds from the start; refusals "not in sync with leader" are counted). The new member is
   then removed again (untimed) so that part 2 starts from three voters.
2. *throughput during membership changes*: a constant put load (``--clients`` loops over
   ``--conns`` gRPC connections in ``--procs`` spawned processes, every acknowledged put
   time-stamped) against the two original members that stay; puts/s over three phases:
   ``steady`` (``--steady`` seconds after ``--warmup``), ``add`` (from ``member add --learner``
   through starting the member, its catch-up and a successful promote), and ``remove`` (the
   ``--remove-window`` seconds from ``member remove`` of the third original member, a
   follower). Each phase also reports its worst 0.5 s window and the client errors in it.

A removed member is expected to stop by itself (both systems do, like etcd). One still running
10 s after its removal (part 1) or at the end of the remove window (part 2) is counted in
``removed members left running``, then sent SIGTERM and, 5 s later, SIGKILL.

Timings of part 1 are taken without client load; the catch-up under load is part of phase
``add`` and is reported with it. ``--rounds`` (default 2) repeats both systems with the order
flipped each round (etcd, raftkv, raftkv, etcd); the table shows the median and every round's
figure, the ratio is of the medians.

Run from the repository root::

    python bench/membership_bench.py                  # 100k keys, 2 rounds (~3-4 min, 2 cores)
    python bench/membership_bench.py --keys 10000 --rounds 1 --steady 5 --remove-window 5
    python bench/membership_bench.py --json out.json --systems raftkv --keep

Figures depend on the machine and on whatever else runs on it; nothing here asserts on them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import queue
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from array import array
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from compare_etcd import REPO, LocalCluster, etcdctl, free_ports  # noqa: E402
from snapshot_compare import load  # noqa: E402

from raftkv.benchmark.workload import make_key  # noqa: E402

NOT_IN_SYNC = "can only promote a learner member which is in sync with leader"
UNHEALTHY = "unhealthy cluster"  # etcd: a peer was not connected for the last 5 s
WINDOW = 0.5  # seconds per throughput window
POLL = 0.05  # seconds between status polls of the new member


def log(msg: str) -> None:
    print(f"[membership] {msg}", file=sys.stderr, flush=True)


def reconfigure(endpoint: str, *args: str, patience: float = 30.0) -> str:
    """``etcdctl member ...``, retried every 0.5 s while refused as "unhealthy cluster" (etcd's
    ``--strict-reconfig-check`` wants every peer connected for the last 5 s); stdout."""
    deadline = time.monotonic() + patience
    while True:
        res = etcdctl(endpoint, "member", *args, check=False)
        if res.returncode == 0:
            return res.stdout
        if UNHEALTHY not in res.stderr or time.monotonic() > deadline:
            raise RuntimeError(f"etcdctl member {' '.join(args)}: {res.stderr.strip()}")
        log(f"etcdctl member {args[0]}: {UNHEALTHY}, retrying")
        time.sleep(0.5)


# ---------------------------------------------------------------------------------------------
# the cluster: compare_etcd's launcher, plus members added at run time


class ElasticCluster(LocalCluster):
    """``LocalCluster`` that can start members joining an existing cluster.

    ``names``, ``client_ports``, ``peer_ports`` and ``procs`` stay index-aligned: a member is
    appended to the first three by :meth:`new_member` and to ``procs`` by :meth:`start_member`,
    which must follow at once. ``active`` holds the indexes of the current members.
    """

    def __init__(self, kind: str, root: Path, size: int = 3) -> None:
        super().__init__(kind, root, size)
        self.active = list(range(size))
        self._channels: dict[int, Any] = {}
        self.lingering: list[str] = []  # removed members that did not exit by themselves
        self.ignored_sigterm: list[str] = []

    def new_member(self) -> int:
        client, peer = free_ports(2)
        i = len(self.names)
        self.names.append(f"{self.kind}{i + 1}")
        self.client_ports.append(client)
        self.peer_ports.append(peer)
        return i

    def peer_url(self, i: int) -> str:
        return f"http://127.0.0.1:{self.peer_ports[i]}"

    def start_member(self, i: int) -> subprocess.Popen[bytes]:
        """Starts member ``i`` with ``--initial-cluster-state existing`` and the current
        members plus itself in ``--initial-cluster``."""
        initial = ",".join(f"{self.names[j]}={self.peer_url(j)}" for j in [*self.active, i])
        argv = self._argv(i, initial)
        argv[argv.index("--initial-cluster-state") + 1] = "existing"
        env = {
            **os.environ,
            "PYTHONPATH": str(REPO / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""),
        }
        with open(self.root / f"{self.names[i]}.log", "ab") as logf:
            proc = subprocess.Popen(argv, stdout=logf, stderr=subprocess.STDOUT, env=env)
        self.procs.append(proc)
        self.active.append(i)
        return proc

    def status(self, i: int, timeout: float = 1.0) -> Any:
        """Maintenance.Status of member ``i`` (what ``etcdctl endpoint status`` shows)."""
        import grpc

        from raftkv.proto import rpc_pb2, rpc_pb2_grpc

        ch = self._channels.get(i)
        if ch is None:
            ch = self._channels[i] = grpc.insecure_channel(self.endpoints[i])
        return rpc_pb2_grpc.MaintenanceStub(ch).Status(rpc_pb2.StatusRequest(), timeout=timeout)

    def leader(self) -> tuple[int, Any]:
        """Index and status of the current leader (as seen by a member that knows one)."""
        deadline = time.monotonic() + 30
        while True:
            ids: dict[int, int] = {}
            lead = 0
            for i in self.active:
                try:
                    st = self.status(i)
                except Exception:
                    continue
                ids[st.header.member_id] = i
                lead = lead or st.leader
            if lead in ids:
                i = ids[lead]
                return i, self.status(i)
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.kind}: no leader: {self.log_tail()}")
            time.sleep(0.2)

    def member_id(self, i: int) -> int:
        res = etcdctl(self.endpoints[self.active[0]], "member", "list", "-w", "json")
        for m in json.loads(res.stdout)["members"]:
            if m.get("name") == self.names[i] or self.peer_url(i) in m.get("peerURLs", []):
                return int(m["ID"])
        raise RuntimeError(f"{self.names[i]} not in the member list")

    def add_learner(self, via: int) -> tuple[int, int]:
        """``etcdctl member add --learner``; the new member's index and ID."""
        i = self.new_member()
        out = reconfigure(
            self.endpoints[via],
            "add",
            self.names[i],
            f"--peer-urls={self.peer_url(i)}",
            "--learner",
            "-w",
            "json",
        )
        return i, int(json.loads(out)["member"]["ID"])

    def remove(self, i: int, via: int) -> None:
        reconfigure(self.endpoints[via], "remove", format(self.member_id(i), "x"))
        self.active.remove(i)

    def wait_exit(self, i: int, timeout: float) -> float | None:
        """Seconds until removed member ``i`` exited by itself, or ``None`` after ``timeout``
        (the process is left running; see :meth:`reap`)."""
        t0 = time.monotonic()
        try:
            self.procs[i].wait(timeout)
            return time.monotonic() - t0
        except subprocess.TimeoutExpired:
            log(f"{self.names[i]} still running {timeout:g}s after its removal")
            self.lingering.append(self.names[i])
            return None

    def reap(self, i: int, term_wait: float = 5.0) -> None:
        """Stops removed member ``i`` if it is still running: SIGTERM, then SIGKILL."""
        proc = self.procs[i]
        if proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(term_wait)
        except subprocess.TimeoutExpired:
            log(f"{self.names[i]} ignored SIGTERM for {term_wait:g}s; SIGKILL")
            self.ignored_sigterm.append(self.names[i])
            proc.kill()
            proc.wait(5)

    def close_channels(self) -> None:
        for ch in self._channels.values():
            ch.close()
        self._channels.clear()


@dataclass
class CatchUp:
    """One learner joining: timings from the new process's start."""

    target_index: int = 0
    applied_s: float | None = None
    promoted_s: float | None = None
    refusals: int = 0
    other_errors: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, object]:
        return {
            "target_index": self.target_index,
            "applied_s": self.applied_s,
            "promoted_s": self.promoted_s,
            "promote_refusals": self.refusals,
            "promote_other_errors": self.other_errors,
        }


def join_learner(
    cluster: ElasticCluster, via: int, promote_every: float, timeout: float
) -> tuple[int, CatchUp]:
    """Adds a learner, starts it and promotes it; see the module docstring for the timings."""
    i, mid = cluster.add_learner(via)
    _, lst = cluster.leader()
    out = CatchUp(target_index=lst.raftIndex)
    proc = cluster.start_member(i)
    t0 = time.monotonic()
    next_promote = t0
    while out.applied_s is None or out.promoted_s is None:
        now = time.monotonic()
        if now - t0 > timeout:
            log(f"{cluster.kind}: learner not caught up/promoted after {timeout:.0f}s")
            break
        if proc.poll() is not None:
            raise RuntimeError(f"{cluster.kind}: new member exited: {cluster.log_tail()}")
        if out.applied_s is None:
            try:
                if cluster.status(i, timeout=0.5).raftAppliedIndex >= out.target_index:
                    out.applied_s = time.monotonic() - t0
            except Exception:
                pass  # not listening yet
        if out.promoted_s is None and now >= next_promote:
            res = etcdctl(
                cluster.endpoints[via], "member", "promote", format(mid, "x"), check=False
            )
            if res.returncode == 0:
                out.promoted_s = time.monotonic() - t0
            elif NOT_IN_SYNC in res.stderr:
                out.refusals += 1
            else:
                out.other_errors.append(res.stderr.strip())
            next_promote = now + promote_every
        time.sleep(POLL)
    return i, out


# ---------------------------------------------------------------------------------------------
# the constant load: put loops in spawned processes, every acknowledged put time-stamped


def _load_proc(
    endpoints: list[str],
    channels: int,
    clients: int,
    first: int,
    stride: int,
    val_size: int,
    ready: Any,
    stop: Any,
    out: Any,
) -> None:
    async def main() -> tuple[bytes, list[tuple[float, str]], float]:
        import grpc

        from raftkv.proto import rpc_pb2, rpc_pb2_grpc

        value = os.urandom(val_size)
        chans = [grpc.aio.insecure_channel(endpoints[c % len(endpoints)]) for c in range(channels)]
        await asyncio.wait_for(asyncio.gather(*(ch.channel_ready() for ch in chans)), 15)
        puts = [rpc_pb2_grpc.KVStub(ch).Put for ch in chans]
        acks = array("d")
        errors: list[tuple[float, str]] = []
        running = True

        async def watch_stop() -> None:
            nonlocal running
            await asyncio.to_thread(stop.wait)
            running = False

        async def loop(c: int) -> None:
            call = puts[c % len(puts)]
            n = first + c
            while running:
                req = rpc_pb2.PutRequest(key=make_key(n % 100_000, 8), value=value)
                n += stride
                try:
                    await call(req, timeout=10.0)
                    acks.append(time.monotonic())
                except grpc.aio.AioRpcError as exc:
                    errors.append((time.monotonic(), f"{exc.code().name}: {exc.details()}"))
                    await asyncio.sleep(0.05)

        ready.put(1)
        cpu0 = time.process_time()
        await asyncio.gather(watch_stop(), *(loop(c) for c in range(clients)))
        cpu = time.process_time() - cpu0
        for ch in chans:
            await ch.close()
        return acks.tobytes(), errors, cpu

    try:
        try:
            import uvloop
        except ImportError:
            result = asyncio.run(main())
        else:
            result = uvloop.run(main())
        out.put((result, None))
    except BaseException as exc:
        out.put((None, f"{type(exc).__name__}: {exc}"))


class PutLoad:
    """``clients`` put loops over ``conns`` connections in ``procs`` processes until stopped."""

    def __init__(self, endpoints: list[str], clients: int, conns: int, procs: int, val_size: int):
        procs = max(1, min(procs or (os.cpu_count() or 1), clients, conns))
        ctx = mp.get_context("spawn")
        self._ready = ctx.Queue()
        self._out = ctx.Queue()
        self._stop = ctx.Event()
        self.procs = []
        for p in range(procs):
            share_clients = clients // procs + (1 if p < clients % procs else 0)
            share_conns = conns // procs + (1 if p < conns % procs else 0)
            first = sum(clients // procs + (1 if q < clients % procs else 0) for q in range(p))
            self.procs.append(
                ctx.Process(
                    target=_load_proc,
                    args=(
                        endpoints,
                        share_conns,
                        share_clients,
                        first,
                        clients,
                        val_size,
                        self._ready,
                        self._stop,
                        self._out,
                    ),
                    daemon=True,
                )
            )
        self.acks = array("d")
        self.errors: list[tuple[float, str]] = []
        self.client_cpu = 0.0

    def start(self) -> None:
        for p in self.procs:
            p.start()
        for _ in self.procs:
            try:
                self._ready.get(timeout=30)
            except queue.Empty:
                raise RuntimeError("load processes did not connect") from None

    def stop(self) -> None:
        self._stop.set()
        for _ in self.procs:
            result, err = self._out.get(timeout=60)
            if err is not None:
                raise RuntimeError(f"load process: {err}")
            raw, errors, cpu = result
            self.acks.frombytes(raw)
            self.errors.extend(errors)
            self.client_cpu += cpu
        for p in self.procs:
            p.join(5)
        self.acks = array("d", sorted(self.acks))

    def phase(self, t0: float, t1: float) -> dict[str, object]:
        """Puts/s over ``[t0, t1)``, its worst ``WINDOW`` and the errors seen in it."""
        n = sum(1 for t in self.acks if t0 <= t < t1)
        nwin = max(1, int((t1 - t0) / WINDOW))
        wins = [0] * nwin
        for t in self.acks:
            if t0 <= t < t0 + nwin * WINDOW:
                wins[int((t - t0) / WINDOW)] += 1
        errs: dict[str, int] = {}
        for t, msg in self.errors:
            if t0 <= t < t1:
                errs[msg] = errs.get(msg, 0) + 1
        return {
            "seconds": t1 - t0,
            "puts": n,
            "puts_s": n / (t1 - t0) if t1 > t0 else 0.0,
            "worst_window_puts_s": min(wins) / WINDOW,
            "windows_puts_s": [w / WINDOW for w in wins],
            "errors": errs,
        }


# ---------------------------------------------------------------------------------------------


def run_kind(kind: str, args: argparse.Namespace) -> dict[str, object]:
    root = Path(tempfile.mkdtemp(prefix=f"member-{kind}-"))
    cluster = ElasticCluster(kind, root)
    out: dict[str, object] = {}
    load_gen: PutLoad | None = None
    try:
        log(f"starting 3-member {kind} ...")
        cluster.start()
        t = load(cluster.endpoints, args.keys, args.val_size)
        out["load_s"] = t
        log(f"{kind}: loaded {args.keys} keys of {args.val_size} B in {t:.1f}s")

        # 1. learner catch-up, no client load
        lead, _ = cluster.leader()
        i, cu = join_learner(cluster, lead, args.promote_every, args.catchup_timeout)
        out["catchup"] = cu.to_json()
        log(
            f"{kind}: learner {cluster.names[i]}: applied index {cu.target_index} after "
            f"{cu.applied_s}s, promoted after {cu.promoted_s}s "
            f"({cu.refusals} refusals, other errors {cu.other_errors})"
        )
        lead, _ = cluster.leader()
        cluster.remove(i, via=lead)
        out["cleanup_exit_s"] = cluster.wait_exit(i, timeout=10.0)
        cluster.reap(i)
        lead, _ = cluster.leader()
        time.sleep(1.0)

        # 2. throughput during membership changes
        lead, _ = cluster.leader()
        victim = next(j for j in cluster.active if j != lead)
        stay = [j for j in cluster.active if j != victim]
        out["load_endpoints"] = [cluster.names[j] for j in stay]
        out["removed"] = cluster.names[victim]
        load_gen = PutLoad(
            [cluster.endpoints[j] for j in stay],
            args.clients,
            args.conns,
            args.procs,
            args.val_size,
        )
        load_gen.start()
        t_start = time.monotonic()
        log(f"{kind}: load on {out['load_endpoints']}; steady {args.steady:.0f}s ...")
        time.sleep(args.warmup + args.steady)
        t_add = time.monotonic()
        j, cu2 = join_learner(cluster, lead, args.promote_every, args.catchup_timeout)
        t_promoted = time.monotonic()
        out["catchup_under_load"] = cu2.to_json()
        log(
            f"{kind}: under load, learner {cluster.names[j]}: applied index {cu2.target_index} "
            f"after {cu2.applied_s}s, promoted after {cu2.promoted_s}s ({cu2.refusals} refusals)"
        )
        lead, _ = cluster.leader()
        t_remove = time.monotonic()
        cluster.remove(victim, via=lead)
        out["remove_call_s"] = time.monotonic() - t_remove
        out["removed_exit_s"] = cluster.wait_exit(
            victim, timeout=max(0.0, t_remove + args.remove_window - time.monotonic())
        )
        rest = t_remove + args.remove_window - time.monotonic()
        if rest > 0:
            time.sleep(rest)
        t_end = time.monotonic()
        load_gen.stop()
        cluster.reap(victim)
        out["client_cores"] = load_gen.client_cpu / (t_end - t_start)
        out["client_errors"] = len(load_gen.errors)
        phases = {
            "steady": load_gen.phase(t_start + args.warmup, t_add),
            "add": load_gen.phase(t_add, t_promoted),
            "remove": load_gen.phase(t_remove, t_end),
        }
        load_gen = None
        out["phases"] = phases
        for name, ph in phases.items():
            log(
                f"{kind}: {name}: {ph['puts_s']:.0f} puts/s over {ph['seconds']:.1f}s, worst "
                f"{WINDOW}s window {ph['worst_window_puts_s']:.0f}/s, errors {ph['errors']}"
            )
        out["not_exited_after_removal"] = cluster.lingering
        out["ignored_sigterm"] = cluster.ignored_sigterm
    except Exception as exc:
        out["error"] = f"{type(exc).__name__}: {exc}"
        log(f"{kind}: FAILED: {out['error']}\n{cluster.log_tail()}")
    finally:
        if load_gen is not None:
            for p in load_gen.procs:
                p.kill()
        cluster.close_channels()
        cluster.stop()
        if args.keep:
            log(f"{kind}: data directories and logs kept in {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    return out


Rounds = list[dict[str, object]]


def _get(res: dict[str, object], *path: str) -> float | None:
    cur: object = res
    for p in path:
        if not isinstance(cur, dict) or p not in cur:
            return None
        cur = cur[p]
    return float(cur) if isinstance(cur, int | float) else None


def _share(res: dict[str, object], phase: str) -> float | None:
    a, b = _get(res, "phases", phase, "puts_s"), _get(res, "phases", "steady", "puts_s")
    return a / b if a is not None and b else None


# (title, JSON path, format); a path starting with "share:" is that phase's puts/s over steady's
ROWS: list[tuple[str, tuple[str, ...], str]] = [
    ("load of the keys (s)", ("load_s",), ".1f"),
    ("learner: start -> leader's index applied (s)", ("catchup", "applied_s"), ".2f"),
    ("learner: start -> promote succeeded (s)", ("catchup", "promoted_s"), ".2f"),
    ("  promote refusals (not in sync)", ("catchup", "promote_refusals"), "d"),
    ("puts/s steady", ("phases", "steady", "puts_s"), ".0f"),
    ("puts/s add+start+catch-up+promote", ("phases", "add", "puts_s"), ".0f"),
    ("  share of steady", ("share:add",), ".2f"),
    ("  phase length (s)", ("phases", "add", "seconds"), ".1f"),
    ("  start -> leader's index applied (s)", ("catchup_under_load", "applied_s"), ".2f"),
    ("  start -> promote succeeded (s)", ("catchup_under_load", "promoted_s"), ".2f"),
    ("  promote refusals (not in sync)", ("catchup_under_load", "promote_refusals"), "d"),
    ("  worst 0.5 s window (puts/s)", ("phases", "add", "worst_window_puts_s"), ".0f"),
    ("puts/s remove a voter ({window} s)", ("phases", "remove", "puts_s"), ".0f"),
    ("  share of steady", ("share:remove",), ".2f"),
    ("  worst 0.5 s window (puts/s)", ("phases", "remove", "worst_window_puts_s"), ".0f"),
    ("  removed member exited after (s)", ("removed_exit_s",), ".2f"),
    ("removed members left running (of 2)", ("count:not_exited_after_removal",), "d"),
    ("client errors (all phases)", ("client_errors",), "d"),
    ("load client's cores (CPU s / s)", ("client_cores",), ".2f"),
]


def _values(rounds: Rounds, path: tuple[str, ...]) -> list[float]:
    vals = []
    for res in rounds:
        if path[0].startswith("share:"):
            v = _share(res, path[0][6:])
        elif path[0].startswith("count:"):
            seq = res.get(path[0][6:])
            v = float(len(seq)) if isinstance(seq, list) else None
        else:
            v = _get(res, *path)
        if v is not None:
            vals.append(v)
    return vals


def _cell(vals: list[float], fmt: str) -> str:
    def f(v: float) -> str:
        return format(round(v), "d") if fmt == "d" else format(v, fmt)

    if not vals:
        return "-"
    if len(vals) == 1:
        return f(vals[0])
    return f"{f(statistics.median(vals))} ({' / '.join(f(v) for v in vals)})"


def table(results: dict[str, Rounds], args: argparse.Namespace) -> str:
    """One row per figure: etcd, raftkv (the median, and every round's figure when there are
    several) and raftkv/etcd of the medians."""
    e, r = results.get("etcd", []), results.get("raftkv", [])
    cells = [("", "etcd", "raftkv", "raftkv/etcd")]
    for title, path, fmt in ROWS:
        ev, rv = _values(e, path), _values(r, path)
        em = statistics.median(ev) if ev else None
        rm = statistics.median(rv) if rv else None
        # counts, and times etcd rounds to nothing, have no meaningful ratio
        ratio = "-"
        if fmt != "d" and em is not None and rm is not None and em >= 0.05:
            ratio = f"{rm / em:.2f}"
        cells.append(
            (title.format(window=f"{args.remove_window:g}"), _cell(ev, fmt), _cell(rv, fmt), ratio)
        )
    widths = [max(len(c[k]) for c in cells) for k in range(4)]
    lines = []
    for n, c in enumerate(cells):
        lines.append(
            "| "
            + " | ".join(
                c[k].ljust(widths[k]) if k == 0 else c[k].rjust(widths[k]) for k in range(4)
            )
            + " |"
        )
        if n == 0:
            lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--keys", type=int, default=100_000, help="keys loaded before part 1")
    p.add_argument("--val-size", type=int, default=256, help="value size of every put")
    p.add_argument("--clients", type=int, default=50, help="put loops of the constant load")
    p.add_argument("--conns", type=int, default=10, help="gRPC connections of the load")
    p.add_argument("--procs", type=int, default=0, help="load processes (0 = cpu count)")
    p.add_argument("--warmup", type=float, default=2.0, help="seconds of load before steady")
    p.add_argument("--steady", type=float, default=10.0, help="seconds of steady state")
    p.add_argument("--remove-window", type=float, default=10.0, help="seconds after remove")
    p.add_argument("--promote-every", type=float, default=0.2, help="seconds between promotes")
    p.add_argument(
        "--catchup-timeout", type=float, default=120.0, help="give up on a learner after this"
    )
    p.add_argument(
        "--systems", default="etcd,raftkv", help="comma-separated, in this order in round 1"
    )
    p.add_argument(
        "--rounds", type=int, default=2, help="rounds; the order of --systems flips each round"
    )
    p.add_argument("--json", default="", help="write every figure of every round to this file")
    p.add_argument("--keep", action="store_true", help="keep data directories and member logs")
    args = p.parse_args(argv)
    systems = [k for k in args.systems.split(",") if k]
    for kind in systems:
        if kind not in ("etcd", "raftkv"):
            p.error(f"unknown system {kind}")
    t0 = time.monotonic()
    results: dict[str, Rounds] = {kind: [] for kind in systems}
    for rnd in range(args.rounds):
        for kind in systems if rnd % 2 == 0 else systems[::-1]:
            log(f"round {rnd + 1}/{args.rounds}: {kind}")
            results[kind].append(run_kind(kind, args))
    print(
        f"\n{args.keys} keys of {args.val_size} B; load {args.clients} clients over {args.conns} "
        f"connections; {args.rounds} round(s), order {','.join(systems)} then reversed; "
        f"run took {time.monotonic() - t0:.0f}s"
    )
    print(table(results, args))
    for kind, rounds in results.items():
        for rnd, res in enumerate(rounds, 1):
            for name in ("steady", "add", "remove"):
                errs = _errors(res, name)
                if errs:
                    print(f"{kind} round {rnd} {name}: client errors {errs}")
            for part in ("catchup", "catchup_under_load"):
                cu = res.get(part)
                if isinstance(cu, dict) and cu.get("promote_other_errors"):
                    print(f"{kind} round {rnd} {part}: promote errors {cu['promote_other_errors']}")
            if res.get("not_exited_after_removal"):
                print(
                    f"{kind} round {rnd}: still running after removal: "
                    f"{res['not_exited_after_removal']}, ignored SIGTERM: {res['ignored_sigterm']}"
                )
            if "error" in res:
                print(f"{kind} round {rnd}: FAILED: {res['error']}")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), **results}, indent=2))
    return 0


def _errors(res: dict[str, object], phase: str) -> object:
    phases = res.get("phases")
    if isinstance(phases, dict) and isinstance(phases.get(phase), dict):
        return phases[phase].get("errors")
    return None


if __name__ == "__main__":
    sys.exit(main())
