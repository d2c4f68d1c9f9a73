"""Member configuration: etcd's flag names and defaults, RAFTKV_* variables and a YAML file.

Owns: the ``ServerConfig`` record and ``parse_serve_args``.  Precedence, lowest to highest:
built-in defaults < ``--config-file`` (YAML, keys are the flag names without dashes, as etcd's
config file) < ``RAFTKV_<FLAG>`` environment variables < command-line flags.

Contract: every value in a returned ``ServerConfig`` has been validated; a bad value raises
``ConfigError`` with a message naming the flag.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import yaml

from raftkv.server.compactor import parse_retention
from raftkv.server.data_dir import DataDir
from raftkv.tlsutil import TLSConfigError, TLSInfo, TLSPolicy


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the flag."""


@dataclass(frozen=True)
class ServerConfig:
    name: str = "default"
    data_dir: str = ""
    wal_dir: str = ""
    listen_client_urls: tuple[str, ...] = ("http://127.0.0.1:2379",)
    advertise_client_urls: tuple[str, ...] = ("http://127.0.0.1:2379",)
    listen_peer_urls: tuple[str, ...] = ("http://127.0.0.1:2380",)
    initial_advertise_peer_urls: tuple[str, ...] = ("http://127.0.0.1:2380",)
    initial_cluster: str = ""
    initial_cluster_state: str = "new"
    initial_cluster_token: str = "etcd-cluster"
    heartbeat_interval_ms: int = 100
    election_timeout_ms: int = 1000
    snapshot_count: int = 100_000
    snapshot_catchup_entries: int = 5000
    quota_backend_bytes: int = 2 * 1024**3
    backend_batch_interval_s: float = 0.1
    backend_batch_limit: int = 10_000
    max_request_bytes: int = 1_572_864
    max_txn_ops: int = 128
    auto_compaction_mode: str = "periodic"
    auto_compaction_retention: str = "0"
    listen_metrics_urls: tuple[str, ...] = ()
    listen_client_http_urls: tuple[str, ...] = ()
    log_level: str = "info"
    log_format: str = "text"
    initial_corrupt_check: bool = False
    corrupt_check_time_s: float = 0.0
    corrupt_alarm_policy: str = "member"
    apply_digest_check_interval_ms: int = 100
    strict_reconfig_check: bool = True
    max_learners: int = 1
    # client TLS (the client URLs)
    cert_file: str = ""
    key_file: str = ""
    client_cert_file: str = ""
    client_key_file: str = ""
    trusted_ca_file: str = ""
    client_cert_auth: bool = False
    client_crl_file: str = ""
    client_cert_allowed_hostname: tuple[str, ...] = ()
    auto_tls: bool = False
    # peer TLS (the peer URLs)
    peer_cert_file: str = ""
    peer_key_file: str = ""
    peer_client_cert_file: str = ""
    peer_client_key_file: str = ""
    peer_trusted_ca_file: str = ""
    peer_client_cert_auth: bool = False
    peer_crl_file: str = ""
    peer_cert_allowed_cn: tuple[str, ...] = ()
    peer_cert_allowed_hostname: tuple[str, ...] = ()
    peer_auto_tls: bool = False
    self_signed_cert_validity: int = 1
    cipher_suites: tuple[str, ...] = ()
    tls_min_version: str = "TLS1.2"
    tls_max_version: str = ""
    # auth
    auth_token: str = "simple"
    auth_token_ttl_s: int = 300
    bcrypt_cost: int = 10
    # Raft's message limits: etcd fixes them in code (maxSizePerMsg, maxInflightMsgs), so they
    # have no flag here either; the server simulator varies them to reach the interleavings
    # small appends make (a log repaired one entry per round).
    raft_max_size_per_msg: int = 1 << 20
    raft_max_inflight_msgs: int = 512
    # raftkv's own: processes that serve the client URLs' gRPC for the member (0: none, the
    # member serves them itself); see raftkv.app.fronts.
    grpc_front_processes: int = 0

    def tls_policy(self) -> TLSPolicy:
        return TLSPolicy(self.tls_min_version, self.tls_max_version, self.cipher_suites)

    def client_tls(self) -> TLSInfo:
        """The client side's certificate files (``auto_tls`` is resolved at start-up)."""
        return TLSInfo(
            cert_file=self.cert_file,
            key_file=self.key_file,
            trusted_ca_file=self.trusted_ca_file,
            client_cert_auth=self.client_cert_auth,
            crl_file=self.client_crl_file,
            client_cert_file=self.client_cert_file,
            client_key_file=self.client_key_file,
            allowed_hostnames=self.client_cert_allowed_hostname,
        )

    def peer_tls(self) -> TLSInfo:
        """The peer side's certificate files (``peer_auto_tls`` is resolved at start-up)."""
        return TLSInfo(
            cert_file=self.peer_cert_file,
            key_file=self.peer_key_file,
            trusted_ca_file=self.peer_trusted_ca_file,
            client_cert_auth=self.peer_client_cert_auth,
            crl_file=self.peer_crl_file,
            client_cert_file=self.peer_client_cert_file,
            client_key_file=self.peer_client_key_file,
            allowed_cns=self.peer_cert_allowed_cn,
            allowed_hostnames=self.peer_cert_allowed_hostname,
        )

    @property
    def resolved_data_dir(self) -> str:
        return self.data_dir or f"{self.name}.raftkv"

    def initial_cluster_map(self) -> dict[str, tuple[str, ...]]:
        """name -> peer URLs of the initial cluster (defaults to this member alone)."""
        spec = self.initial_cluster or ",".join(
            f"{self.name}={u}" for u in self.initial_advertise_peer_urls
        )
        members: dict[str, list[str]] = {}
        for part in spec.split(","):
            name, sep, url = part.strip().partition("=")
            if not sep or not name or not url:
                raise ConfigError(f"--initial-cluster: invalid member {part!r} (want name=url)")
            _check_url("--initial-cluster", url)
            members.setdefault(name, []).append(url)
        if self.name not in members:
            raise ConfigError(
                f"--initial-cluster: couldn't find local name {self.name!r} in the initial "
                f"cluster configuration"
            )
        return {k: tuple(v) for k, v in members.items()}


# flag name -> (field, kind, help); kind is one of "str", "int", "float", "bool", "urls", "list"
# (comma-separated strings),
# "duration" (Go's time.ParseDuration syntax, as etcd's duration flags take, or bare seconds)
_FLAGS: dict[str, tuple[str, str, str]] = {
    "name": ("name", "str", "Human-readable name for this member."),
    "data-dir": ("data_dir", "str", "Path to the data directory (default: <name>.raftkv)."),
    "wal-dir": (
        "wal_dir",
        "str",
        "Path to the dedicated WAL directory (default: <data-dir>/member/wal).",
    ),
    "listen-client-urls": ("listen_client_urls", "urls", "URLs to listen on for client traffic."),
    "advertise-client-urls": (
        "advertise_client_urls",
        "urls",
        "Client URLs advertised to the rest of the cluster.",
    ),
    "listen-peer-urls": ("listen_peer_urls", "urls", "URLs to listen on for peer traffic."),
    "initial-advertise-peer-urls": (
        "initial_advertise_peer_urls",
        "urls",
        "This member's peer URLs to advertise to the rest of the cluster.",
    ),
    "initial-cluster": (
        "initial_cluster",
        "str",
        "Initial cluster configuration for bootstrapping: name1=url1,name2=url2,...",
    ),
    "initial-cluster-state": (
        "initial_cluster_state",
        "str",
        "Initial cluster state ('new' or 'existing').",
    ),
    "initial-cluster-token": (
        "initial_cluster_token",
        "str",
        "Initial cluster token for the cluster during bootstrap.",
    ),
    "heartbeat-interval": ("heartbeat_interval_ms", "int", "Time (in ms) of a heartbeat interval."),
    "election-timeout": ("election_timeout_ms", "int", "Time (in ms) for an election to timeout."),
    "snapshot-count": (
        "snapshot_count",
        "int",
        "Number of committed transactions to trigger a snapshot to disk.",
    ),
    "snapshot-catchup-entries": (
        "snapshot_catchup_entries",
        "int",
        "Entries kept behind a snapshot for slow followers to catch up without a snapshot.",
    ),
    "backend-batch-interval": (
        "backend_batch_interval_s",
        "duration",
        "Maximum time before committing the backend transaction, as a Go duration (e.g. "
        "100ms) or seconds; 0 commits after every apply batch. Applied entries not yet "
        "committed are replayed from the WAL after a crash.",
    ),
    "backend-batch-limit": (
        "backend_batch_limit",
        "int",
        "Maximum operations before committing the backend transaction.",
    ),
    "quota-backend-bytes": (
        "quota_backend_bytes",
        "int",
        "Sets the maximum size (in bytes) that the backend database may consume. Exceeding "
        "this triggers a NOSPACE alarm and makes the cluster refuse writes. 0: the default "
        "2 GiB; negative: no quota.",
    ),
    "max-request-bytes": (
        "max_request_bytes",
        "int",
        "Maximum client request size in bytes the server will accept.",
    ),
    "max-txn-ops": (
        "max_txn_ops",
        "int",
        "Maximum number of operations permitted in a transaction.",
    ),
    "auto-compaction-mode": (
        "auto_compaction_mode",
        "str",
        "Interpret 'auto-compaction-retention' as 'periodic' (duration) or 'revision'.",
    ),
    "auto-compaction-retention": (
        "auto_compaction_retention",
        "str",
        "Auto compaction retention ('1h', '30m', a number of hours, or revisions). 0 disables.",
    ),
    "listen-metrics-urls": (
        "listen_metrics_urls",
        "urls",
        "Additional URLs to listen on for /metrics, /health, /livez, /readyz and /version.",
    ),
    "listen-client-http-urls": (
        "listen_client_http_urls",
        "urls",
        "URLs to serve HTTP on (the JSON gateway, /health, /livez, /readyz, /version, "
        "/metrics) apart from the gRPC client URLs.",
    ),
    "log-level": ("log_level", "str", "Log level: debug, info, warn, error."),
    "log-format": ("log_format", "str", "Log format: text, or json (one object per line)."),
    "initial-corrupt-check": (
        "initial_corrupt_check",
        "bool",
        "Check state against the other members before serving clients.",
    ),
    "corrupt-alarm-policy": (
        "corrupt_alarm_policy",
        "str",
        "Who stops serving on a CORRUPT alarm: 'member' (the diverged member only) or "
        "'cluster' (every member refuses requests, as etcd does).",
    ),
    "apply-digest-check-interval": (
        "apply_digest_check_interval_ms",
        "int",
        "Time (in ms) between the leader's comparisons of the members' apply digests.",
    ),
    "corrupt-check-time": (
        "corrupt_check_time_s",
        "duration",
        "Time between the leader's state hash checks over all replicated state, as a Go "
        "duration (e.g. 30s, 5m) or seconds; 0 disables.",
    ),
    "strict-reconfig-check": (
        "strict_reconfig_check",
        "bool",
        "Reject reconfiguration requests that would cause quorum loss.",
    ),
    "max-learners": (
        "max_learners",
        "int",
        "The maximum number of learners allowed in the cluster membership.",
    ),
    # security, as etcd's flags
    "cert-file": ("cert_file", "str", "Path to the client server TLS cert file."),
    "key-file": ("key_file", "str", "Path to the client server TLS key file."),
    "client-cert-file": (
        "client_cert_file",
        "str",
        "Path to an explicit client TLS cert file this member presents when it dials another "
        "member's client URL (repair); otherwise --cert-file.",
    ),
    "client-key-file": (
        "client_key_file",
        "str",
        "Path to an explicit client TLS key file; otherwise --key-file.",
    ),
    "client-cert-auth": ("client_cert_auth", "bool", "Enable client cert authentication."),
    "client-crl-file": (
        "client_crl_file",
        "str",
        "Path to the client certificate revocation list file.",
    ),
    "client-cert-allowed-hostname": (
        "client_cert_allowed_hostname",
        "list",
        "Comma-separated list of allowed SAN hostnames for client cert authentication.",
    ),
    "trusted-ca-file": (
        "trusted_ca_file",
        "str",
        "Path to the client server TLS trusted CA cert file.",
    ),
    "auto-tls": ("auto_tls", "bool", "Client TLS using generated certificates."),
    "peer-cert-file": ("peer_cert_file", "str", "Path to the peer server TLS cert file."),
    "peer-key-file": ("peer_key_file", "str", "Path to the peer server TLS key file."),
    "peer-client-cert-file": (
        "peer_client_cert_file",
        "str",
        "Path to an explicit peer client TLS cert file otherwise peer cert file will be used "
        "when client auth is required.",
    ),
    "peer-client-key-file": (
        "peer_client_key_file",
        "str",
        "Path to an explicit peer client TLS key file otherwise peer key file will be used "
        "when client auth is required.",
    ),
    "peer-client-cert-auth": (
        "peer_client_cert_auth",
        "bool",
        "Enable peer client cert authentication.",
    ),
    "peer-trusted-ca-file": (
        "peer_trusted_ca_file",
        "str",
        "Path to the peer server TLS trusted CA file.",
    ),
    "peer-auto-tls": ("peer_auto_tls", "bool", "Peer TLS using generated certificates."),
    "peer-crl-file": ("peer_crl_file", "str", "Path to the peer certificate revocation list file."),
    "peer-cert-allowed-cn": (
        "peer_cert_allowed_cn",
        "list",
        "Comma-separated list of allowed CNs for inter-peer TLS authentication.",
    ),
    "peer-cert-allowed-hostname": (
        "peer_cert_allowed_hostname",
        "list",
        "Comma-separated list of allowed SAN hostnames for inter-peer TLS authentication.",
    ),
    "self-signed-cert-validity": (
        "self_signed_cert_validity",
        "int",
        "The validity period of the client and peer certificates, unit is year.",
    ),
    "cipher-suites": (
        "cipher_suites",
        "list",
        "Comma-separated list of supported TLS cipher suites between client/server and peers "
        "(Go's names, as etcd takes them; they apply to TLS 1.2, TLS 1.3's are fixed).",
    ),
    "tls-min-version": (
        "tls_min_version",
        "str",
        "Minimum TLS version supported by raftkv. Possible values: TLS1.2, TLS1.3.",
    ),
    "auth-token": (
        "auth_token",
        "str",
        "Specify auth token specific options: 'simple', or "
        "'jwt,pub-key=PATH,priv-key=PATH,sign-method=RS256[,ttl=5m]'.",
    ),
    "auth-token-ttl": ("auth_token_ttl_s", "int", "The lifetime in seconds of the auth token."),
    "bcrypt-cost": (
        "bcrypt_cost",
        "int",
        "Specify bcrypt algorithm cost factor for auth password hashing (4-31).",
    ),
    "grpc-front-processes": (
        "grpc_front_processes",
        "int",
        "raftkv only: number of processes that serve gRPC on the client URLs for this member "
        "(0: the member serves them itself). Python's gRPC costs a member more CPU per call "
        "than a put's own work; front processes run it beside the member, on other cores.",
    ),
    "tls-max-version": (
        "tls_max_version",
        "str",
        "Maximum TLS version supported by raftkv. Possible values: TLS1.2, TLS1.3 (empty: "
        "the highest the TLS library has).",
    ),
}

# etcd's experimental spellings accepted as aliases.
_ALIASES = {
    "experimental-initial-corrupt-check": "initial-corrupt-check",
    "experimental-corrupt-check-time": "corrupt-check-time",
    "experimental-snapshot-catchup-entries": "snapshot-catchup-entries",
    "experimental-max-learners": "max-learners",
}

_LOG_LEVELS = ("debug", "info", "warn", "error")


# Defaults that depend on other flags, as the help states them.
_DERIVED_DEFAULTS = {"initial-cluster": "<name>=<initial-advertise-peer-urls>"}


def go_duration(seconds: float) -> str:
    """Go's ``time.Duration.String`` of ``seconds``: ``100ms``, ``1m30s``, ``0s``."""
    if seconds == 0:
        return "0s"
    if seconds < 1:
        ms = seconds * 1000
        return f"{ms:g}ms" if ms >= 1 else f"{seconds * 1e6:g}µs"
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    out = f"{int(hours)}h" if hours else ""
    out += f"{int(minutes)}m" if hours or minutes else ""
    return out + f"{secs:g}s"


def default_text(flag: str) -> str:
    """The built-in default of ``flag`` as its value would be written on the command line
    (``ServerConfig``'s field default: a list comma-separated, a bool ``true``/``false``, a
    duration in Go's syntax)."""
    if flag in _DERIVED_DEFAULTS:
        return _DERIVED_DEFAULTS[flag]
    field, kind, _ = _FLAGS[flag]
    value: Any = getattr(ServerConfig(), field)
    if kind == "bool":
        return "true" if value else "false"
    if kind == "duration":
        return go_duration(float(value))
    if isinstance(value, tuple):
        return ",".join(str(v) for v in value)
    return str(value)


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    """Register every serve flag.  All default to None so precedence can be resolved; each
    help text ends with the built-in default (``default_text``) unless it states it itself."""
    parser.add_argument("--config-file", help="Path to a YAML configuration file. (default: '')")
    for flag, (_field, kind, help_text) in _FLAGS.items():
        names = [f"--{flag}"] + [f"--{a}" for a, target in _ALIASES.items() if target == flag]
        if "(default:" not in help_text:
            shown = default_text(flag).replace("%", "%%")  # argparse formats help with %
            help_text = f"{help_text} (default: '{shown}')"
        if kind == "bool":
            parser.add_argument(
                *names, dest=flag, nargs="?", const="true", default=None, help=help_text
            )
        else:
            parser.add_argument(*names, dest=flag, default=None, help=help_text)


def parse_serve_args(
    args: argparse.Namespace, environ: Mapping[str, str] | None = None
) -> ServerConfig:
    env = os.environ if environ is None else environ
    raw: dict[str, Any] = {}
    config_file = getattr(args, "config_file", None) or env.get("RAFTKV_CONFIG_FILE")
    if config_file:
        raw.update(_load_yaml(config_file))
    for flag in _FLAGS:
        value = env.get("RAFTKV_" + flag.upper().replace("-", "_"))
        if value is not None:
            raw[flag] = value
    for flag in _FLAGS:
        value = getattr(args, flag, None)
        if value is not None:
            raw[flag] = value
    return build_config(raw)


def build_config(raw: Mapping[str, Any]) -> ServerConfig:
    values: dict[str, Any] = {}
    for flag, value in raw.items():
        flag = _ALIASES.get(flag, flag)
        if flag not in _FLAGS:
            raise ConfigError(f"unknown configuration key {flag!r}")
        field, kind, _ = _FLAGS[flag]
        values[field] = _convert(flag, kind, value)
    cfg = dataclasses.replace(ServerConfig(), **values)
    _validate(cfg)
    return cfg


_DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_DURATION_TERM = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")


def parse_duration(value: Any) -> float:
    """Seconds from a Go duration (``1m30s``, ``500ms``, ``0``) or a bare number of seconds."""
    if isinstance(value, int | float):
        return float(value)
    text = str(value).strip()
    try:
        return float(text)
    except ValueError:
        pass
    pos, total = 0, 0.0
    while pos < len(text):
        m = _DURATION_TERM.match(text, pos)
        if m is None:
            raise ValueError(f"invalid duration {text!r}")
        total += float(m.group(1)) * _DURATION_UNITS[m.group(2)]
        pos = m.end()
    if not text:
        raise ValueError("empty duration")
    return total


def _convert(flag: str, kind: str, value: Any) -> Any:
    try:
        if kind == "int":
            return int(value)
        if kind == "float":
            return float(value)
        if kind == "duration":
            return parse_duration(value)
        if kind == "bool":
            if isinstance(value, bool):
                return value
            text = str(value).lower()
            if text not in ("true", "false", "1", "0"):
                raise ValueError(value)
            return text in ("true", "1")
        if kind == "list":
            items = value if isinstance(value, list | tuple) else str(value).split(",")
            return tuple(str(i).strip() for i in items if str(i).strip())
        if kind == "urls":
            urls = value if isinstance(value, list | tuple) else str(value).split(",")
            out = tuple(str(u).strip() for u in urls if str(u).strip())
            for url in out:
                _check_url(f"--{flag}", url)
            return out
        return str(value)
    except ConfigError:
        raise
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"--{flag}: invalid value {value!r}") from exc


def _check_url(flag: str, url: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https", "unix", "unixs") or not parts.netloc:
        raise ConfigError(f"{flag}: {url!r} is not a valid URL (want http://host:port)")
    if parts.scheme in ("http", "https"):
        try:
            port = parts.port
        except ValueError as exc:
            raise ConfigError(f"{flag}: {url!r} has an invalid port") from exc
        if port is None:
            raise ConfigError(f"{flag}: {url!r} has no port")


def _validate(cfg: ServerConfig) -> None:
    if not cfg.name:
        raise ConfigError("--name: must not be empty")
    if cfg.initial_cluster_state not in ("new", "existing"):
        raise ConfigError("--initial-cluster-state: must be 'new' or 'existing'")
    if cfg.heartbeat_interval_ms <= 0:
        raise ConfigError("--heartbeat-interval: must be positive")
    if cfg.election_timeout_ms < 5 * cfg.heartbeat_interval_ms:
        raise ConfigError(
            f"--election-timeout[{cfg.election_timeout_ms}ms] should be at least 5 times as "
            f"--heartbeat-interval[{cfg.heartbeat_interval_ms}ms]"
        )
    if cfg.snapshot_count <= 0:
        raise ConfigError("--snapshot-count: must be positive")
    if cfg.snapshot_catchup_entries < 0:
        raise ConfigError("--snapshot-catchup-entries: must not be negative")
    if cfg.backend_batch_interval_s < 0:
        raise ConfigError("--backend-batch-interval: must not be negative")
    if cfg.backend_batch_limit <= 0:
        raise ConfigError("--backend-batch-limit: must be positive")
    if cfg.max_request_bytes <= 0 or cfg.max_txn_ops <= 0:
        raise ConfigError("--max-request-bytes and --max-txn-ops must be positive")
    if cfg.auto_compaction_mode not in ("periodic", "revision"):
        raise ConfigError("--auto-compaction-mode: must be 'periodic' or 'revision'")
    try:
        parse_retention(cfg.auto_compaction_mode, cfg.auto_compaction_retention)
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    if cfg.log_level not in _LOG_LEVELS:
        raise ConfigError(f"--log-level: must be one of {', '.join(_LOG_LEVELS)}")
    if cfg.log_format not in ("text", "json"):
        raise ConfigError("--log-format: must be 'text' or 'json'")
    if cfg.corrupt_alarm_policy not in ("member", "cluster"):
        raise ConfigError("--corrupt-alarm-policy: must be 'member' or 'cluster'")
    if cfg.apply_digest_check_interval_ms <= 0:
        raise ConfigError("--apply-digest-check-interval: must be positive")
    if cfg.corrupt_check_time_s < 0:
        raise ConfigError("--corrupt-check-time: must not be negative")
    if cfg.max_learners < 0:
        raise ConfigError("--max-learners: must not be negative")
    if cfg.grpc_front_processes < 0:
        raise ConfigError("--grpc-front-processes: must not be negative")
    if not _has_wal(cfg):
        # As etcd, --initial-cluster only serves to bootstrap or join: a member restarting
        # from its WAL ignores it, so it need not name this member (a list written after a
        # membership change may leave out a member that was down then).
        cfg.initial_cluster_map()
    _validate_tls(cfg)


def _has_wal(cfg: ServerConfig) -> bool:
    """The member restarts from a WAL (etcd's ``isMemberInitialized``)."""
    return DataDir(cfg.resolved_data_dir, cfg.wal_dir).has_wal()


def _validate_tls(cfg: ServerConfig) -> None:
    """etcd's TLS rules: policy values, an https URL needs a certificate (or auto TLS), and
    what the gRPC client listener cannot enforce is refused rather than ignored."""
    try:
        cfg.tls_policy().validate()
    except TLSConfigError as exc:
        raise ConfigError(str(exc)) from exc
    if not 4 <= cfg.bcrypt_cost <= 31:
        raise ConfigError("--bcrypt-cost: must be between 4 and 31")
    if cfg.auth_token_ttl_s <= 0:
        raise ConfigError("--auth-token-ttl: must be positive")
    if cfg.self_signed_cert_validity <= 0:
        raise ConfigError("--self-signed-cert-validity: must be positive")
    for url in cfg.listen_client_urls + cfg.listen_client_http_urls + cfg.listen_metrics_urls:
        if _is_tls_url(url) and not (cfg.cert_file or cfg.key_file or cfg.auto_tls):
            raise ConfigError(
                f"TLS key/cert (--cert-file, --key-file) must be provided for client url {url} "
                "with HTTPS scheme"
            )
    for url in cfg.listen_peer_urls:
        if _is_tls_url(url) and not (cfg.peer_cert_file or cfg.peer_key_file or cfg.peer_auto_tls):
            raise ConfigError(
                f"TLS key/cert (--peer-cert-file, --peer-key-file) must be provided for peer url "
                f"{url} with HTTPS scheme"
            )
    for flag, url in (
        [("--listen-client-urls", u) for u in cfg.listen_client_urls]
        + [("--listen-client-http-urls", u) for u in cfg.listen_client_http_urls]
        + [("--listen-metrics-urls", u) for u in cfg.listen_metrics_urls]
        + [("--listen-peer-urls", u) for u in cfg.listen_peer_urls]
    ):
        if urlsplit(url).scheme in ("unix", "unixs"):
            raise ConfigError(f"{flag}: {url}: unix sockets are not supported by raftkv yet")
    if any(_is_tls_url(u) for u in cfg.listen_client_urls) and cfg.tls_policy().restricts_versions:
        raise ConfigError(
            "--tls-min-version/--tls-max-version: the gRPC client listener negotiates TLS 1.2 "
            "and TLS 1.3 and cannot be restricted to one; only peer URLs honour these flags"
        )


def _is_tls_url(url: str) -> bool:
    return urlsplit(url).scheme in ("https", "unixs")


def _load_yaml(path: str) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f) or {}
    except OSError as exc:
        raise ConfigError(f"--config-file: cannot read {path}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"--config-file: {path} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"--config-file: {path} must hold a mapping of flag names to values")
    return {str(k): v for k, v in data.items()}


def describe_flags() -> Sequence[tuple[str, str]]:
    """(flag, help) pairs, for documentation."""
    return [(f"--{flag}", help_text) for flag, (_f, _k, help_text) in _FLAGS.items()]
