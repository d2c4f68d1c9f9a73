"""``member add|remove|update|promote``: etcdctl's argument checks, client-side URL checks,
server errors and output formats, through both tools against the same server (etcd by default,
``RAFTKV_CTL_TEST_SERVERS=raftkv`` for raftkv's own).  Started members, promotion and removal
of running members are in ``test_member_lifecycle``."""

from __future__ import annotations

import json
import re

import pytest

from raftkv.proto import rpc_pb2
from tests.ctl.harness import (
    Ctl,
    Mask,
    Result,
    assert_same,
    free_ports,
    regex_mask,
)

ARG_ERRORS = [
    ["member", "add"],
    ["member", "add", "a", "b"],
    ["member", "add", "a", "http://127.0.0.1:1", "HTTPS://x:2", "--peer-urls=http://h:1"],
    ["member", "add", "a"],
    ["member", "add", "a", "--peer-urls="],
    ["member", "remove"],
    ["member", "remove", "1", "2"],
    ["member", "remove", "zz"],
    ["member", "remove", "0x1"],
    ["member", "remove", "+1"],
    ["member", "remove", ""],
    ["member", "remove", "1ffffffffffffffff"],
    ["member", "remove", "fffffffffffffffffz"],
    ["member", "update"],
    ["member", "update", "zz", "--peer-urls=http://127.0.0.1:1"],
    ["member", "update", "1234"],
    ["member", "promote"],
    ["member", "promote", "g1"],
]

BAD_URLS = [
    "foo",
    "http://h",
    "http://h:1/x",
    "http://h:1/",
    ":x",
    "http://h:abc",
    "ftp://h:1",
    "http://[::1",
    "http://[::1]x:1",
    "http://a b:1",
    "http:x",
    "1http://h:1",
    "http://h:1,",
    "http://a:1:2",
    " http://h:1/p ",
    "http://h\x01:1",
]


@pytest.mark.parametrize("args", ARG_ERRORS, ids=lambda a: " ".join(a) or "-")
def test_argument_errors(ctl: Ctl, args: list[str]) -> None:
    r = ctl.same(*args)
    assert r.rc == 128 and r.stderr.startswith(b"Error: "), r


@pytest.mark.parametrize("url", BAD_URLS)
@pytest.mark.parametrize("cmd", ["add", "update"])
def test_peer_url_checked_before_the_request(ctl: Ctl, cmd: str, url: str) -> None:
    target = "n9" if cmd == "add" else "1234"
    r = ctl.same("member", cmd, target, f"--peer-urls={url}")
    assert r.rc == 1 and r.stderr.startswith(b"Error: "), r
    assert b"member not found" not in r.stderr  # refused before any request


def _own_member(ctl: Ctl) -> tuple[int, str]:
    """(ID, peer URL) of the member behind the endpoint."""
    listed = json.loads(ctl.must("member", "list", "-w", "json").stdout)
    member_id = int(listed["header"]["member_id"])
    (member,) = [m for m in listed["members"] if int(m["ID"]) == member_id]
    return member_id, member["peerURLs"][0]


@pytest.mark.parametrize(
    "args",
    [
        ["member", "remove", "1234"],
        ["member", "update", "1234", "--peer-urls=http://127.0.0.1:1"],
        ["member", "promote", "1234"],
    ],
)
def test_unknown_member(ctl: Ctl, args: list[str]) -> None:
    r = ctl.same(*args)
    assert (r.rc, r.stderr) == (1, b"Error: etcdserver: member not found\n")


def test_promote_a_voter(ctl: Ctl) -> None:
    member_id, _url = _own_member(ctl)
    r = ctl.same("member", "promote", f"{member_id:x}")
    assert (r.rc, r.stderr) == (1, b"Error: etcdserver: can only promote a learner member\n")


@pytest.mark.parametrize("fmt", ["simple", "json", "protobuf", "table", "fields"])
def test_update_outputs(ctl: Ctl, fmt: str) -> None:
    """An update to the member's own peer URL (it keeps working) in every format."""
    member_id, url = _own_member(ctl)
    r = ctl.same("member", "update", f"{member_id:x}", f"--peer-urls={url}", "-w", fmt)
    if fmt == "simple":
        cluster = json.loads(ctl.must("member", "list", "-w", "json").stdout)["header"]
        assert (
            r.stdout
            == (
                f"Member {member_id:16x} updated in cluster {int(cluster['cluster_id']):16x}\n"
            ).encode()
        )
    elif fmt in ("table", "fields"):
        assert (r.rc, r.stderr) == (4, f"Error: {fmt} not supported as output format\n".encode())
    elif fmt == "protobuf":
        resp = rpc_pb2.MemberUpdateResponse.FromString(r.stdout)
        assert member_id in [m.ID for m in resp.members]


def _sort_initial_cluster(data: bytes) -> bytes:
    """The server orders its members (etcd by ID): sort ETCD_INITIAL_CLUSTER's entries."""

    def sort(m: re.Match[bytes]) -> bytes:
        return b'ETCD_INITIAL_CLUSTER="' + b",".join(sorted(m.group(1).split(b","))) + b'"'

    return re.sub(rb'ETCD_INITIAL_CLUSTER="([^"]*)"', sort, data)


TOOLS = ("etcdctl", "raftkv")
ID_MASKS: list[Mask] = [
    regex_mask(rb"Member [ 0-9a-f]{16} (added|removed|updated|promoted)", rb"Member ID \1"),
    regex_mask(rb'"ID":\d+', b'"ID":N'),
    regex_mask(rb'"(revision|raft_term)":\d+', rb'"\1":N'),
    _sort_initial_cluster,
]


def _canonical_json(data: bytes) -> object:
    """A member-change response with IDs and terms masked and members sorted by peer URLs
    (etcd orders them by their random IDs)."""
    doc = json.loads(data)
    doc["header"].pop("raft_term", None)
    doc["header"].pop("revision", None)
    for member in [doc.get("member", {}), *doc["members"]]:
        member.pop("ID", None)
    doc["members"] = sorted(doc["members"], key=lambda m: m["peerURLs"])
    return doc


def _added_id(result: Result, fmt: str) -> int:
    if fmt == "json":
        return int(json.loads(result.stdout)["member"]["ID"])
    if fmt == "protobuf":
        return int(rpc_pb2.MemberAddResponse.FromString(result.stdout).member.ID)
    return 0


def _unstarted_learners(ctl: Ctl) -> list[int]:
    listed = json.loads(ctl.must("member", "list", "-w", "json").stdout)
    return [int(m["ID"]) for m in listed["members"] if not m.get("name")]


@pytest.mark.parametrize("fmt", ["simple", "json", "protobuf", "table", "fields"])
def test_add_learner_then_remove(ctl: Ctl, fmt: str) -> None:
    """The same learner added by each tool (and removed again by the other): the same texts
    but for the new member's ID; table and fields are refused after the member was added,
    as etcdctl does."""
    # Two peer URLs: etcd derives a new member's ID from its URLs and the second, and refuses
    # an ID it removed ("member not found").
    urls = {
        tool: f"http://127.0.0.1:{port}" for tool, port in zip(TOOLS, free_ports(2), strict=True)
    }
    results = {}
    for tool, other in (("etcdctl", "raftkv"), ("raftkv", "etcdctl")):
        url = urls[tool]
        add = ["member", "add", "newbie", f"--peer-urls={url}", "--learner", "-w", fmt]
        res = ctl.run(tool, add)
        results[tool] = res
        learners = _unstarted_learners(ctl)
        assert len(learners) == 1, (tool, res, learners)
        (added,) = learners
        assert _added_id(res, fmt) in (0, added)
        removed = ctl.run(other, ["member", "remove", f"{added:x}"])
        assert removed.rc == 0, removed
        assert removed.stdout.startswith(f"Member {added:16x} removed from cluster ".encode())
        assert _unstarted_learners(ctl) == []
    url = urls["raftkv"]
    e, r = results["etcdctl"], results["raftkv"]
    e.stdout = e.stdout.replace(urls["etcdctl"].encode(), url.encode())
    if fmt == "protobuf":
        want = rpc_pb2.MemberAddResponse.FromString(e.stdout)
        got = rpc_pb2.MemberAddResponse.FromString(r.stdout)
        assert (got.member.peerURLs, got.member.isLearner) == ([url], True)
        assert len(got.members) == len(want.members) and r.rc == e.rc == 0
        return
    if fmt == "json":
        assert (r.rc, r.stderr) == (e.rc, e.stderr) == (0, b"")
        assert _canonical_json(r.stdout) == _canonical_json(e.stdout)
        assert r.stdout.endswith(b"}\n") and b" " not in r.stdout
        return
    assert_same(e, r, ID_MASKS, what=fmt)
    if fmt == "simple":
        lines = r.stdout.decode().split("\n")
        assert lines[1:] == [
            "",
            'ETCD_NAME="newbie"',
            lines[3],
            f'ETCD_INITIAL_ADVERTISE_PEER_URLS="{url}"',
            'ETCD_INITIAL_CLUSTER_STATE="existing"',
            "",
        ]
        entries = lines[3].removeprefix('ETCD_INITIAL_CLUSTER="').removesuffix('"').split(",")
        assert f"newbie={url}" in entries and len(entries) == 2
    elif fmt in ("table", "fields"):
        assert (r.rc, r.stderr) == (4, f"Error: {fmt} not supported as output format\n".encode())


def test_add_a_second_learner_is_refused(ctl: Ctl) -> None:
    """etcd's --max-learners (1): the server's error, printed as etcdctl prints it."""
    first = f"http://127.0.0.1:{free_ports(1)[0]}"
    ctl.must("member", "add", "l1", f"--peer-urls={first}", "--learner")
    try:
        url = f"http://127.0.0.1:{free_ports(1)[0]}"
        r = ctl.same("member", "add", "l2", f"--peer-urls={url}", "--learner")
        assert (r.rc, r.stderr) == (
            1,
            b"Error: etcdserver: too many learner members in cluster\n",
        )
        # The same peer URL again: etcd derives IDs from the URLs and the second, so within
        # the same second it says "member ID already exist"; raftkv's IDs are unique.
        r = ctl.raftkv("member", "add", "l3", f"--peer-urls={first}", "--learner")
        assert r.rc == 1 and r.stderr in (
            b"Error: etcdserver: Peer URLs already exists\n",
            b"Error: etcdserver: member ID already exist\n",
        ), r
        if ctl.server.kind == "raftkv":
            assert r.stderr == b"Error: etcdserver: Peer URLs already exists\n"
    finally:
        for member_id in _unstarted_learners(ctl):
            ctl.must("member", "remove", f"{member_id:x}")
