"""bench/digest_overhead.py runs both variants on the real applier and reports both rates."""

from __future__ import annotations

import json

import pytest

from bench import digest_overhead


def test_reports_both_rates(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--entries", "300", "--batch", "50", "--rounds", "2", "--json"]
    assert digest_overhead.main(argv) == 0
    doc = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    with_d, without = doc["with_digest_entries_per_s"], doc["without_digest_entries_per_s"]
    assert with_d > 0 and without > 0
    assert abs(doc["overhead"] - (1 - with_d / without)) < 0.01
