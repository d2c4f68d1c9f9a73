"""put / get / del / compaction: raftkv's client prints what etcdctl prints."""

from __future__ import annotations

import pytest

from tests.ctl.harness import REV_MASKS, Ctl, apply_masks, rev_masks

FORMATS = ["simple", "json", "fields", "protobuf"]


@pytest.fixture(scope="module")
def data(ctl: Ctl) -> Ctl:
    ctl.reset("", [("a", "1"), ("b", "22"), ("b/x", "3 3"), ("c", 'é\tq"<&>'), ("d", "x")])
    ctl.must("put", "d", "y")
    return ctl


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize(
    "args",
    [
        ["a"],
        ["zz"],
        ["a", "c"],
        ["b", "--prefix"],
        ["", "--prefix"],
        ["b", "--from-key"],
        ["", "--from-key", "--limit", "2"],
        ["", "--prefix", "--keys-only"],
        ["", "--prefix", "--sort-by=VALUE", "--order=DESCEND"],
        ["", "--prefix", "--sort-by=modify", "--order=ascend"],
        ["", "--prefix", "--sort-by=KEY", "--order=DESCEND", "--limit=3"],
        ["", "--prefix", "--sort-by=CREATE"],
        ["", "--prefix", "--sort-by=VERSION", "--order=DESCEND"],
        ["d", "--consistency=s"],
        ["c"],
    ],
)
def test_get_matches(data: Ctl, fmt: str, args: list[str]) -> None:
    data.same("get", *args, "-w", fmt)


@pytest.mark.parametrize(
    "args",
    [
        ["", "--prefix", "--print-value-only"],
        ["", "--prefix", "--hex"],
        ["c", "--hex", "-w", "json"],
        ["c", "--hex", "-w", "fields"],
        ["a", "--print-value-only", "-w", "json"],
        ["d", "--rev", "1"],
        ["d", "--rev", "999999"],
        [],
        ["a", "--prefix", "--from-key"],
        ["a", "b", "--prefix"],
        ["a", "--consistency", "x"],
        ["a", "--order", "sideways"],
        ["a", "--sort-by", "colour"],
    ],
)
def test_get_flags_and_errors(data: Ctl, args: list[str]) -> None:
    data.same("get", *args)


@pytest.mark.parametrize("cmd", [["get", "a"], ["put", "t/k", "v"], ["del", "t/k"]])
def test_table_unsupported(ctl: Ctl, cmd: list[str]) -> None:
    ctl.same(*cmd, "-w", "table", masks=REV_MASKS)


def test_get_old_revision(data: Ctl) -> None:
    rev = int(data.must("get", "d", "-w", "fields").text().split('"ModRevision" : ')[1].split()[0])
    for fmt in ("simple", "json"):
        data.same("get", "d", f"--rev={rev - 1}", "-w", fmt)


def test_get_count_only_needs_fields(data: Ctl) -> None:
    r = data.raftkv("get", "", "--prefix", "--count-only")
    assert (r.rc, r.stderr) == (128, b"Error: --count-only is only for `--write-out=fields`\n")
    counted = data.raftkv("get", "", "--prefix", "--count-only", "-w", "fields")
    full = data.etcdctl("get", "", "--prefix", "-w", "fields").text()
    assert counted.rc == 0
    assert counted.text().splitlines()[:4] == full.splitlines()[:4]
    assert counted.text().splitlines()[4:] == ['"More" : false', '"Count" : 5']


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize(
    "args",
    [
        ["p/k", "v1"],
        ["p/k", "v2", "--prev-kv"],
        ["p/new", "v", "--prev-kv"],
        ["p/k", "--ignore-value"],
        ["p/k", "v3", "--ignore-lease", "--prev-kv"],
        ["--", "p/-dash", "-v"],
    ],
)
def test_put_matches(ctl: Ctl, fmt: str, args: list[str]) -> None:
    ctl.same(
        "put",
        "-w",
        fmt,
        *args,
        setup=lambda: ctl.reset("p/", [("p/k", "old")]),
        masks=rev_masks(fmt, "PutResponse"),
    )
    after = ctl.etcdctl("get", "p/", "--prefix", "-w", "json")
    assert after.rc == 0


def test_put_stored_values_identical(ctl: Ctl) -> None:
    for tool in ("etcdctl", "raftkv"):
        ctl.reset("s/")
        ctl.run(tool, ["put", "s/k", "hello world"])
        ctl.run(tool, ["put", "s/stdin"], stdin=b"from\nstdin\n")
        ctl.run(tool, ["put", "s/k", "--ignore-value"])
        if tool == "etcdctl":
            first = ctl.etcdctl("get", "s/", "--prefix", "-w", "fields")
    second = ctl.etcdctl("get", "s/", "--prefix", "-w", "fields")
    assert apply_masks(second.stdout, REV_MASKS) == apply_masks(first.stdout, REV_MASKS)
    assert b'"Value" : "from\\nstdin\\n"' in second.stdout


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["k"],
        ["k", "v", "--ignore-value"],
        ["k", "v", "--lease", "zz"],
        ["k", "v", "--lease", "123abc"],
        ["k", "v", "-w", "table"],
    ],
)
def test_put_errors(ctl: Ctl, args: list[str]) -> None:
    ctl.same("put", *args, setup=lambda: ctl.reset("k"), masks=REV_MASKS)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize(
    "args",
    [
        ["x/a"],
        ["x/zz"],
        ["x/a", "--prev-kv"],
        ["x/", "--prefix", "--prev-kv"],
        ["x/b", "--from-key"],
        ["x/a", "x/c", "--prev-kv"],
    ],
)
def test_del_matches(ctl: Ctl, fmt: str, args: list[str]) -> None:
    setup = lambda: ctl.reset("x/", [("x/a", "1"), ("x/b", "2"), ("x/c", "3")])  # noqa: E731
    ctl.same("del", "-w", fmt, *args, setup=setup, masks=rev_masks(fmt, "DeleteRangeResponse"))


@pytest.mark.parametrize(
    "args",
    [[], ["x/a", "--prefix", "--from-key"], ["x/a", "x/b", "--prefix"], ["x/a", "x/b", "x/c"]],
)
def test_del_errors(ctl: Ctl, args: list[str]) -> None:
    ctl.same("del", *args)


def test_compaction(ctl: Ctl) -> None:
    ctl.must("put", "cmp/k", "1")
    rev = int(
        ctl.must("put", "cmp/k", "2", "-w", "fields").text().split('"Revision" : ')[1].split()[0]
    )
    a = ctl.etcdctl("compaction", str(rev - 1))
    b = ctl.raftkv("compaction", str(rev - 1))
    assert (a.rc, a.stdout) == (0, f"compacted revision {rev - 1}\n".encode())
    assert (b.rc, b.stderr) == (
        1,
        b"Error: etcdserver: mvcc: required revision has been compacted\n",
    )
    ctl.must("put", "cmp/k", "3")
    b = ctl.raftkv("compaction", str(rev), "--physical")
    assert (b.rc, b.stdout) == (0, f"compacted revision {rev}\n".encode())
    for args in (
        ["compaction"],
        ["compaction", "x"],
        ["compaction", str(rev - 1)],
        ["compaction", "99999999"],
    ):
        ctl.same(*args)
