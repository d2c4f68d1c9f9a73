"""txn: etcdctl's stdin grammar, prompts, renderings and error messages."""

from __future__ import annotations

import pytest

from tests.ctl.harness import Ctl, rev_masks


def _setup(ctl: Ctl) -> None:
    ctl.reset("t/", [("t/k1", "v1"), ("t/k2", "v2"), ("t/k3", "v3")])


SCRIPTS = [
    # success branch with all three op kinds
    'value("t/k1") = "v1"\n\nput t/k1 new\nget t/k2\ndel t/k3\n\nput t/k1 fail\n\n',
    # failure branch
    'value("t/k1") = "nope"\n\nput t/k1 new\n\nput t/k1 fail --prev-kv\nget t/ --prefix\n\n',
    # revision and version targets, short forms, inequality operators
    'mod("t/k1") > "0"\nversion("t/k2") = "1"\ncreate("t/k2") < "100000000"\n\n'
    "get t/k1 --keys-only\n\n\n",
    'm("t/k1") != "0"\nc("t/k2") > "0"\nver("t/k3") < "5"\nval("t/k3") != "x"\n\n'
    "del t/k1 --prev-kv\nget t/ --prefix --limit 1 --sort-by=KEY --order=DESCEND\n\n\n",
    # no compares, quoted values with spaces and escapes
    '\nput t/q "a b c"\nput t/r \'single quoted\'\nput t/s "tab\\there"\n\n\n',
    "\n\n\n",
    'value("t/missing") = ""\n\nget t/k1 --print-value-only\n\n\n',
]


@pytest.mark.parametrize("fmt", ["simple", "json", "fields", "protobuf"])
@pytest.mark.parametrize("script", SCRIPTS)
def test_txn_matches(ctl: Ctl, fmt: str, script: str) -> None:
    ctl.same(
        "txn",
        "-w",
        fmt,
        stdin=script.encode(),
        setup=lambda: _setup(ctl),
        masks=rev_masks(fmt, "TxnResponse"),
    )


def test_txn_interactive_prompts(ctl: Ctl) -> None:
    script = b'value("t/k1") != "zz"\n\nput t/k9 "hello world"\n\n\n'
    r = ctl.same("txn", "-i", stdin=script, setup=lambda: _setup(ctl))
    assert r.stdout.startswith(b"compares:\nsuccess requests (get, put, del):\n")


def test_txn_table_unsupported(ctl: Ctl) -> None:
    ctl.same(
        "txn",
        "-w",
        "table",
        stdin=b"\n\n\n",
        setup=lambda: _setup(ctl),
        masks=rev_masks("table", "TxnResponse"),
    )


@pytest.mark.parametrize(
    "script",
    [
        'value("t/k1") = "v1"\n\nput t/k1 new\n',  # EOF before the blank line
        'value("t/k1") = "v1\n\n\n',
        "foo\n\n\n",
        'zz("t/k1") > "1"\n\n\n',
        'm("t/k1") > "x"\n\n\n',
        'value(t/k1) = "1"\n\n\n',
        "\nput t/k1\n\n",
        "\nput\n\n",
        "\nfoo t/k1\n\n",
        "\nget t/k1 --bogus\n\n",
        "\nput t/k5 x\nput t/k5 y\n\n\n",  # duplicate key: a server error
        "\nget t/k1 --rev=99999999\n\n\n",
    ],
)
def test_txn_errors(ctl: Ctl, script: str) -> None:
    ctl.same("txn", stdin=script.encode(), setup=lambda: _setup(ctl), errors_only=True)


def test_txn_rejects_arguments(ctl: Ctl) -> None:
    ctl.same("txn", "extra", stdin=b"\n\n\n")


def test_txn_lease_compare(ctl: Ctl) -> None:
    """etcdctl 3.4 panics on lease compares; raftkv evaluates them (hex lease ID)."""
    _setup(ctl)
    lease = ctl.must("lease", "grant", "100").text().split()[1]
    ctl.must("put", "t/leased", "v", "--lease", lease)
    script = f'lease("t/leased") = "{lease}"\nlease("t/k1") = "0"\n\nget t/leased\n\n\n'
    r = ctl.raftkv("txn", stdin=script.encode())
    assert (r.rc, r.stdout, r.stderr) == (0, b"SUCCESS\n\nt/leased\nv\n", b"")
    r = ctl.raftkv("txn", stdin=b'lease("t/k1") = "1"\n\n\nget t/k1\n\n')
    assert (r.rc, r.stdout) == (0, b"FAILURE\n\nt/k1\nv1\n")
    ctl.must("lease", "revoke", lease)
