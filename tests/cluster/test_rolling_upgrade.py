"""A rolling upgrade one minor up and a downgrade back, on three real members under write load.

The newer release is this tree copied and patched (``upgrade_install``): one minor higher, with a
request kind ``PUT_V3`` that only a cluster at that minor may propose (its puts of keys under
``v3/``). Members are replaced one at a time (SIGTERM, the other installation, same data dir):
the cluster version stays at the lowest minor the voters run and mixed versions are reported
until the last member is upgraded; then the new kind works. Maintenance.Downgrade (etcd 3.6's
API) holds the cluster at the old minor while the members go back, and the leader ends the
downgrade once every member runs it. A release two minors higher is refused, on an existing
member's data dir and as a new member. No acknowledged write is lost and ``raftkv check
consistency`` agrees at the end.
"""

from __future__ import annotations

import re
import subprocess
import urllib.error
import urllib.request
from collections.abc import Callable

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from raftkv.proto import rpc_pb2 as pb
from raftkv.proto import rpc_pb2_grpc as pb_grpc
from raftkv.version import Version
from tests.cluster import upgrade_install
from tests.cluster.harness import Cluster, MemberProc, Writer, free_ports
from tests.cluster.upgrade_install import Installation

FAST = ["--heartbeat-interval", "50", "--election-timeout", "500"]
NOT_CAPABLE = "etcdserver: not capable"
BASE = upgrade_install.base_version()  # this tree's release
# A channel of its own for each one-off call: channels share subchannels (and a failed
# connection's backoff) by default, so a call right after a restart would fail at once with the
# writer's last "connection refused".
OWN_SUBCHANNELS = [("grpc.use_local_subchannel_pool", 1)]


# -- observing versions ----------------------------------------------------------------------


def member_versions(port: int) -> dict[str, str] | None:
    """From a member's /metrics: server_version, cluster_version, mixed ("0"/"1"); None if it
    does not answer.  Older members print whole numbers, newer ones prometheus_client's floats:
    the parser reads both."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=3) as resp:
            text = resp.read().decode()
    except (urllib.error.URLError, OSError):
        return None
    out: dict[str, str] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name in ("raftkv_cluster_version", "raftkv_server_version"):
                if sample.value == 1:
                    label = sample.name.removeprefix("raftkv_")
                    out[label] = sample.labels[label]
            elif sample.name == "raftkv_cluster_mixed_versions":
                out["mixed"] = str(int(sample.value))
    return out


def status_metadata(endpoint: str) -> dict[str, str]:
    """raftkv's versions sent as gRPC initial metadata of Maintenance.Status."""
    with grpc.insecure_channel(endpoint, options=OWN_SUBCHANNELS) as ch:
        _resp, call = pb_grpc.MaintenanceStub(ch).Status.with_call(
            pb.StatusRequest(), timeout=10, wait_for_ready=True
        )
        return {str(k): str(v) for k, v in call.initial_metadata()}


def downgrade_enabled(endpoint: str) -> bool:
    """etcd 3.6's Status.downgradeInfo.enabled."""
    with grpc.insecure_channel(endpoint, options=OWN_SUBCHANNELS) as ch:
        resp = pb_grpc.MaintenanceStub(ch).Status(
            pb.StatusRequest(), timeout=10, wait_for_ready=True
        )
    return bool(resp.downgradeInfo.enabled)


def wait_versions(
    c: Cluster, ports: list[int], cluster: Version, mixed: bool, timeout: float = 30
) -> None:
    """Until every member reports ``cluster`` as the cluster version and ``mixed``."""
    want = {"cluster_version": cluster.short(), "mixed": str(int(mixed))}
    seen: list[dict[str, str] | None] = []

    def reached() -> bool:
        seen[:] = [member_versions(p) for p in ports]
        return all(v is not None and all(v.get(k) == w for k, w in want.items()) for v in seen)

    try:
        c.wait_until(reached, f"every member to report {want}", timeout)
    except AssertionError as exc:
        raise AssertionError(f"last seen: {seen}\n{exc}") from None


# -- clients ---------------------------------------------------------------------------------


def downgrade(
    endpoint: str, action: pb.DowngradeRequest.DowngradeAction.ValueType, version: str = ""
) -> tuple[str | None, str]:
    """Maintenance.Downgrade: (None, the answered version) or (the error's message, "")."""
    with grpc.insecure_channel(endpoint, options=OWN_SUBCHANNELS) as ch:
        try:
            resp = pb_grpc.MaintenanceStub(ch).Downgrade(
                pb.DowngradeRequest(action=action, version=version), timeout=10, wait_for_ready=True
            )
        except grpc.RpcError as exc:
            return str(exc.details()), ""
    return None, str(resp.version)


def put(c: Cluster, i: int, key: str, value: str) -> subprocess.CompletedProcess[str]:
    return c.etcdctl("put", key, value, endpoints=c.members[i].endpoint, check=False)


def get_everywhere(c: Cluster, key: str) -> list[str | None]:
    return [c.get_all(i, key).get(key) for i in range(len(c.members))]


def replace(c: Cluster, i: int, inst: Installation) -> None:
    """Stop member ``i`` (SIGTERM), run ``inst`` on its data dir, wait until it serves."""
    code = c.stop(i)
    assert code == 0, f"{c.members[i].name} exited {code} on SIGTERM\n" + c.dump_logs()
    c.members[i].python = inst.python
    c.members[i].src = inst.src
    c.start(i)
    c.wait_ready([i])
    try:
        got = status_metadata(c.members[i].endpoint).get("raftkv-version")
    except grpc.RpcError as exc:
        raise AssertionError(f"{c.members[i].name}: Status: {exc}\n" + c.dump_logs()) from None
    assert got == str(inst.version), f"{c.members[i].name} runs {got}, not {inst.version}"


# -- refusal of a release the cluster does not admit -----------------------------------------


def run_refused(c: Cluster, i: int, inst: Installation, timeout: float = 60) -> str:
    """Start member ``i`` with ``inst``; it must exit non-zero by itself. Returns what it
    logged in this run."""
    m = c.members[i]
    offset = m.log_path.stat().st_size if m.log_path.exists() else 0
    m.python, m.src = inst.python, inst.src
    c.start(i)
    assert m.proc is not None
    try:
        code = m.proc.wait(timeout)
    except subprocess.TimeoutExpired:
        c.kill(i)
        raise AssertionError(f"{inst.version} on {m.name} did not stop\n" + c.dump_logs()) from None
    m.proc = None
    with open(m.log_path, "rb") as f:
        f.seek(offset)
        logged = f.read().decode(errors="replace")
    assert code != 0, f"{inst.version} on {m.name} exited 0:\n{logged}"
    assert "Traceback" not in logged, logged
    return logged


def refused_on_existing_data_dir(
    c: Cluster, i: int, refused: Installation, back: Installation, message: str
) -> str:
    """Member ``i`` restarted with ``refused`` on its data dir stops, logging ``message``; then
    it runs ``back`` again. Returns what ``refused`` logged."""
    assert c.stop(i) == 0
    logged = run_refused(c, i, refused)
    assert message in logged, logged
    c.members[i].python, c.members[i].src = back.python, back.src
    c.start(i)
    c.wait_ready([i])
    return logged


def refused_as_new_member(c: Cluster, too_new: Installation) -> str:
    """``member add``, then start ``too_new`` with ``--initial-cluster-state existing``: refused;
    the member is removed again. Returns its log."""
    ports = free_ports(2)
    name = f"m{len(c.members) + 1}"
    m = MemberProc(
        name=name,
        client_port=ports[0],
        peer_port=ports[1],
        data_dir=c.root / f"{name}.raftkv",
        log_path=c.root / f"{name}.log",
        extra_args=[*FAST, "--initial-cluster-state", "existing"],
    )
    added = c.etcdctl("member", "add", name, f"--peer-urls={m.peer_url}").stdout
    found = re.search(r"Member\s+([0-9a-f]+)\s+added", added)
    assert found, added
    saved = c.initial_cluster
    c.members.append(m)
    c.initial_cluster = f"{saved},{name}={m.peer_url}"
    try:
        logged = run_refused(c, len(c.members) - 1, too_new)
    finally:
        c.members.pop()
        c.initial_cluster = saved
    assert "incompatible with current running cluster" in logged, logged
    c.etcdctl("member", "remove", found[1])
    return logged


# -- the test --------------------------------------------------------------------------------


def start_cluster(
    make_cluster: Callable[..., Cluster], base: Installation, attempts: int = 3
) -> tuple[Cluster, list[int]]:
    """Three members of ``base``, each with a /metrics port; returns the cluster and those
    ports. Free ports are only probably free (another test process may take one before a
    member binds it): a cluster whose member could not bind is given up for a new one."""
    for attempt in range(attempts):
        c = make_cluster(3, FAST, start=False)
        ports = c.listen_metrics()
        for m in c.members:
            m.python, m.src = base.python, base.src
        try:
            c.start_all()
        except AssertionError:
            logs = "".join(m.log_path.read_text(errors="replace") for m in c.members)
            c.close()
            if attempt + 1 == attempts or not re.search(
                "Failed to bind|address already in use", logs, re.IGNORECASE
            ):
                raise
            continue
        return c, ports
    raise AssertionError("unreachable")


@pytest.mark.timeout(300)
def test_rolling_upgrade_then_downgrade_under_load(
    make_cluster: Callable[..., Cluster],
    this_tree: Installation,
    one_minor_up: Installation,
    two_minors_up: Installation,
) -> None:
    base, up = this_tree, one_minor_up
    assert up.version.minor_version == BASE.next_minor()
    c, ports = start_cluster(make_cluster, base)
    wait_versions(c, ports, BASE.minor_version, mixed=False)
    md = status_metadata(c.members[0].endpoint)
    assert md.get("raftkv-version") == str(BASE), md
    assert md.get("raftkv-cluster-version") == BASE.short(), md

    writer = Writer([m.endpoint for m in c.members], "load/", pause=0.005)
    writer.start()
    try:
        # -- upgrade, one member at a time -----------------------------------------------
        for i in range(3):
            replace(c, i, up)
            if i < 2:
                # The upgraded member published its version: mixed, still the old minor.
                wait_versions(c, ports, BASE.minor_version, mixed=True)
                res = put(c, i, "v3/x", f"early-{i}")
                assert res.returncode != 0 and NOT_CAPABLE in res.stderr, res.stderr
                assert get_everywhere(c, "v3/x") == [None] * 3
                assert status_metadata(c.members[i].endpoint)["raftkv-cluster-version"] == (
                    BASE.short()
                )
            if i == 1:
                # Two releases side by side, under writes, hold the same state.
                c.check_consistency(c.endpoints, base.python, base.src)
                assert not any(c.corrupt_alarms(m.endpoint) for m in c.members)
        wait_versions(c, ports, up.version.minor_version, mixed=False)
        assert put(c, 2, "v3/x", "upgraded").returncode == 0
        assert put(c, 0, "v3/y", "upgraded").returncode == 0
        c.etcdctl("get", "v3/x")  # a linearizable read: every member has applied it after
        c.wait_until(lambda: get_everywhere(c, "v3/x") == ["upgraded"] * 3, "v3/x on every member")
        # The old release on an upgraded member's data dir, without a downgrade: refused, by
        # the storage version its backend records (checked before the cluster version).
        refused_on_existing_data_dir(
            c,
            2,
            base,
            up,
            f"the data dir has storage version {up.minor}, newer than this raftkv {BASE} supports",
        )

        # -- downgrade back ---------------------------------------------------------------
        ep = c.members[1].endpoint
        older = BASE.previous_minor()
        assert older is not None
        err, _ = downgrade(ep, pb.DowngradeRequest.VALIDATE, older.short())
        assert err == "etcdserver: invalid downgrade target version", err
        err, _ = downgrade(ep, pb.DowngradeRequest.CANCEL)
        assert err == "etcdserver: no inflight downgrade job", err
        err, answered = downgrade(ep, pb.DowngradeRequest.VALIDATE, BASE.short())
        assert err is None and answered == up.version.short(), (err, answered)
        err, answered = downgrade(ep, pb.DowngradeRequest.ENABLE, BASE.short())
        assert err is None and answered == up.version.short(), (err, answered)
        err, _ = downgrade(ep, pb.DowngradeRequest.ENABLE, BASE.short())
        assert err == "etcdserver: cluster has a downgrade job in progress", err
        # Enabled: the cluster version is held at the target, the new kind is refused again.
        wait_versions(c, ports, BASE.minor_version, mixed=False)
        res = put(c, 1, "v3/x", "downgrading")
        assert res.returncode != 0 and NOT_CAPABLE in res.stderr, res.stderr
        for i in range(3):
            replace(c, i, base)
            wait_versions(c, ports, BASE.minor_version, mixed=i < 2)
            if i < 2:
                err, _ = downgrade(ep, pb.DowngradeRequest.VALIDATE, older.short())
                assert err == "etcdserver: cluster has a downgrade job in progress", err
        # Every member runs the target: the leader ends the downgrade by itself; there is none
        # to cancel then.  The next minor down knows downgrades and auth was never used here,
        # so it is a valid target; two minors down is not.
        c.wait_until(lambda: not downgrade_enabled(ep), "the leader to end the downgrade")
        err, _ = downgrade(ep, pb.DowngradeRequest.CANCEL)
        assert err == "etcdserver: no inflight downgrade job", err
        err, answered = downgrade(ep, pb.DowngradeRequest.VALIDATE, older.short())
        assert err is None and answered == BASE.short(), (err, answered)
        two_down = older.previous_minor()
        assert two_down is not None
        err, _ = downgrade(ep, pb.DowngradeRequest.VALIDATE, two_down.short())
        assert err == "etcdserver: invalid downgrade target version", err
        assert any(
            "the downgrade is finished" in m.log_path.read_text(errors="replace") for m in c.members
        ), c.dump_logs()

        # -- two minors up is refused -----------------------------------------------------
        too_new = two_minors_up
        logged = refused_on_existing_data_dir(
            c, 2, too_new, base, "incompatible with current running cluster"
        )
        assert f"raftkv {too_new.version} needs a cluster version of at least" in logged, logged
        logged = refused_as_new_member(c, too_new)
        # The members it asked refused its peer handshake, and said so.
        refusal = f"local version is too low: remote[0]={too_new.version}, local={BASE}"
        assert refusal in logged, logged
        assert any(refusal in m.log_path.read_text(errors="replace") for m in c.members)
        assert len(c.etcdctl("member", "list").stdout.strip().splitlines()) == 3
        acked_before = len(writer.acked)
        c.wait_until(lambda: len(writer.acked) > acked_before + 20, "writes after the refusals")
    finally:
        acked = writer.finish()

    # -- nothing acknowledged is lost, the members agree -----------------------------------
    assert len(acked) > 100, f"only {len(acked)} writes acknowledged ({writer.failures} failed)"
    c.wait_until(lambda: len({c.hashkv(i) for i in range(3)}) == 1, "members to converge")
    for i in range(3):
        stored = c.get_all(i, "load/")
        lost = sorted(k for k, v in acked.items() if stored.get(k) != v)
        assert not lost, f"{c.members[i].name} lost {len(lost)} acknowledged writes: {lost[:5]}"
        assert c.get_all(i, "v3/") == {"v3/x": "upgraded", "v3/y": "upgraded"}
    c.check_consistency(c.endpoints, base.python, base.src)
    assert not any(c.corrupt_alarms(m.endpoint) for m in c.members)
