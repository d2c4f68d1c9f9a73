"""Real processes under chaos: three members behind fault-injecting proxies, SIGKILL and SIGSTOP,
clients doing puts, gets, compare-and-swaps and watches, and the simulator's checks at the end.

Each member's peer port sits behind ``tests.cluster.chaos_proxy.ChaosNet`` (one-way blocks,
isolation, delay).  For about 25 seconds a seeded schedule blocks links, isolates members,
delays traffic, pauses members with SIGSTOP (SIGCONT a moment later) and kills them with
SIGKILL (restarted a moment later).  Then everything heals, and:
- the clients' history is linearizable (``tests.linearizability``);
- every watch stream delivered exactly the store's history from where it started (ordered,
  unique, reliable, atomic, prev_kv, progress) — ``tests.simserver.watchers.check_watches``
  against events rebuilt from ranges at every revision;
- ``raftkv check consistency`` finds every member equal, and no CORRUPT alarm is raised.
The seed is in every failure message (real processes do not replay exactly, but the schedule
does).
"""

from __future__ import annotations

import json
import queue
import random
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import grpc

from raftkv.proto import rpc_pb2 as pb
from raftkv.proto import rpc_pb2_grpc as pb_grpc
from tests.cluster.chaos_proxy import ChaosNet
from tests.cluster.harness import Cluster, require_etcdctl
from tests.cluster.workload import Client
from tests.linearizability import check_history
from tests.simserver.watchers import (
    PREFIX,
    PREFIX_END,
    StreamRecord,
    check_watches,
    record_response,
    reference_events,
    watch_request,
)

KEYS = tuple(f"k/{c}" for c in "abcdefgh")  # under the watched prefix
CLIENT_PAUSE = 0.03
"""Between two operations of a client: the history stays small enough for the checker, whose
search grows fast with operations of unknown outcome (each pause of a member makes some)."""
CHAOS_SECONDS = 25.0


class Watcher(threading.Thread):
    """Watch streams on the keys, each on a random member for a random while, each resuming
    after the last revision the previous one delivered (or confirmed by progress)."""

    def __init__(self, endpoints: list[str], seed: int) -> None:
        super().__init__(daemon=True, name="chaos-watcher")
        self.endpoints = endpoints
        self.rng = random.Random(seed)
        self.streams: list[StreamRecord] = []
        self.next_revision = 1
        self.stop_flag = threading.Event()

    def run(self) -> None:
        while not self.stop_flag.is_set():
            endpoint = self.rng.choice(self.endpoints)
            record = StreamRecord(0, endpoint, self.next_revision)
            self.streams.append(record)
            requests: queue.Queue[pb.WatchRequest | None] = queue.Queue()
            requests.put(watch_request(self.next_revision))

            def feed(
                q: queue.Queue[pb.WatchRequest | None] = requests,
            ) -> Iterator[pb.WatchRequest]:
                while (req := q.get()) is not None:
                    yield req

            try:
                with grpc.insecure_channel(endpoint) as ch:
                    lifetime = self.rng.uniform(1.0, 6.0)
                    for resp in pb_grpc.WatchStub(ch).Watch(feed(), timeout=lifetime):
                        after = record_response(record, resp)
                        if after is not None:
                            self.next_revision = max(self.next_revision, after + 1)
                        if record.problems or self.stop_flag.is_set():
                            break
                        if self.rng.random() < 0.2:
                            requests.put(
                                pb.WatchRequest(progress_request=pb.WatchProgressRequest())
                            )
            except grpc.RpcError:
                time.sleep(0.1)  # the member is down, paused or cut off: resume elsewhere
            finally:
                requests.put(None)


def _reference(endpoint: str) -> list[tuple[int, int, bytes, bytes, int, int, int, bytes | None]]:
    with grpc.insecure_channel(endpoint) as ch:
        kv = pb_grpc.KVStub(ch)
        current = kv.Range(pb.RangeRequest(key=PREFIX, range_end=PREFIX_END), timeout=10)
        return reference_events(
            lambda rev: (
                kv.Range(
                    pb.RangeRequest(key=PREFIX, range_end=PREFIX_END, revision=rev), timeout=10
                ).kvs
            ),
            current.header.revision,
        )


def _chaos(c: Cluster, net: ChaosNet, rng: random.Random, until: float) -> Counter[str]:
    """The fault schedule; returns what it did, by kind."""
    done: Counter[str] = Counter()
    n = len(c.members)
    paused: set[int] = set()
    while time.monotonic() < until:
        time.sleep(rng.uniform(0.5, 2.0))
        for i in sorted(paused):  # a pause lasts until the next step
            proc = c.members[i].proc
            if proc is not None:
                proc.send_signal(signal.SIGCONT)
        paused.clear()
        kind = rng.choice(("block", "isolate", "heal", "delay", "pause", "kill"))
        if kind == "block":
            a, b = rng.sample(range(n), 2)
            net.block(a, b)
        elif kind == "isolate":
            net.isolate(rng.randrange(n), n)
        elif kind == "heal":
            net.heal()
        elif kind == "delay":
            net.delay(rng.choice((0.005, 0.02, 0.1)))
        elif kind == "pause":
            i = rng.randrange(n)
            proc = c.members[i].proc
            if proc is None:
                continue
            proc.send_signal(signal.SIGSTOP)
            paused.add(i)
        else:
            i = rng.randrange(n)
            if not c.members[i].alive():
                c.start(i)
                kind = "restart"
            else:
                c.kill(i)
        done[kind] += 1
    for i in sorted(paused):
        proc = c.members[i].proc
        if proc is not None:
            proc.send_signal(signal.SIGCONT)
    return done


def test_chaos_real_processes(tmp_path: Path) -> None:
    require_etcdctl()
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    net = ChaosNet(seed)
    root = tmp_path / "chaos"
    root.mkdir()
    c = Cluster(root, 3, peer_front=net.front)
    try:
        c.start_all()
        net.ids = {i: c.member_id(i) for i in range(3)}
        endpoints = [m.endpoint for m in c.members]
        clients = [Client(i, endpoints, seed + i, KEYS, CLIENT_PAUSE) for i in range(3)]
        watcher = Watcher(endpoints, seed)
        for t in (*clients, watcher):
            t.start()
        done = _chaos(c, net, rng, time.monotonic() + CHAOS_SECONDS)
        net.heal()
        for i, m in enumerate(c.members):
            if not m.alive():
                c.start(i)
        c.wait_ready(timeout=60)
        time.sleep(3)  # the clients get answers again; the watcher catches up
        for cl in clients:
            cl.stop_flag.set()
        watcher.stop_flag.set()
        for t in (*clients, watcher):
            t.join(15)
        what = f"seed {seed}, faults {dict(done)}, proxy {dict(net.stats)}"

        history = [op for cl in clients for op in cl.history]
        answered = [op for op in history if op.ret is not None]
        assert len(answered) >= 20, f"too little got through: {len(answered)} ops; {what}"
        result = check_history(history)
        assert result.ok, f"{what}:\n{result.explanation}\n{c.dump_logs(30)}"

        reference = _reference(endpoints[0])
        problems = check_watches(watcher.streams, reference)
        assert not problems, f"{what}: " + "; ".join(problems[:5])
        assert sum(len(s.events) for s in watcher.streams) > 0, what

        c.check_consistency()
        for m in c.members:
            assert not c.corrupt_alarms(m.endpoint), f"{what}: CORRUPT alarm\n{c.dump_logs(30)}"
        print(
            json.dumps(
                {
                    "seed": seed,
                    "faults": dict(done),
                    "proxy": dict(net.stats),
                    "operations": len(history),
                    "answered": len(answered),
                    "watch_streams": len(watcher.streams),
                    "watch_events": sum(len(s.events) for s in watcher.streams),
                }
            )
        )
    finally:
        for m in c.members:  # a paused member cannot be killed cleanly
            if m.proc is not None and m.proc.poll() is None:
                m.proc.send_signal(signal.SIGCONT)
        c.close()
        net.close()
