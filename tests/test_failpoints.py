"""Failpoints: parsing RAFTKV_FAILPOINTS, actions, counts, sleep, panic, and the unset cost."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
import threading
import time
import timeit
from collections.abc import Iterator
from pathlib import Path

import pytest

from raftkv import failpoints as fp

SRC = str(Path(__file__).resolve().parents[1] / "src")


@pytest.fixture(autouse=True)
def _clean() -> Iterator[None]:
    fp.configure(None)
    yield
    fp.configure(None)


def run_child(code: str, spec: str | None) -> subprocess.CompletedProcess[str]:
    # PYTHONUNBUFFERED would flush stdout at every write and hide what SIGKILL loses.
    env = {k: v for k, v in os.environ.items() if k not in (fp.ENV_VAR, "PYTHONUNBUFFERED")}
    env["PYTHONPATH"] = SRC
    if spec is not None:
        env[fp.ENV_VAR] = spec
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


# -- the registry and parsing --------------------------------------------------------------


def test_registry_names_every_failpoint_of_the_design() -> None:
    assert set(fp.REGISTRY) == {
        "applyCorruptValue",
        "applySkipEntry",
        "applyDropLease",
        "backendBitFlip",
        "crashBeforeConsistentIndex",
        "crashAfterBackendCommit",
        "walBeforeFsync",
        "walTornWrite",
        "walNoSpace",
    }
    assert all(desc and "\n" not in desc for desc in fp.REGISTRY.values())


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("applyCorruptValue=on", {"applyCorruptValue": "on"}),
        ("applyCorruptValue=off", {"applyCorruptValue": "off"}),
        (" walBeforeFsync = sleep( 25 ) ;", {"walBeforeFsync": "sleep(25)"}),
        ("walBeforeFsync=sleep(0.5)", {"walBeforeFsync": "sleep(0.5)"}),
        ("applySkipEntry=4*off->1*on", {"applySkipEntry": "4*off->1*on"}),
        ("applyDropLease=return(7)", {"applyDropLease": "return(7)"}),
        ("applyDropLease=return()", {"applyDropLease": "return()"}),
        (
            "crashAfterBackendCommit=2 * off -> panic;backendBitFlip=3*on",
            {"backendBitFlip": "3*on", "crashAfterBackendCommit": "2*off->panic"},
        ),
        (";;", {}),
    ],
)
def test_good_specs(spec: str, expected: dict[str, str]) -> None:
    fp.configure(spec)
    assert fp.active() == expected
    assert fp.ENABLED is bool(expected)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("applyCorrupt=on", "unknown failpoint 'applyCorrupt'"),
        ("applyCorruptValue", "is not name=action"),
        ("=on", "is not name=action"),
        ("applyCorruptValue=maybe", "bad action 'maybe'"),
        ("applyCorruptValue=", "bad action ''"),
        ("applyCorruptValue=on->", "bad action ''"),
        ("applyCorruptValue=0*on", "count must be at least 1"),
        ("applyCorruptValue=-1*on", "bad action"),
        ("walBeforeFsync=sleep(x)", "bad action 'sleep(x)'"),
        ("walBeforeFsync=sleep()", "bad action"),
        ("applyCorruptValue=on;applyCorruptValue=off", "configured twice"),
        ("applyCorruptValue=On", "bad action 'On'"),
    ],
)
def test_bad_specs(spec: str, message: str) -> None:
    with pytest.raises(fp.FailpointConfigError, match=re.escape(message)):
        fp.parse(spec)


def test_unknown_name_lists_the_known_ones() -> None:
    with pytest.raises(fp.FailpointConfigError) as info:
        fp.configure("nope=on")
    for name in fp.REGISTRY:
        assert name in str(info.value)


def test_bad_spec_leaves_configuration_unchanged() -> None:
    fp.configure("applyCorruptValue=on")
    with pytest.raises(fp.FailpointConfigError):
        fp.configure("applyCorruptValue=off;bogus=on")
    assert fp.active() == {"applyCorruptValue": "on"}
    assert fp.ENABLED


# -- evaluation ----------------------------------------------------------------------------


def test_unset_means_disabled_and_never_fires() -> None:
    assert not fp.ENABLED
    assert not fp.hit("applyCorruptValue")
    assert fp.value("applyCorruptValue") is None


def test_on_fires_every_time_and_off_never() -> None:
    fp.configure("applyCorruptValue=on;applyDropLease=off")
    assert [fp.hit("applyCorruptValue") for _ in range(5)] == [True] * 5
    assert fp.value("applyCorruptValue") == ""
    assert [fp.hit("applyDropLease") for _ in range(5)] == [False] * 5
    assert not fp.hit("applySkipEntry")  # known but not configured


def test_counted_term_fires_the_next_n_hits_only() -> None:
    fp.configure("applyCorruptValue=3*on")
    assert [fp.hit("applyCorruptValue") for _ in range(6)] == [True] * 3 + [False] * 3


def test_chain_fires_on_the_nth_hit_from_now() -> None:
    fp.configure("applySkipEntry=4*off->1*on")
    assert [fp.hit("applySkipEntry") for _ in range(8)] == [False] * 4 + [True] + [False] * 3


def test_chain_ending_in_an_uncounted_term_lasts() -> None:
    fp.configure("applyDropLease=2*return(a)->1*off->return(b)")
    got = [fp.value("applyDropLease") for _ in range(6)]
    assert got == ["a", "a", None, "b", "b", "b"]


def test_counts_are_exact_across_threads() -> None:
    fp.configure("backendBitFlip=100*on")
    fired: list[int] = []
    lock = threading.Lock()

    def worker() -> None:
        n = sum(fp.hit("backendBitFlip") for _ in range(50))
        with lock:
            fired.append(n)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(fired) == 100


def test_sleep_blocks_then_does_not_fire() -> None:
    fp.configure("walBeforeFsync=2*sleep(20)")
    start = time.monotonic()
    assert not fp.hit("walBeforeFsync")
    # time.sleep never returns early: a lower bound, not a performance assertion.
    assert time.monotonic() - start >= 0.019
    assert not fp.hit("walBeforeFsync")
    assert fp.active() == {"walBeforeFsync": "2*sleep(20)"}


def test_hit_of_a_name_missing_from_the_registry_is_a_bug() -> None:
    fp.configure("applyCorruptValue=on")
    with pytest.raises(KeyError, match="applyCorruptVal"):
        fp.hit("applyCorruptVal")


# -- the environment variable and panic (real processes) ------------------------------------


def test_env_var_is_parsed_at_import() -> None:
    proc = run_child(
        """
        from raftkv import failpoints as fp
        print(fp.ENABLED, fp.active(), fp.hit("walTornWrite"))
        """,
        "walTornWrite=1*on",
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "True {'walTornWrite': '1*on'} True"


def test_bad_env_var_fails_the_import_with_the_known_names() -> None:
    proc = run_child("import raftkv.failpoints", "applyCorruptValue=on;typo=on")
    assert proc.returncode == 1
    assert "FailpointConfigError: RAFTKV_FAILPOINTS: unknown failpoint 'typo'" in proc.stderr
    assert "walBeforeFsync" in proc.stderr


def test_panic_kills_like_sigkill() -> None:
    proc = run_child(
        """
        import sys
        from raftkv import failpoints as fp
        print("survived first hit", fp.hit("crashAfterBackendCommit"), flush=True)
        sys.stdout.write("buffered, never flushed")
        try:
            fp.hit("crashAfterBackendCommit")
        finally:
            print("finally ran", flush=True)
        print("after the panic", flush=True)
        """,
        "crashAfterBackendCommit=1*off->panic",
    )
    assert proc.returncode == fp.PANIC_STATUS == -9
    assert proc.stdout == "survived first hit False\n"
    assert "failpoint crashAfterBackendCommit panic" in proc.stderr


# -- the cost when unset (printed, never asserted) ------------------------------------------


def test_unset_cost_micro_benchmark() -> None:
    assert not fp.ENABLED
    n = 200_000
    glob = {"fp": fp}
    base = min(timeit.repeat("pass", number=n, repeat=3))
    guarded = min(
        timeit.repeat(
            'if fp.ENABLED and fp.hit("applyCorruptValue"): pass',
            number=n,
            repeat=3,
            globals=glob,
        )
    )
    fp.configure("applyDropLease=on")  # enabled, but this call site's failpoint is not set
    enabled_other = min(
        timeit.repeat(
            'if fp.ENABLED and fp.hit("applyCorruptValue"): pass',
            number=n,
            repeat=3,
            globals=glob,
        )
    )
    per = 1e9 / n
    print(
        f"\nfailpoint guard per call: empty loop {base * per:.1f} ns, "
        f"unset {guarded * per:.1f} ns, enabled elsewhere {enabled_other * per:.1f} ns"
    )
    assert fp.ENABLED
