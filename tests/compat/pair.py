"""Side-by-side etcdctl runs against real etcd and raftkv, compared after normalisation.

Owns ``Pair`` (run one etcdctl command against both servers and assert the outputs agree) and
``normalise`` (the fields that legitimately differ between two servers).

Contracts:
- both servers receive exactly the same sequence of writes, so revisions are compared exactly;
  ``sync_revisions`` pads the one behind (puts to ``PAD_KEY``) after an earlier test failed
  half-way, so one failure does not cascade into the next tests;
- what legitimately differs is replaced by a token: member and cluster IDs (hex and decimal),
  endpoints and peer URLs, lease IDs (per server, ``<L0>``, ``<L1>``… in grant order), raft
  term and indexes, db sizes, version strings, hashes, timings, the remaining TTL of a lease,
  and etcdctl's own log-line timestamps and client IDs;
- tables (``-w table``) are compared cell by cell, so column widths do not matter.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from dataclasses import dataclass, field

from tests.compat.servers import Target

PAD_KEY = "!pad"


@dataclass
class Out:
    rc: int
    stdout: str
    stderr: str

    def lines(self) -> list[str]:
        return self.stdout.splitlines()


@dataclass
class Side:
    target: Target
    member_id: int = 0
    cluster_id: int = 0
    peer_url: str = ""
    leases: list[int] = field(default_factory=list)

    def subst(self, arg: str) -> str:
        """Replace ``{L<i>}`` with this server's i-th lease ID in hex (as etcdctl prints it),
        ``{D<i>}`` with it in decimal (as a txn ``lease()`` compare wants it)."""
        arg = re.sub(r"\{L(\d+)\}", lambda m: f"{self.leases[int(m.group(1))]:x}", arg)
        return re.sub(r"\{D(\d+)\}", lambda m: str(self.leases[int(m.group(1))]), arg)


_REGEXES: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r'"(raft_term|raftTerm|raftIndex|raftAppliedIndex|dbSize|dbSizeInUse|hash)":\d+'),
     r'"\1":N'),
    (re.compile(r'"version":"[0-9.]+"'), '"version":"V"'),
    (re.compile(r'"took":"[^"]*"'), '"took":"T"'),
    (re.compile(r'"(RaftTerm|RaftIndex|RaftAppliedIndex|DBSize|DBSizeInUse|Hash)" : \d+'),
     r'"\1" : N'),
    (re.compile(r'"Version" : "[0-9.]+"'), '"Version" : "V"'),
    # endpoint status -w simple: endpoint, ID, version, db size, leader?, learner?, term, index,
    # applied index, errors
    (re.compile(r"(?m)^(<EP>, \S+), [0-9.]+, [0-9.]+ [kMG]?B, (true|false), (true|false), "
                r"\d+, \d+, \d+, "), r"\1, V, S, \2, \3, N, N, N, "),
    # endpoint hashkv -w simple: endpoint, hash
    (re.compile(r"(?m)^(<EP>), \d+$"), r"\1, H"),
    (re.compile(r"took = [0-9.]+[a-zµ]+"), "took = T"),
    (re.compile(r"remaining\(-?\d+s\)"), "remaining(T)"),
    (re.compile(r'"ts":"[^"]*"'), '"ts":"T"'),
    (re.compile(r"endpoint://client-[0-9a-f-]+/"), "endpoint://client-ID/"),
    (re.compile(r"desc = (grpc: received|SERVER: Received) message larger than max"),
     "desc = received message larger than max"),
]  # fmt: skip

# -w table column headers whose cells legitimately differ
_TABLE_VOLATILE = {
    "VERSION", "DB SIZE", "RAFT TERM", "RAFT INDEX", "RAFT APPLIED INDEX", "HASH", "TOOK",
}  # fmt: skip


def _table(text: str) -> str:
    """A table as rows of stripped cells; volatile columns blanked."""
    rows = []
    header: list[str] = []
    for line in text.splitlines():
        if line.startswith("+"):
            continue
        if not line.startswith("|"):
            rows.append(line)
            continue
        cells = [c.strip() for c in line.strip("|").split("|")]
        if not header:
            header = cells
        else:
            cells = [
                "*" if h in _TABLE_VOLATILE else c for h, c in zip(header, cells, strict=False)
            ]
        rows.append(" | ".join(cells))
    return "\n".join(rows)


def normalise(side: Side, text: str) -> str:
    t = side.target
    for ep in t.endpoints:
        text = text.replace(ep, "<EP>")
    if side.peer_url:
        text = text.replace(side.peer_url.removeprefix("http://"), "<PEER>")
    for i, lid in enumerate(side.leases):
        text = re.sub(rf"\b({lid:016x}|{lid:x}|{lid})\b", f"<L{i}>", text)
    for value, token in ((side.member_id, "<MEMBER>"), (side.cluster_id, "<CLUSTER>")):
        if value:
            text = re.sub(rf"\b({value:x}|{value})\b", token, text)
    for rx, repl in _REGEXES:
        text = rx.sub(repl, text)
    if "+---" in text:
        text = _table(text)
    return text


class Pair:
    """etcd (the reference) and raftkv, fed the same commands."""

    def __init__(self, etcd: Target, raftkv: Target) -> None:
        self.sides = [Side(etcd), Side(raftkv)]
        self.failures: list[str] = []
        for side in self.sides:
            st = json.loads(self._run(side, ("endpoint", "status", "-w", "json")).stdout)
            hdr = st[0]["Status"]["header"]
            side.member_id, side.cluster_id = int(hdr["member_id"]), int(hdr["cluster_id"])
            members = json.loads(self._run(side, ("member", "list", "-w", "json")).stdout)
            side.peer_url = members["members"][0]["peerURLs"][0]
        self.must(("put", PAD_KEY, "pad"))

    @property
    def etcd(self) -> Side:
        return self.sides[0]

    @property
    def raftkv(self) -> Side:
        return self.sides[1]

    def _run(self, side: Side, args: tuple[str, ...], stdin: str | None = None) -> Out:
        res = side.target.ctl(*(side.subst(a) for a in args), stdin=side.subst(stdin or ""))
        return Out(res.returncode, res.stdout.decode(errors="replace"),
                   res.stderr.decode(errors="replace"))  # fmt: skip

    def both(self, args: tuple[str, ...], stdin: str | None = None) -> tuple[Out, Out]:
        a = self._run(self.etcd, args, stdin)
        b = self._run(self.raftkv, args, stdin)
        return a, b

    def norm(self, side: Side, out: Out) -> Out:
        return Out(out.rc, normalise(side, out.stdout), normalise(side, out.stderr))

    def same(self, *args: str, stdin: str | None = None, sort_lines: bool = False) -> Out:
        """Run on both; assert equal normalised stdout, stderr and exit code; etcd's raw output."""
        a, b = self.both(args, stdin)
        na, nb = self.norm(self.etcd, a), self.norm(self.raftkv, b)
        if sort_lines:
            na.stdout = "\n".join(sorted(na.stdout.splitlines()))
            nb.stdout = "\n".join(sorted(nb.stdout.splitlines()))
        self._compare("etcdctl " + " ".join(args), na, nb)
        return a

    def _compare(self, what: str, na: Out, nb: Out) -> None:
        """Record (not raise) a difference, so one test lists all of them; see ``verify``."""
        if nb.stdout != na.stdout:
            self.failures.append(
                f"stdout differs for {what}\n  etcd:   {na.stdout!r}\n  raftkv: {nb.stdout!r}"
            )
        if nb.stderr != na.stderr:
            self.failures.append(
                f"stderr differs for {what}\n  etcd:   {na.stderr!r}\n  raftkv: {nb.stderr!r}"
            )
        if nb.rc != na.rc:
            self.failures.append(f"exit code differs for {what}: etcd {na.rc}, raftkv {nb.rc}")

    def verify(self) -> None:
        """Fail with every difference recorded since the last call."""
        failures, self.failures = self.failures, []
        assert not failures, f"{len(failures)} difference(s) from etcd:\n" + "\n".join(failures)

    def must(self, args: tuple[str, ...], stdin: str | None = None) -> None:
        """A setup command that must succeed on both servers."""
        for out, side in zip(self.both(args, stdin), self.sides, strict=True):
            assert out.rc == 0, f"{side.target.kind}: etcdctl {args} failed: {out.stderr}"

    def grant(self, ttl: int) -> int:
        """Grant a lease on both (outputs compared); its index for ``{L<i>}`` placeholders."""
        outs = []
        for side in self.sides:
            out = self._run(side, ("lease", "grant", str(ttl)))
            assert out.rc == 0, f"{side.target.kind}: lease grant failed: {out.stderr}"
            side.leases.append(int(out.stdout.split()[1], 16))
            outs.append(self.norm(side, out))
        self._compare(f"etcdctl lease grant {ttl}", outs[0], outs[1])
        return len(self.etcd.leases) - 1

    def revision(self, side: Side) -> int:
        out = self._run(side, ("get", PAD_KEY, "-w", "json"))
        return int(json.loads(out.stdout)["header"]["revision"])

    def sync_revisions(self) -> int:
        """Pad the server behind until both are at the same revision; that revision."""
        revs = [self.revision(s) for s in self.sides]
        top = max(revs)
        for side, rev in zip(self.sides, revs, strict=True):
            for _ in range(top - rev):
                self._run(side, ("put", PAD_KEY, "pad"))
        assert [self.revision(s) for s in self.sides] == [top, top]
        return top

    def watch(
        self, args: tuple[str, ...], writes: list[tuple[str, ...]], settle: float = 1.0
    ) -> Out:
        """Start ``etcdctl watch ARGS`` on both, make ``writes`` (on both), collect what the
        watchers print until they are quiet for ``settle`` seconds (at most 15 s); compare."""
        procs = []
        for side in self.sides:
            cmd = [side.target.ctl_binary(), f"--endpoints={side.target.endpoints[0]}", "watch",
                   *(side.subst(a) for a in args)]  # fmt: skip
            procs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                          env=side.target.ctl_env()))  # fmt: skip
        outs: list[Out] = []
        try:
            time.sleep(1.0)
            for w in writes:
                self.must(w)
            for p in procs:
                outs.append(_collect(p, settle))
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
                p.wait(10)
                for stream in (p.stdout, p.stderr):
                    if stream is not None:
                        stream.close()
        na, nb = self.norm(self.etcd, outs[0]), self.norm(self.raftkv, outs[1])
        self._compare("etcdctl watch " + " ".join(args), na, nb)
        return outs[0]


def _collect(p: subprocess.Popen[bytes], settle: float) -> Out:
    """Read a running process's stdout until it is quiet for ``settle`` s (at most 15 s)."""
    import os
    import select

    assert p.stdout is not None
    fd = p.stdout.fileno()
    os.set_blocking(fd, False)
    chunks: list[bytes] = []
    deadline = time.monotonic() + 15
    quiet_until = time.monotonic() + settle
    while time.monotonic() < min(deadline, quiet_until):
        ready, _, _ = select.select([fd], [], [], 0.1)
        if ready:
            data = os.read(fd, 65536)
            if not data:
                break
            chunks.append(data)
            quiet_until = time.monotonic() + settle
    return Out(p.poll() or 0, b"".join(chunks).decode(errors="replace"), "")
