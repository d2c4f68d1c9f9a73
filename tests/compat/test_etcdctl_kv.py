"""etcdctl 3.4 key-value commands against real etcd 3.4 and a 1-member raftkv, side by side.

Every command runs against both servers and their normalised outputs must be identical (see
``tests.compat.pair``); a few outputs are also checked against literal expectations so that a
comparison can never pass because both sides failed the same way.
"""

from __future__ import annotations

import json

from tests.compat.pair import Pair

FORMATS = ("simple", "json", "fields", "table")


def _load(pair: Pair, kvs: list[tuple[str, str]]) -> None:
    for k, v in kvs:
        pair.must(("put", k, v))


def test_get_flags(pair: Pair) -> None:
    base = pair.sync_revisions()
    _load(
        pair, [("g/a", "1"), ("g/b", "22"), ("g/c", "3"), ("g/a", "11"), ("g/d", "zz"), ("g/e", "")]
    )
    assert pair.same("get", "g/a").lines() == ["g/a", "11"]
    for fmt in FORMATS:
        pair.same("get", "g/a", "-w", fmt)
        pair.same("get", "g/", "--prefix", "-w", fmt)
    assert pair.same("get", "g/", "--prefix", "--keys-only").lines() == [
        "g/a", "", "g/b", "", "g/c", "", "g/d", "", "g/e", "",
    ]  # fmt: skip
    assert pair.same("get", "g/", "--prefix", "--print-value-only").lines() == [
        "11", "22", "3", "zz", "",
    ]  # fmt: skip
    limited = pair.same("get", "g/", "--prefix", "--limit=2", "-w", "json").stdout
    assert json.loads(limited)["more"] is True
    for target in ("KEY", "CREATE", "MODIFY", "VERSION", "VALUE"):
        for order in ("ASCEND", "DESCEND"):
            pair.same("get", "g/", "--prefix", f"--sort-by={target}", f"--order={order}")
    assert pair.same("get", "g/", "--prefix", "--sort-by=VALUE", "--order=DESCEND",
                     "--keys-only").lines()[0] == "g/d"  # fmt: skip
    pair.same("get", "g/", "--prefix", "--order=DESCEND")
    pair.same("get", "g/c", "--from-key")
    pair.same("get", "g/b", "--from-key", "--limit=2", "-w", "json")
    pair.same("get", "g/a", "g/c")
    pair.same("get", "g/a", "g/c", "--keys-only", "-w", "json")
    # history: g/a held "1" at base+1, g/d did not exist yet at base+4
    assert pair.same("get", "g/a", f"--rev={base + 1}", "--print-value-only").lines() == ["1"]
    assert pair.same("get", "g/", "--prefix", f"--rev={base + 4}", "--keys-only").stdout.split() == [
        "g/a", "g/b", "g/c",
    ]  # fmt: skip
    pair.same("get", "g/", "--prefix", f"--rev={base + 3}", "-w", "json")
    pair.same("get", "g/a", "--consistency=s")
    pair.same("get", "g/", "--prefix", "--consistency=s", "-w", "json")
    pair.same("get", "g/", "--prefix", "--count-only", "-w", "json")
    pair.same("get", "g/", "--prefix", "--keys-only", "--count-only", "-w", "fields")
    pair.same("get", "g/", "--prefix", "--hex")
    pair.same("get", "g/", "--prefix", "--hex", "-w", "fields")
    pair.same("get", "g/nothing")
    pair.same("get", "g/nothing", "-w", "json")
    pair.same("get", "g/", "--prefix", "--limit=1", "--rev=0", "--sort-by=MODIFY", "-w", "fields")
    pair.verify()


def test_put_flags(pair: Pair) -> None:
    pair.sync_revisions()
    assert pair.same("put", "p/a", "1").lines() == ["OK"]
    assert pair.same("put", "p/a", "2", "--prev-kv").lines() == ["OK", "p/a", "1"]
    pair.same("put", "p/a", "3", "--prev-kv", "-w", "json")
    pair.same("put", "p/a", "4", "--prev-kv", "-w", "fields")
    pair.same("put", "p/b", stdin="from stdin")
    assert pair.same("get", "p/b", "--print-value-only").lines() == ["from stdin"]
    pair.same("put", "p/b", "--ignore-value")
    pair.same("put", "p/b", "--ignore-value", "--prev-kv")
    assert pair.same("get", "p/b", "--print-value-only").lines() == ["from stdin"]
    lease = pair.grant(600)
    pair.same("put", "p/c", "leased", f"--lease={{L{lease}}}")
    pair.same("get", "p/c", "-w", "json")
    pair.same("put", "p/c", "kept", "--ignore-lease")
    pair.same("get", "p/c", "-w", "fields")
    pair.same("put", "p/c", "--ignore-value", "--ignore-lease", "-w", "json")
    pair.same("put", "p/d", "-w", "json", stdin="")
    pair.same("put", "p/e", "--", "-dash-value")
    pair.same("get", "p/", "--prefix", "-w", "json")
    pair.same("lease", "revoke", f"{{L{lease}}}")
    assert pair.same("get", "p/c").stdout == ""
    pair.verify()


def test_del_flags(pair: Pair) -> None:
    pair.sync_revisions()
    _load(pair, [(f"d/{c}", c) for c in "abcdef"] + [("zz/a", "1"), ("zz/b", "2")])
    assert pair.same("del", "d/a").lines() == ["1"]
    assert pair.same("del", "d/a").lines() == ["0"]
    assert pair.same("del", "d/b", "--prev-kv").lines() == ["1", "d/b", "b"]
    pair.same("del", "d/c", "d/e", "--prev-kv", "-w", "json")
    pair.same("del", "d/", "--prefix", "-w", "fields")
    pair.same("del", "d/", "--prefix", "-w", "json")
    pair.same("del", "zz/", "--from-key", "--prev-kv")
    assert pair.same("get", "zz/", "--from-key").stdout == ""
    pair.same("del", "zz/", "--from-key")
    pair.verify()


def test_txn_all_compare_kinds(pair: Pair) -> None:
    """value/version/create/mod with =, !=, <, > (etcdctl 3.4 panics on its own ``lease()``
    compare: it passes the ID as a string to clientv3, so that kind cannot be driven from it)."""
    base = pair.sync_revisions()
    _load(pair, [("t/a", "x"), ("t/a", "y"), ("t/b", "5")])
    lease = pair.grant(600)
    pair.must(("put", "t/l", "leased", f"--lease={{L{lease}}}"))
    a_create, a_mod = base + 1, base + 2
    txns = [
        f'value("t/a") = "y"\nversion("t/a") = "2"\ncreate("t/a") = "{a_create}"\n'
        f'mod("t/a") = "{a_mod}"\n\nput t/r ok\nget t/a\n\nput t/r bad\n\n',
        'value("t/a") != "y"\n\nput t/r 1\n\ndel t/b --prev-kv\nget t/ --prefix --keys-only\n\n',
        'value("t/b") > "4"\nvalue("t/b") < "6"\nversion("t/b") > "0"\nversion("t/b") < "2"\n\n'
        "del t/b --prev-kv\n\n\n",
        f'create("t/none") = "0"\nmod("t/a") < "{a_mod + 1}"\nmod("t/a") > "{a_mod - 1}"\n\n'
        "put t/c new --prev-kv\nget t/a --rev=" + str(a_create) + "\n\n\n",
        'val("t/a") = "y"\nver("t/a") = "2"\nc("t/c") != "0"\nm("t/c") > "0"\n\n'
        "put t/m multi\nput t/n multi\ndel t/zz\n\nget t/a\n\n",
        '\n\nput t/empty-compare yes\n\n\n',
        'value("t/a") = "no"\n\n\nput t/f failure-branch\nget t/ --prefix --keys-only\n\n',
    ]  # fmt: skip
    for stdin in txns:
        for fmt in ("simple", "json", "fields"):
            pair.sync_revisions()
            pair.same("txn", "-w", fmt, stdin=stdin)
    out = pair.same("txn", stdin='value("t/a") = "y"\n\nget t/a\n\nput t/r x\n\n').lines()
    assert out == ["SUCCESS", "", "t/a", "y"]
    out = pair.same("txn", stdin='value("t/a") = "zzz"\n\nput t/r x\n\nget t/a\n\n').lines()
    assert out == ["FAILURE", "", "t/a", "y"]
    pair.same("get", "t/", "--prefix", "-w", "json")
    pair.same("lease", "revoke", f"{{L{lease}}}")
    pair.same("del", "t/", "--prefix")
    pair.verify()


def test_errors(pair: Pair) -> None:
    base = pair.sync_revisions()
    _load(pair, [("e/k", str(i)) for i in range(4)])
    for args in [("put", "", "v"), ("get", ""), ("del", "")]:
        err = pair.same(*args)
        assert err.rc != 0 and "Error: etcdserver: key is not provided" in err.stderr
    pair.must(("compaction", str(base + 3)))
    err = pair.same("get", "e/k", f"--rev={base + 1}")
    assert "Error: etcdserver: mvcc: required revision has been compacted" in err.stderr
    pair.same("get", "e/k", f"--rev={base + 3}")
    err = pair.same("get", "e/k", f"--rev={base + 100}")
    assert "Error: etcdserver: mvcc: required revision is a future revision" in err.stderr
    pair.same("get", "e/k", "--rev=-1")
    err = pair.same("compaction", str(base + 2))
    assert "Error: etcdserver: mvcc: required revision has been compacted" in err.stderr
    err = pair.same("compaction", str(base + 100))
    assert "Error: etcdserver: mvcc: required revision is a future revision" in err.stderr
    err = pair.same("put", "e/k", "v", "--lease=1234abcd")
    assert "Error: etcdserver: requested lease not found" in err.stderr
    err = pair.same("put", "e/missing", "--ignore-value")
    assert "Error: etcdserver: key not found" in err.stderr
    pair.same("put", "e/missing", "--ignore-lease", "v")
    many = "\n\n" + "".join(f"put e/m{i} v\n" for i in range(129)) + "\n\n"
    err = pair.same("txn", stdin=many)
    assert "Error: etcdserver: too many operations in txn request" in err.stderr
    ok_many = "\n\n" + "".join(f"put e/m{i} v\n" for i in range(128)) + "\n\n"
    assert pair.same("txn", stdin=ok_many).lines()[0] == "SUCCESS"
    err = pair.same("txn", stdin="\n\nput e/d 1\nput e/d 2\n\n\n")
    assert "Error: etcdserver: duplicate key given in txn request" in err.stderr
    err = pair.same("txn", stdin="\n\nput e/d 1\ndel e/ --prefix\n\n\n")
    assert "Error: etcdserver: duplicate key given in txn request" in err.stderr
    pair.same("txn", stdin="\n\nput e/d 1\n\ndel e/ --prefix\nput e/d 2\n\n")
    err = pair.same("txn", stdin='value("") = "x"\n\nput e/z 1\n\n\n')
    assert err.rc != 0
    err = pair.same("txn", stdin="\n\nput  1\n\n\n")
    assert err.rc != 0
    pair.same("put")
    pair.same("get")
    err = pair.same("put", "e/big", stdin="x" * (1536 * 1024 + 10))
    assert "Error: etcdserver: request is too large" in err.stderr
    pair.same("put", "e/big", stdin="x" * (2 * 1024 * 1024 - 100))
    pair.same("put", "e/fits", stdin="x" * (1024 * 1024))
    pair.same("get", "e/fits", "--keys-only")
    pair.same("del", "e/", "--prefix")
    pair.verify()
