"""Unit tests for the linearizability checker on hand-made histories."""

from __future__ import annotations

import random

from tests.linearizability import CheckResult, Operation, check_history

put = Operation.put
get = Operation.get
cas = Operation.cas


def _ok(ops: list[Operation]) -> CheckResult:
    result = check_history(ops)
    assert result.ok, result.explanation
    return result


def _bad(ops: list[Operation], key: str = "k") -> CheckResult:
    result = check_history(ops)
    assert not result.ok
    assert result.key == key
    assert result.explanation.startswith(f"key {key!r}: not linearizable")
    return result


def test_empty_history_is_linearizable() -> None:
    _ok([])


def test_sequential_history() -> None:
    _ok(
        [
            get("k", None, 0, 1),
            put("k", "a", 2, 3),
            get("k", "a", 4, 5),
            cas("k", "a", "b", True, 6, 7),
            cas("k", "a", "c", False, 8, 9),
            get("k", "b", 10, 11),
        ]
    )


def test_concurrent_reads_may_see_old_or_new() -> None:
    _ok(
        [
            put("k", "a", 0, 1),
            put("k", "b", 2, 10),
            get("k", "a", 3, 4),
            get("k", "b", 5, 6),
            get("k", "b", 11, 12),
        ]
    )


def test_stale_read_is_caught() -> None:
    result = _bad(
        [
            put("k", "a", 0, 1, client=1),
            put("k", "b", 2, 3, client=1),
            get("k", "a", 4, 5, client=2),
        ]
    )
    assert "get(k) -> 'a'" in result.explanation
    assert len(result.culprits) == 3


def test_read_goes_back_in_time_between_concurrent_reads() -> None:
    # put b is concurrent with both reads, but once a read saw b a later read cannot see a.
    _bad(
        [
            put("k", "a", 0, 1),
            put("k", "b", 2, 20),
            get("k", "b", 3, 4),
            get("k", "a", 5, 6),
        ]
    )


def test_lost_write_is_caught() -> None:
    # The put of b completed, yet a later read still sees the initial absence.
    _bad([put("k", "b", 0, 1), get("k", None, 2, 3)])


def test_read_of_never_written_value_is_caught() -> None:
    result = _bad([put("k", "a", 0, 1), get("k", "zzz", 2, 3)])
    assert "'zzz'" in result.explanation


def test_cas_success_with_wrong_expected_is_caught() -> None:
    _bad([put("k", "a", 0, 1), cas("k", "x", "y", True, 2, 3)])


def test_cas_failure_when_it_should_succeed_is_caught() -> None:
    _bad([put("k", "a", 0, 1), cas("k", "a", "y", False, 2, 3)])


def test_two_successful_cas_from_same_value_is_caught() -> None:
    _bad(
        [
            put("k", "a", 0, 1),
            cas("k", "a", "b", True, 2, 10, client=1),
            cas("k", "a", "c", True, 3, 11, client=2),
        ]
    )


def test_concurrent_cas_one_wins() -> None:
    _ok(
        [
            put("k", "a", 0, 1),
            cas("k", "a", "b", True, 2, 10, client=1),
            cas("k", "a", "c", False, 3, 11, client=2),
            get("k", "b", 12, 13),
        ]
    )


def test_cas_on_absent_key() -> None:
    _ok([cas("k", None, "a", True, 0, 1), get("k", "a", 2, 3)])
    _bad([put("k", "z", 0, 1), cas("k", None, "a", True, 2, 3)])


def test_pending_put_may_have_taken_effect() -> None:
    _ok([put("k", "a", 0, None), get("k", "a", 5, 6)])


def test_pending_put_may_not_have_taken_effect() -> None:
    _ok([put("k", "a", 0, None), get("k", None, 5, 6)])


def test_pending_put_takes_effect_at_most_once() -> None:
    # After the pending put was observed and overwritten, it cannot reappear.
    _bad(
        [
            put("k", "a", 0, None),
            get("k", "a", 5, 6),
            put("k", "b", 7, 8),
            get("k", "a", 9, 10),
        ]
    )


def test_pending_put_cannot_take_effect_before_its_call() -> None:
    _bad([get("k", "a", 0, 1), put("k", "a", 2, None)])


def test_pending_cas_with_unknown_outcome() -> None:
    _ok(
        [
            put("k", "a", 0, 1),
            cas("k", "a", "b", None, 2, None),
            get("k", "b", 5, 6),
        ]
    )
    _ok(
        [
            put("k", "a", 0, 1),
            cas("k", "a", "b", None, 2, None),
            get("k", "a", 5, 6),
        ]
    )
    # An unknown cas can only apply when its expected value is current.
    _bad(
        [
            put("k", "a", 0, 1),
            cas("k", "x", "b", None, 2, None),
            get("k", "b", 5, 6),
        ]
    )


def test_pending_get_is_ignored() -> None:
    _ok([put("k", "a", 0, 1), get("k", "zzz", 2, None)])


def test_equal_timestamps_are_concurrent() -> None:
    _ok([put("k", "a", 0, 5), get("k", None, 5, 6)])


def test_keys_are_checked_independently_and_first_bad_key_named() -> None:
    ops = [
        put("a", "1", 0, 1),
        get("a", "1", 2, 3),
        put("b", "1", 0, 1),
        put("b", "2", 2, 3),
        get("b", "1", 4, 5),
    ]
    _bad(ops, key="b")


def _random_linearizable_history(
    rng: random.Random, n: int, keys: int
) -> tuple[list[Operation], list[Operation]]:
    """Simulate clients against an atomic register map; return (history, a broken copy)."""
    store: dict[str, str | None] = {}
    ops: list[Operation] = []
    t = 0.0
    for i in range(n):
        key = f"k{rng.randrange(keys)}"
        call = t + rng.random() * 3
        point = call + rng.random() * 5
        ret: float | None = point + rng.random() * 5
        if rng.random() < 0.05:
            ret = None
        kind = rng.choice(["put", "get", "cas"])
        cur = store.get(key)
        if kind == "put":
            store[key] = f"v{i}"
            ops.append(put(key, f"v{i}", call, ret))
        elif kind == "get":
            ops.append(get(key, cur, call, ret))
        else:
            expected = cur if rng.random() < 0.5 else f"v{rng.randrange(max(i, 1))}"
            success = cur == expected
            if success:
                store[key] = f"v{i}"
            result = None if ret is None else success
            ops.append(cas(key, expected, f"v{i}", result, call, ret))
        t = point
    broken = list(ops)
    for j in range(len(broken) - 1, -1, -1):
        op = broken[j]
        if op.kind == "get" and op.ret is not None:
            broken[j] = get(op.key, "never-written", op.call, op.ret)
            break
    return ops, broken


def test_random_linearizable_histories_pass_and_corruptions_fail() -> None:
    rng = random.Random(7)
    for _ in range(20):
        ops, broken = _random_linearizable_history(rng, 300, 3)
        _ok(ops)
        assert not check_history(broken).ok


def test_thousands_of_ops() -> None:
    rng = random.Random(11)
    ops, _ = _random_linearizable_history(rng, 5000, 5)
    _ok(ops)


def test_an_unread_pending_value_still_explains_a_failed_cas() -> None:
    # "b" is never read: it stands with every unread value for one state, yet that state is
    # still not "a", which the failed compare-and-swap needs.
    _ok([put("k", "a", 0, 1), put("k", "b", 2, None), cas("k", "a", "c", False, 5, 6)])
    _bad([put("k", "a", 0, 1), cas("k", "a", "c", False, 5, 6)])


def test_pending_writes_of_the_same_effect_are_interchangeable_not_merged() -> None:
    # Two pending puts of unread values: either may land, each at most once, and neither
    # before its call; a pending cas of the same expected value applies only where it holds.
    _ok(
        [
            put("k", "a", 0, 1),
            put("k", "x", 2, None),
            put("k", "y", 3, None),
            cas("k", "a", "b", None, 4, None),
            get("k", "a", 5, 6),
            cas("k", "a", "c", False, 7, 8),  # an unread value landed between 6 and 8
        ]
    )
    _bad(
        [
            put("k", "a", 0, 1),
            put("k", "x", 9, None),  # called after the failed cas returned: no help
            get("k", "a", 5, 6),
            cas("k", "a", "c", False, 7, 8),
        ]
    )


def test_many_pending_writes_stay_tractable() -> None:
    """Timeouts leave many writes pending; their subsets are not searched one by one (2**60
    here), so the check ends, and still catches a stale read among them."""
    ops = [put("k", "a", 0, 1)]
    for i in range(60):
        ops.append(put("k", f"lost{i}", 2 + i, None))
        ops.append(cas("k", "a", f"c{i}", None, 2 + i, None))
        ops.append(get("k", "a" if i < 30 else None, 2.5 + i, 2.6 + i))
    ops = [op for op in ops if not (op.kind == "get" and op.result is None)]
    _ok(ops)
    ops.append(put("k", "z", 100, 101))
    ops.append(get("k", "a", 102, 103))
    _bad(ops)
