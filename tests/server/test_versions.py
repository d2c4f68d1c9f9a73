"""Version rules: parsing, which cluster versions a member serves, etcd's peer handshake check,
and the leader's cluster-version decision over a real applier's member list."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from raftkv.mvcc.backend import BackendConfig
from raftkv.peer.framing import PeerVersions
from raftkv.proto import rpc_pb2 as pb
from raftkv.raft.types import Entry
from raftkv.server.applier import Applier
from raftkv.server.bootstrap import MemberInfo
from raftkv.server.requests import RequestKind, encode_request
from raftkv.server.versions import Versions
from raftkv.version import Version, admitted


def test_parse_and_compare() -> None:
    assert Version.parse("0.2.0") == Version(0, 2, 0)
    assert Version.parse("v3.5") == Version(3, 5, 0)
    assert Version.parse("1.2.3-rc.1") == Version(1, 2, 3)
    assert str(Version(0, 2)) == "0.2.0" and Version(0, 2, 7).short() == "0.2"
    with pytest.raises(ValueError, match=r"MAJOR\.MINOR"):
        Version.parse("two")


@pytest.mark.parametrize(
    ("server", "cluster", "ok"),
    [
        ("0.3.0", "0.3", True),
        ("0.3.1", "0.2", True),  # upgraded member in a cluster not yet moved
        ("0.3.0", "0.1", False),  # two minors apart
        ("0.2.0", "0.3", False),  # older than the cluster
        ("1.0.0", "0.9", False),  # another major
    ],
)
def test_admitted(server: str, cluster: str, ok: bool) -> None:
    assert admitted(Version.parse(server), Version.parse(cluster)) is ok


def test_peer_handshake_uses_etcds_rule_and_texts() -> None:
    local = PeerVersions(Version(0, 3, 0), Version(0, 2))
    assert local.incompatibility(PeerVersions(Version(0, 2, 5), Version(0, 1)), "a") is None
    too_old = local.incompatibility(PeerVersions(Version(0, 1, 0), Version(0, 0)), "a")
    assert too_old == "remote version is too low: remote[a]=0.1.0, local=0.3.0"
    too_new = local.incompatibility(PeerVersions(Version(0, 5, 0), Version(0, 4)), "b")
    assert too_new == "local version is too low: remote[b]=0.5.0, local=0.3.0"


def _applier(tmp_path: Path, versions: dict[int, str], learners: tuple[int, ...] = ()) -> Applier:
    a = Applier.detached(str(tmp_path), BackendConfig(map_size=64 << 20), min_lease_ttl=1)
    a.write_initial_members(
        [MemberInfo(i, f"m{i}", (f"http://127.0.0.1:{i}",), (), i in learners) for i in versions]
    )
    entries = []
    for n, (mid, version) in enumerate(sorted(versions.items()), start=2):
        info = MemberInfo(mid, f"m{mid}", (), (f"http://c{mid}",), version=version)
        body = json.dumps(info.to_json()).encode()
        entries.append(Entry(1, n, data=encode_request(RequestKind.MEMBER_ATTRIBUTES, n, body)))
    a.apply_entries(entries)
    return a


def _apply(a: Applier, kind: RequestKind, body: bytes) -> None:
    """One entry of ``kind`` at the next index."""
    index = a.applied_index() + 1
    a.apply_entries([Entry(1, index, data=encode_request(kind, 0, body))])


def _set(a: Applier, version: str) -> None:
    _apply(a, RequestKind.CLUSTER_VERSION, version.encode())


def test_the_leader_decides_the_lowest_minor_among_voters(tmp_path: Path) -> None:
    a = _applier(tmp_path, {1: "0.3.0", 2: "0.2.4", 3: "0.3.1", 4: "0.1.0"}, learners=(4,))
    v = Versions(applier=a, raft=None, proposer=None, barrier=None, header=pb.ResponseHeader)  # type: ignore[arg-type]
    target, done = v.decide()
    assert target == Version(0, 2) and not done  # the learner does not hold it back
    assert v.mixed_versions
    _set(a, "0.2")
    assert v.decide() == (None, False)  # nothing to do until the 0.2 voter is upgraded
    a.close()


def test_nothing_is_decided_until_every_voter_published(tmp_path: Path) -> None:
    a = _applier(tmp_path, {1: "0.2.0", 2: ""})
    v = Versions(applier=a, raft=None, proposer=None, barrier=None, header=pb.ResponseHeader)  # type: ignore[arg-type]
    assert v.decide() == (None, False)
    a.close()


def test_a_downgrade_holds_the_target_and_ends_when_everyone_runs_it(tmp_path: Path) -> None:
    a = _applier(tmp_path, {1: "0.3.0", 2: "0.3.0"})
    v = Versions(applier=a, raft=None, proposer=None, barrier=None, header=pb.ResponseHeader)  # type: ignore[arg-type]
    _set(a, "0.3")
    enable = json.dumps({"enabled": True, "target": "0.2"}).encode()
    _apply(a, RequestKind.DOWNGRADE, enable)
    assert v.decide() == (Version(0, 2), False)
    _set(a, "0.2")
    assert v.decide() == (None, False)  # members still run 0.3
    for mid in (1, 2):
        info = MemberInfo(mid, f"m{mid}", (), (), version="0.2.0")
        _apply(a, RequestKind.MEMBER_ATTRIBUTES, json.dumps(info.to_json()).encode())
    assert v.decide() == (None, True)
    a.close()
