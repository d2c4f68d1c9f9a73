"""The forged-leader attack on a plaintext 3-member cluster, and the guard's verdict that fences
its victim even though the victim cannot apply the CORRUPT alarm.

Whoever reaches a follower's peer port, knowing only what client responses carry (the cluster
ID, the leader's member ID, the follower's commit index and term), sends it a MsgApp at a
higher term that appends and commits a forged put.  The follower applies it, answers the real
leader with the higher term (the cluster elects again) and, its log now conflicting with the
leader's at a committed index, accepts no entry after it: the CORRUPT alarm the guard raises
for it through Raft never applies there.  The guard's verdict, sent to it directly, fences it
anyway (also across a restart), and ``raftkv member repair`` replaces its state and its log.
The attack itself is closed by peer TLS; here it shows the guard's fallback.
"""

from __future__ import annotations

import json
import os
import re
import ssl
import stat
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.cluster.forge import forge_leader_append, forged_put
from tests.cluster.harness import Cluster, ClusterTLS
from tests.cluster.test_repair import raftkv_cli
from tests.cluster.test_state_hash import wait_applied_everywhere
from tests.tls_certs import make_peer_certs

CORRUPT_MSG = "etcdserver: corrupt cluster"
FORGED_KEY = "forged"


def _status(c: Cluster, i: int) -> dict[str, Any]:
    st = c.status(i)
    assert st is not None, f"{c.members[i].name} does not answer status\n" + c.dump_logs()
    return st


def _serializable_get(c: Cluster, i: int, key: str) -> tuple[int, str, str]:
    res = c.etcdctl(
        "get",
        key,
        "--consistency=s",
        "--print-value-only",
        endpoints=c.members[i].endpoint,
        check=False,
    )
    return res.returncode, res.stdout.strip(), res.stderr.strip()


def _attack(c: Cluster, leader: int, victim: int) -> None:
    """Forge the leader's append until the victim serves the forged key (its log must match
    the (index, term) the attacker read from its status; a write in between moves them)."""
    leader_id = c.member_id(leader)
    for _attempt in range(5):
        st = _status(c, victim)
        header = st["header"]
        term, commit = int(st["raftTerm"]), int(st["raftIndex"])
        sent = forge_leader_append(
            "127.0.0.1",
            c.members[victim].peer_port,
            cluster_id=int(header["cluster_id"]),
            claimed_leader_id=leader_id,
            target_id=int(header["member_id"]),
            term=term + 100,
            prev_index=commit,
            prev_term=term,
            entries=[forged_put(FORGED_KEY.encode(), b"evil")],
            # Older than the cluster's term: the victim's log is then not more up-to-date than
            # the others', so it cannot win the election its higher term provokes and spread
            # the forged entry; it stays alone with it.
            entry_term=term - 1,
        )
        assert sent.remote_member_id == int(header["member_id"])
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            code, value, _err = _serializable_get(c, victim, FORGED_KEY)
            if code == 0 and value == "evil":
                return
            time.sleep(0.1)
    raise AssertionError("the forged append was never applied\n" + c.dump_logs())


def _wait_log(c: Cluster, i: int, text: str, timeout: float = 20) -> None:
    c.wait_until(lambda: text in c.members[i].log_path.read_text(), repr(text), timeout)


def test_forged_leader_victim_is_fenced_by_verdict_and_repaired(
    make_cluster: Callable[..., Cluster],
) -> None:
    c = make_cluster(3)
    for i in range(5):
        c.etcdctl("put", f"k{i}", f"v{i}")
    wait_applied_everywhere(c)
    leader = c.leader_index()
    assert leader is not None
    victim = (leader + 1) % 3
    victim_id = c.member_id(victim)
    healthy = [i for i in range(3) if i != victim]

    _attack(c, leader, victim)
    # The attack works on a plaintext peer port: the victim committed and applied the key.
    for i in healthy:
        assert _serializable_get(c, i, FORGED_KEY)[:2] == (0, "")

    # The guard names the victim and raises its alarm (which the victim cannot apply) ...
    healthy_ep = c.members[healthy[0]].endpoint
    named, _took = c.wait_corrupt_alarm(healthy_ep)
    assert named == {victim_id}
    logs = "".join(c.members[i].log_path.read_text() for i in healthy)
    assert f"member {victim_id:x} diverged at raft index" in logs
    # ... and its verdict reaches the victim directly: it fences itself.
    _wait_log(c, victim, "fenced by the consistency guard's verdict")
    code, _value, err = _serializable_get(c, victim, FORGED_KEY)
    assert code != 0 and CORRUPT_MSG in err
    res = c.etcdctl("put", "x", "y", endpoints=c.members[victim].endpoint, check=False)
    assert res.returncode != 0 and CORRUPT_MSG in res.stderr
    res = c.etcdctl(
        "watch", "x", endpoints=c.members[victim].endpoint, check=False, timeout=20
    )  # a watch is refused at once: it does not wait for events
    assert res.returncode != 0 and CORRUPT_MSG in res.stderr
    # it was not the alarm: the victim never applied it (its apply is stuck at the forged entry)
    assert int(_status(c, victim)["raftAppliedIndex"]) < int(
        _status(c, healthy[0])["raftAppliedIndex"]
    )
    verdict_file = c.members[victim].data_dir / "member" / "guard-verdict"
    assert stat.S_IMODE(os.stat(verdict_file).st_mode) == 0o600
    verdict = json.loads(verdict_file.read_text())
    assert verdict["member_id"] == victim_id and verdict["first_index"] > 0
    leader_log = "".join(c.members[i].log_path.read_text() for i in healthy)
    assert f"member {victim_id:x} acknowledged the guard's verdict: fenced" in leader_log
    # the inspector reports it: alarmed by the others, refusing its own reads
    res = raftkv_cli("check", "consistency", "--endpoints", c.endpoints, timeout=60)
    assert res.returncode == 1, res.stdout + res.stderr
    assert re.search(rf"alarm CORRUPT is active for member .*{victim_id:x}", res.stdout)
    assert re.search(rf"{victim_id:x}\)? unreachable: {CORRUPT_MSG}", res.stdout)
    # the others keep serving
    c.etcdctl("put", "during", "attack", endpoints=healthy_ep)

    # The verdict is durable: a restart does not unfence the victim.
    assert c.stop(victim) == 0
    c.start(victim)
    c.wait_ready([victim])
    code, _value, err = _serializable_get(c, victim, "k0")
    assert code != 0 and CORRUPT_MSG in err, err
    assert "is fenced by a guard verdict recorded in" in c.members[victim].log_path.read_text()

    # `member repair` accepts it, replaces its state and its conflicting log, and unfences it.
    res = raftkv_cli("member", "repair", f"{victim_id:x}", "-w", "json", "--endpoints", healthy_ep)
    assert res.returncode == 0, res.stderr + c.dump_logs()
    report = json.loads(res.stdout)
    assert report["member_id"] == victim_id and report["alarm_cleared"] is True
    assert report["log_replaced"] is True and report["verdict_cleared"] is True
    assert not verdict_file.exists()
    assert c.etcdctl("alarm", "list", endpoints=healthy_ep).stdout.strip() == ""

    c.etcdctl("put", "after", "repair", endpoints=c.members[victim].endpoint)  # serves again
    wait_applied_everywhere(c)
    states = [c.get_all(i) for i in range(3)]
    assert states[0] == states[1] == states[2]
    assert FORGED_KEY not in states[victim] and states[victim]["during"] == "attack"
    assert len({c.hashkv(i)[0] for i in range(3)}) == 1
    c.check_consistency(c.endpoints)
    # the guard keeps finding the repaired member in agreement, and no verdict fences it again
    deadline = time.monotonic() + 1.5
    while time.monotonic() < deadline:
        assert c.etcdctl("alarm", "list", endpoints=healthy_ep).stdout.strip() == ""
        assert _serializable_get(c, victim, "after")[:2] == (0, "repair")
        time.sleep(0.3)


def test_forged_leader_is_refused_on_peer_mtls(
    tmp_path: Path, make_cluster: Callable[..., Cluster]
) -> None:
    """The same attack against members on peer mTLS that accept only their own CNs: without
    a certificate of the peer CA (plaintext, or another CA's) the TLS handshake ends it; with
    one of the CA's certificates under another name, the member drops it; each is logged."""
    certs = make_peer_certs(tmp_path / "certs", ("m1", "m2", "m3", "client"))
    intruder = make_peer_certs(tmp_path / "intruder", ("m1",))
    tls = ClusterTLS(certs, client=False)
    c = make_cluster(3, ["--peer-cert-allowed-cn=m1,m2,m3"], tls=tls)
    c.etcdctl("put", "k", "v")
    leader = c.leader_index()
    assert leader is not None
    victim = (leader + 1) % 3
    st = _status(c, victim)
    header = st["header"]
    term, commit = int(st["raftTerm"]), int(st["raftIndex"])

    def attack(context: ssl.SSLContext | None) -> None:
        forge_leader_append(
            "127.0.0.1",
            c.members[victim].peer_port,
            cluster_id=int(header["cluster_id"]),
            claimed_leader_id=c.member_id(leader),
            target_id=int(header["member_id"]),
            term=term + 100,
            prev_index=commit,
            prev_term=term,
            entries=[forged_put(FORGED_KEY.encode(), b"evil")],
            entry_term=term - 1,
            ssl_context=context,
        )

    with pytest.raises(OSError):
        attack(None)  # plaintext on a TLS port
    _wait_log(c, victim, "TLS handshake failed")  # refused, and logged with the address
    other_ca = ssl.create_default_context(cafile=str(certs.ca))
    other_ca.load_cert_chain(intruder.cert("m1"), intruder.key("m1"))
    with pytest.raises(OSError):
        attack(other_ca)
    wrong_name = ssl.create_default_context(cafile=str(certs.ca))
    wrong_name.load_cert_chain(certs.cert("client"), certs.key("client"))
    with pytest.raises(OSError):
        attack(wrong_name)
    _wait_log(c, victim, "rejected peer connection")
    assert "certificate CN='client'" in c.members[victim].log_path.read_text()
    code, value, _err = _serializable_get(c, victim, FORGED_KEY)
    assert code == 0 and value == "", value
    assert c.corrupt_alarms(c.members[leader].endpoint) == set()
    assert c.etcdctl("get", "k", "--print-value-only").stdout == "v\n"
