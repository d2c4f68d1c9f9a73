"""lease grant / revoke / timetolive / list / keep-alive, and put --lease."""

from __future__ import annotations

import subprocess
import time

import pytest

from tests.ctl.harness import LEASE_MASKS, REV_MASKS, Ctl, Mask, regex_mask

FORMATS = ["simple", "json", "fields", "protobuf", "table"]
TTL_MASKS: list[Mask] = [
    regex_mask(rb"remaining\(\d+s\)", b"remaining(Ns)"),
    regex_mask(rb'"ttl":\d+', b'"ttl":N'),
    regex_mask(rb'"TTL" : \d+', b'"TTL" : N'),
]


def _grant(ctl: Ctl, ttl: int = 300) -> str:
    return ctl.must("lease", "grant", str(ttl)).text().split()[1]


def _revoke_all(ctl: Ctl) -> None:
    listed = ctl.must("lease", "list").text().split("\n")[1:]
    for lease in filter(None, listed):
        ctl.etcdctl("lease", "revoke", lease)


@pytest.mark.parametrize("fmt", FORMATS)
def test_grant(ctl: Ctl, fmt: str) -> None:
    a, b = ctl.both(["lease", "grant", "100", "-w", fmt])
    if fmt == "protobuf":
        assert b.stdout == a.stdout  # only the header, which a grant does not change
    from tests.ctl.harness import assert_same

    assert_same(a, b, LEASE_MASKS, what=fmt)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("keys", [True, False])
def test_timetolive(ctl: Ctl, fmt: str, keys: bool) -> None:
    lease = _grant(ctl)
    # one key: etcd lists a lease's keys in Go map order, which varies between calls
    ctl.must("put", "l/a", "1", "--lease", lease)
    extra = ["--keys"] if keys else []
    ctl.same("lease", "timetolive", lease, *extra, "-w", fmt, masks=TTL_MASKS)
    ctl.must("lease", "revoke", lease)


@pytest.mark.parametrize("fmt", ["simple", "json", "fields"])
def test_timetolive_expired(ctl: Ctl, fmt: str) -> None:
    ctl.same("lease", "timetolive", "1234abcd", "--keys", "-w", fmt)


@pytest.mark.parametrize("fmt", FORMATS)
def test_list(ctl: Ctl, fmt: str) -> None:
    _revoke_all(ctl)
    ctl.same("lease", "list", "-w", fmt)
    leases = [_grant(ctl) for _ in range(3)]
    ctl.same("lease", "list", "-w", fmt)
    for lease in leases:
        ctl.must("lease", "revoke", lease)


@pytest.mark.parametrize("fmt", FORMATS)
def test_keepalive_once(ctl: Ctl, fmt: str) -> None:
    lease = _grant(ctl, 120)
    ctl.same("lease", "keep-alive", "--once", lease, "-w", fmt)
    ctl.must("lease", "revoke", lease)


@pytest.mark.parametrize("fmt", ["simple", "json", "fields", "protobuf"])
def test_revoke(ctl: Ctl, fmt: str) -> None:
    leases: list[str] = []

    def setup() -> None:
        leases.append(_grant(ctl))

    a = ctl.etcdctl("lease", "revoke", (setup(), leases[-1])[1], "-w", fmt)
    b = ctl.raftkv("lease", "revoke", (setup(), leases[-1])[1], "-w", fmt)
    from tests.ctl.harness import assert_same

    masks = [*LEASE_MASKS, *REV_MASKS]
    if fmt == "protobuf":
        from tests.ctl.harness import proto_rev_mask

        masks = [proto_rev_mask("LeaseRevokeResponse"), regex_mask(rb"revision:\d+", b"revision:N")]
    assert_same(a, b, masks, what=fmt)


@pytest.mark.parametrize(
    "args",
    [
        ["grant"],
        ["grant", "x"],
        ["revoke"],
        ["revoke", "zz"],
        ["revoke", "1234"],
        ["timetolive"],
        ["timetolive", "zz"],
        ["keep-alive"],
        ["keep-alive", "--once", "1234"],
        ["keep-alive", "--once", "qq"],
    ],
)
def test_lease_errors(ctl: Ctl, args: list[str]) -> None:
    ctl.same("lease", *args)


def test_put_with_lease(ctl: Ctl) -> None:
    lease = _grant(ctl)
    ctl.same("put", "l/k", "v", "--lease", lease, "-w", "json", masks=REV_MASKS)
    ctl.same("get", "l/k", "-w", "fields")
    ctl.same("put", "l/k", "v", "--lease", "1234")
    ctl.same("put", "l/k", "v2", "--ignore-lease", "-w", "fields", masks=REV_MASKS)
    ctl.same("get", "l/k", "-w", "json")
    ctl.must("lease", "revoke", lease)


def test_keepalive_stream_until_revoked(ctl: Ctl) -> None:
    """Without --once, keep-alive renews every TTL/3 and ends when the lease goes away."""
    lease = _grant(ctl, 3)
    proc = subprocess.Popen(
        ctl.argv("raftkv", ["lease", "keep-alive", lease]),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=ctl._env("raftkv"),
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert first == f"lease {lease} keepalived with TTL(3)\n".encode()
        second = proc.stdout.readline()  # about one second later
        assert second == first
        ctl.must("lease", "revoke", lease)
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=5)
    assert out.endswith(f"lease {lease} expired or revoked.\n".encode())
    assert (proc.returncode, err) == (0, b"")
    # the reference behaves the same way
    lease = _grant(ctl, 3)
    ref = subprocess.Popen(
        ctl.argv("etcdctl", ["lease", "keep-alive", lease]),
        stdout=subprocess.PIPE,
        env=ctl._env("etcdctl"),
    )
    try:
        assert ref.stdout is not None
        assert ref.stdout.readline() == f"lease {lease} keepalived with TTL(3)\n".encode()
        time.sleep(0.2)
        ctl.must("lease", "revoke", lease)
        ref_out, _ = ref.communicate(timeout=20)
    finally:
        if ref.poll() is None:
            ref.kill()
            ref.wait(timeout=5)
    assert ref_out.endswith(f"lease {lease} expired or revoked.\n".encode())
