"""Flag, environment and YAML configuration of ``raftkv serve``."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from raftkv.server.config import ConfigError, add_serve_arguments, parse_serve_args


def parse(argv: list[str], env: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    p = argparse.ArgumentParser()
    add_serve_arguments(p)
    return parse_serve_args(p.parse_args(argv), env or {})


def test_defaults_are_etcds() -> None:
    cfg = parse([])
    assert cfg.name == "default"
    assert cfg.resolved_data_dir == "default.raftkv"
    assert cfg.listen_client_urls == ("http://127.0.0.1:2379",)
    assert cfg.listen_peer_urls == ("http://127.0.0.1:2380",)
    assert (cfg.heartbeat_interval_ms, cfg.election_timeout_ms) == (100, 1000)
    assert cfg.snapshot_count == 100_000
    assert cfg.max_request_bytes == 1_572_864
    assert cfg.quota_backend_bytes == 2 * 1024**3
    assert (cfg.backend_batch_interval_s, cfg.backend_batch_limit) == (0.1, 10_000)
    assert cfg.initial_cluster_map() == {"default": ("http://127.0.0.1:2380",)}


def test_precedence_flag_over_env_over_file(tmp_path: Path) -> None:
    f = tmp_path / "c.yaml"
    f.write_text("name: fromfile\nsnapshot-count: 7\nheartbeat-interval: 50\n")
    cfg = parse(
        ["--config-file", str(f), "--name", "fromflag"],
        {"RAFTKV_NAME": "fromenv", "RAFTKV_SNAPSHOT_COUNT": "9"},
    )
    assert cfg.name == "fromflag"
    assert cfg.snapshot_count == 9
    assert cfg.heartbeat_interval_ms == 50


def test_experimental_aliases() -> None:
    cfg = parse(["--experimental-initial-corrupt-check", "--experimental-corrupt-check-time", "5"])
    assert cfg.initial_corrupt_check is True
    assert cfg.corrupt_check_time_s == 5.0


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["--initial-cluster-state", "old"], "--initial-cluster-state"),
        (["--election-timeout", "200"], "at least 5 times"),
        (["--listen-client-urls", "127.0.0.1:2379"], "not a valid URL"),
        (["--initial-cluster", "a=http://127.0.0.1:1"], "couldn't find local name"),
        (["--snapshot-count", "zero"], "--snapshot-count"),
        (["--log-level", "loud"], "--log-level"),
        (["--backend-batch-interval=-1"], "--backend-batch-interval: must not be negative"),
        (["--backend-batch-limit", "0"], "--backend-batch-limit"),
        (["--grpc-front-processes=-1"], "--grpc-front-processes: must not be negative"),
    ],
)
def test_bad_values_name_the_flag(argv: list[str], needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        parse(argv)


def test_restart_ignores_initial_cluster(tmp_path: Path) -> None:
    """As etcd: a member with a WAL restarts whatever --initial-cluster says (here a list
    written after a membership change, without this member); a new member is refused."""
    argv = ["--name", "c", "--initial-cluster", "a=http://127.0.0.1:1"]
    with pytest.raises(ConfigError, match="couldn't find local name"):
        parse([*argv, "--data-dir", str(tmp_path / "c")])
    wal = tmp_path / "c" / "member" / "wal"
    wal.mkdir(parents=True)
    (wal / "0000000000000000-0000000000000000.wal").write_bytes(b"")
    assert parse([*argv, "--data-dir", str(tmp_path / "c")]).name == "c"
    wal_dir = tmp_path / "w"
    wal_dir.mkdir()
    (wal_dir / "0000000000000000-0000000000000000.wal").write_bytes(b"")
    assert parse([*argv, "--data-dir", str(tmp_path / "d"), "--wal-dir", str(wal_dir)])


def test_unknown_yaml_key_is_refused(tmp_path: Path) -> None:
    f = tmp_path / "c.yaml"
    f.write_text("nmae: typo\n")
    with pytest.raises(ConfigError, match="unknown configuration key 'nmae'"):
        parse(["--config-file", str(f)])


def test_corrupt_check_time_takes_go_durations() -> None:
    for text, seconds in (("5m", 300.0), ("1m30s", 90.0), ("500ms", 0.5), ("0", 0.0), ("2.5", 2.5)):
        assert parse([f"--experimental-corrupt-check-time={text}"]).corrupt_check_time_s == seconds
    with pytest.raises(ConfigError, match="corrupt-check-time: invalid value '5x'"):
        parse(["--corrupt-check-time=5x"])


def test_backend_batch_flags_take_etcds_spelling() -> None:
    cfg = parse(["--backend-batch-interval", "250ms", "--backend-batch-limit", "500"])
    assert (cfg.backend_batch_interval_s, cfg.backend_batch_limit) == (0.25, 500)
    assert parse(["--backend-batch-interval=0"]).backend_batch_interval_s == 0.0


def test_tls_flags_take_etcds_names_and_lists() -> None:
    cfg = parse(
        [
            "--listen-client-urls=https://127.0.0.1:2379",
            "--cert-file=c.pem",
            "--key-file=k.pem",
            "--trusted-ca-file=ca.pem",
            "--client-cert-auth",
            "--peer-cert-allowed-cn=m1,m2",
            "--cipher-suites=TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256, TLS_AES_128_GCM_SHA256",
            "--tls-max-version=TLS1.3",
        ]
    )
    info = cfg.client_tls()
    assert (info.cert_file, info.key_file, info.trusted_ca_file) == ("c.pem", "k.pem", "ca.pem")
    assert info.client_cert_auth
    assert cfg.peer_tls().allowed_cns == ("m1", "m2")
    assert cfg.cipher_suites == ("TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256", "TLS_AES_128_GCM_SHA256")
    assert cfg.tls_policy().max_version == "TLS1.3"


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (
            ["--listen-client-urls=https://127.0.0.1:2379"],
            r"TLS key/cert \(--cert-file, --key-file\) must be provided for client url "
            r"https://127.0.0.1:2379 with HTTPS scheme",
        ),
        (["--listen-peer-urls=https://127.0.0.1:2380"], "must be provided for peer url"),
        (["--tls-min-version=SSL3"], 'unexpected TLS version "SSL3"'),
        (
            [
                "--listen-client-urls=https://127.0.0.1:2379",
                "--auto-tls",
                "--tls-max-version=TLS1.2",
            ],
            "cannot be restricted",
        ),
        (["--cipher-suites=TLS_RSA_WITH_RC4_128_SHA"], "insecure cipher suite"),
        (["--listen-client-urls=unix://raftkv.sock"], "unix sockets are not supported"),
    ],
)
def test_tls_refusals_name_the_flag_as_etcd(argv: list[str], needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        parse(argv)


def test_peer_tls_versions_are_honoured_where_the_client_port_is_plaintext() -> None:
    cfg = parse(
        ["--listen-peer-urls=https://127.0.0.1:2380", "--peer-auto-tls", "--tls-min-version=TLS1.3"]
    )
    assert cfg.tls_policy().restricts_versions


def test_help_defaults_parse_back_to_the_defaults() -> None:
    """Each default the help shows, given back as the flag's value, is the built-in default."""
    from raftkv.server.config import _DERIVED_DEFAULTS, _FLAGS, ServerConfig, default_text

    for flag in _FLAGS:
        if flag in _DERIVED_DEFAULTS:
            continue
        assert parse([f"--{flag}={default_text(flag)}"]) == ServerConfig(), flag


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0s"), (0.1, "100ms"), (0.0005, "500µs"), (1.5, "1.5s"), (90, "1m30s"), (3600, "1h0m0s")],
)
def test_go_duration(seconds: float, text: str) -> None:
    from raftkv.server.config import go_duration, parse_duration

    assert go_duration(seconds) == text
    assert parse_duration(text) == pytest.approx(seconds)


def test_grpc_front_processes_from_the_flag_or_the_environment() -> None:
    assert parse([]).grpc_front_processes == 0
    assert parse(["--grpc-front-processes", "3"]).grpc_front_processes == 3
    assert parse([], {"RAFTKV_GRPC_FRONT_PROCESSES": "2"}).grpc_front_processes == 2
