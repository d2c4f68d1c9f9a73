"""The judgement over member reports, the counter parser and the metrics text (pure code)."""

from __future__ import annotations

from raftkv.inspect.exporter import Exporter
from raftkv.inspect.gather import parse_counters
from raftkv.inspect.render import render
from raftkv.inspect.verdict import CheckResult, MemberReport, judge
from tests.prom_text import parse


def _member(name: str, mid: int, h: int, count: int = 5, **kw: object) -> MemberReport:
    rep = MemberReport(
        endpoint=f"127.0.0.1:{mid}", name=name, member_id=mid, cluster_id=7, revision=40,
        key_count=count, hash=h, hash_revision=40, compact_revision=-1, alarms=[],
    )  # fmt: skip
    for k, v in kw.items():
        setattr(rep, k, v)
    return rep


def _judge(*members: MemberReport) -> CheckResult:
    return judge(CheckResult(members=list(members), common_revision=40, compact_revision=-1))


def test_agreeing_members_are_consistent() -> None:
    r = _judge(_member("m1", 1, 456), _member("m2", 2, 456), _member("m3", 3, 456))
    assert (r.exit_code, r.divergences, r.problems) == (0, [], [])


def test_the_member_outside_the_majority_is_named() -> None:
    r = _judge(_member("m1", 1, 456), _member("m2", 2, 456), _member("m3", 0x3A, 123, count=4))
    assert r.exit_code == 1
    assert r.divergences == [
        "member m3 (id 3a) hash 123 differs from the 2 others (456) at revision 40",
        "key counts differ: member m3 (id 3a) has 4 keys, the 2 others have 5 at revision 40",
    ]
    assert [m.divergent for m in r.members] == [False, False, True]


def test_without_a_majority_every_member_is_listed() -> None:
    r = _judge(_member("m1", 1, 456), _member("m2", 2, 123))
    assert r.exit_code == 1
    assert r.divergences == [
        "hashes differ with no majority at revision 40: m1 (id 1) 456, m2 (id 2) 123"
    ]
    assert not any(m.divergent for m in r.members)


def test_an_unreachable_member_makes_it_unknown_but_divergence_wins() -> None:
    down = MemberReport(endpoint="127.0.0.1:9", name="m3", member_id=3, error="refused")
    r = _judge(_member("m1", 1, 456), _member("m2", 2, 456), down)
    assert r.exit_code == 2
    assert r.problems == ["member m3 (id 3) unreachable: refused"]
    down = MemberReport(endpoint="127.0.0.1:9", name="m4", member_id=4, error="refused")
    r = _judge(_member("m1", 1, 456), _member("m2", 2, 456), _member("m3", 3, 1), down)
    assert r.exit_code == 1


def test_no_member_answering_is_unknown() -> None:
    r = judge(CheckResult(members=[MemberReport(endpoint="e", error="refused")]))
    assert r.exit_code == 2 and "no member answered" in r.problems


def test_corrupt_alarm_and_differing_alarm_lists_are_divergences() -> None:
    alarms = [(3, "CORRUPT")]
    r = _judge(
        _member("m1", 1, 456, alarms=alarms),
        _member("m2", 2, 456, alarms=alarms),
        _member("m3", 3, 456, alarms=[]),
    )
    assert r.exit_code == 1
    assert r.divergences[0] == "alarm CORRUPT is active for member m3 (id 3)"
    assert r.divergences[1].startswith("alarm lists differ: m1 (id 1): CORRUPT@3;")
    assert r.members[2].divergent


def test_different_clusters_cannot_be_compared() -> None:
    r = _judge(_member("m1", 1, 456), _member("m2", 2, 456, cluster_id=8))
    assert r.exit_code == 2 and r.problems[0].startswith("the endpoints belong to different")


def test_parse_counters_sums_label_sets_and_skips_others() -> None:
    text = (
        "# TYPE etcd_mvcc_put_total counter\n"
        "etcd_mvcc_put_total 12\n"
        'etcd_mvcc_txn_total{kind="a"} 2\n'
        'etcd_mvcc_txn_total{kind="b"} 3.5\n'
        "etcd_mvcc_put_total_other 99\n"
        "etcd_mvcc_range_total 4\n"
    )
    assert parse_counters(text) == {"etcd_mvcc_put_total": 12.0, "etcd_mvcc_txn_total": 5.5}


def test_render_and_metrics_show_missing_values_as_absent() -> None:
    down = MemberReport(endpoint="127.0.0.1:9", name="m2", member_id=2, error="refused")
    r = _judge(_member("m1", 1, 456, counters={"etcd_mvcc_put_total": 3.0}), down)
    table = render(r, "table").splitlines()
    m1_row = [c.strip() for c in table[3].strip("|").split("|")]
    assert m1_row[13:16] == ["3", "-", "-"]
    exporter = Exporter()
    exporter.update(r)
    types, values = parse(exporter.text())
    m2 = '{endpoint="127.0.0.1:9",id="2",member="m2"}'
    assert values["raftkv_inspector_member_up" + m2] == 0
    assert "raftkv_inspector_member_hash" + m2 not in values
    assert values['raftkv_inspector_member_hash{endpoint="127.0.0.1:1",id="1",member="m1"}'] == 456
    assert values["raftkv_inspector_consistent"] == 0 and values["raftkv_inspector_status"] == 2
    assert values["raftkv_inspector_checks_total"] == 1
    assert values["raftkv_inspector_check_errors_total"] == 1
    assert types["raftkv_inspector_checks_total"] == "counter"
    assert types["raftkv_inspector_member_up"] == "gauge"


def test_metrics_before_any_check_are_the_zero_counters() -> None:
    types, values = parse(Exporter().text())
    assert values == {
        "raftkv_inspector_checks_total": 0,
        "raftkv_inspector_divergences_total": 0,
        "raftkv_inspector_check_errors_total": 0,
    }
    assert set(types.values()) == {"counter"}
