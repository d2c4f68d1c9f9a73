"""The member's runtime settings: gRPC's switches only where measured and never over the
operator's; the garbage collector's thresholds."""

from __future__ import annotations

import gc
import os
import subprocess
import sys

import pytest

from raftkv.server import runtime


def test_sets_the_member_experiments_on_a_tuned_release(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runtime, "grpc_release", lambda: (1, 85))
    env: dict[str, str] = {}
    assert runtime.apply_grpc_defaults(env) == runtime.MEMBER_GRPC_EXPERIMENTS
    assert env == {"GRPC_EXPERIMENTS": runtime.MEMBER_GRPC_EXPERIMENTS}


def test_the_operators_setting_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runtime, "grpc_release", lambda: (1, 85))
    env = {"GRPC_EXPERIMENTS": ""}
    assert runtime.apply_grpc_defaults(env) == ""
    assert env == {"GRPC_EXPERIMENTS": ""}


def test_another_release_keeps_grpcs_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runtime, "grpc_release", lambda: (1, 99))
    env: dict[str, str] = {}
    assert runtime.apply_grpc_defaults(env) is None
    assert env == {}


def test_the_installed_grpc_knows_every_experiment_the_member_sets() -> None:
    """gRPC logs 'Unknown experiment' for a name it does not have: a release that dropped one
    must leave TUNED_GRPC_RELEASES."""
    if runtime.grpc_release() not in runtime.TUNED_GRPC_RELEASES:
        # Nothing to know: on this release the member leaves GRPC_EXPERIMENTS alone.
        assert runtime.apply_grpc_defaults({}) is None
        return
    code = (
        "from raftkv.server.runtime import apply_grpc_defaults\n"
        "apply_grpc_defaults()\n"
        "import asyncio, grpc\n"
        "async def main():\n"
        "    server = grpc.aio.server()\n"
        "    server.add_insecure_port('127.0.0.1:0')\n"
        "    await server.start()\n"
        "    await server.stop(None)\n"
        "asyncio.run(main())\n"
        "print('served')\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "GRPC_EXPERIMENTS"}
    res = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env
    )
    assert res.returncode == 0 and "served" in res.stdout, res.stderr
    assert "Unknown experiment" not in res.stderr, res.stderr


def test_tune_gc_sets_the_member_thresholds() -> None:
    before = gc.get_threshold()
    try:
        runtime.tune_gc()
        assert gc.get_threshold() == runtime.GC_THRESHOLDS
    finally:
        gc.set_threshold(*before)
