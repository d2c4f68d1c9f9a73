"""Who a client is and how it protects its connections: etcdctl's TLS and authentication settings.

Owns: :class:`TLSSettings` (``--cacert``, ``--cert``, ``--key``, ``--insecure-transport``,
``--insecure-skip-tls-verify``) and which endpoint is dialed with TLS, :class:`Credentials`
(``--user``, ``--password``), :class:`ClientSecurity` (both, frozen and picklable: the
benchmark hands it to its load processes), and :func:`security_from_args`, which reads the
flags (``raftkv.ctl.client_flags.add_security_flags``), falls back on the environment and applies
etcdctl 3.5's rules (``etcdctl/ctlv3/command/global.go``: ``keyAndCertFromCmd``,
``authCfgFromCmd``, ``newClientCfg``; ``clientv3.New``), with etcdctl's messages and exit codes:

- a flag given as the empty string: ``empty string is passed to --cert option`` (exit 128);
- a certificate without its key, or a key without its certificate: ``KeyFile and CertFile must
  both be present[key: K, cert: C]`` (exit 128);
- ``--user name:password``, or ``--user name --password password`` (then ``--user`` is the
  whole name, even when it holds a ``:``, as etcdctl takes it); ``--user name`` alone asks
  ``Password: `` (without echo on a terminal; otherwise one line of standard input, as
  etcdctl's prompt ends up doing); an empty name or password means no authentication
  (clientv3 authenticates only when both are set);
- each flag falls back on ``RAFTKV_<NAME>`` then ``ETCDCTL_<NAME>`` (``RAFTKV_CACERT``,
  ``ETCDCTL_CACERT``, ...; empty values are ignored, as etcd's ``SetPflagsFromEnv`` does); a
  flag on the command line wins.  Booleans take Go's spellings (``true``, ``1``, ``t``, ...).

TLS is used for an ``https://`` endpoint always, never for an ``http://`` one (clientv3's
``CREDS_REQUIRE`` / ``CREDS_DROP``), and for an endpoint without a scheme when any TLS flag is
given or ``--insecure-transport=false``.  ``--insecure-skip-tls-verify`` counts as a TLS flag
here (etcdctl 3.5 ignores it unless another one is given).  Imports no gRPC: settings are made
before any channel.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from raftkv.client.endpoints import scheme_tls
from raftkv.client.errors import EXIT_BAD_ARGS, CtlError

ENV_PREFIXES = ("RAFTKV_", "ETCDCTL_")

# Namespace attribute -> the flag's name; the environment variables are the prefixes above
# followed by the name in upper case with ``_`` for ``-`` (``ETCDCTL_INSECURE_SKIP_TLS_VERIFY``).
FLAG_NAMES = {
    "tls_cacert": "cacert",
    "tls_cert": "cert",
    "tls_key": "key",
    "insecure_transport": "insecure-transport",
    "insecure_skip_tls_verify": "insecure-skip-tls-verify",
    "auth_user": "user",
    "auth_password": "password",
}

_GO_TRUE = ("1", "t", "T", "TRUE", "true", "True")
_GO_FALSE = ("0", "f", "F", "FALSE", "false", "False")


@dataclass(frozen=True)
class TLSSettings:
    """Files are paths as given (checked and read when a channel is built)."""

    cacert: str = ""
    cert: str = ""
    key: str = ""
    insecure_transport: bool = True
    skip_verify: bool = False

    @property
    def requested(self) -> bool:
        """Whether TLS was asked for: any TLS flag, or ``--insecure-transport=false``."""
        return bool(
            self.cacert or self.cert or self.key or self.skip_verify or not self.insecure_transport
        )

    def uses_tls(self, endpoint: str) -> bool:
        """Whether ``endpoint`` is dialed with TLS (see the module's rules)."""
        by_scheme = scheme_tls(endpoint)
        return self.requested if by_scheme is None else by_scheme


@dataclass(frozen=True)
class Credentials:
    """A user name and its password, both non-empty."""

    user: str
    password: str = field(repr=False)


@dataclass(frozen=True)
class ClientSecurity:
    """Everything a client needs to reach a TLS- and auth-enabled cluster; the default is
    plaintext and anonymous."""

    tls: TLSSettings = field(default_factory=TLSSettings)
    credentials: Credentials | None = None


def env_names(flag: str) -> tuple[str, ...]:
    """The environment variables a flag falls back on, in order (``cacert`` ->
    ``RAFTKV_CACERT``, ``ETCDCTL_CACERT``)."""
    suffix = flag.upper().replace("-", "_")
    return tuple(prefix + suffix for prefix in ENV_PREFIXES)


def parse_go_bool(text: str, source: str) -> bool:
    """``strconv.ParseBool``; ``source`` says where the text came from in the error."""
    if text in _GO_TRUE:
        return True
    if text in _GO_FALSE:
        return False
    raise CtlError(
        f'invalid argument "{text}" for {source}: strconv.ParseBool: parsing "{text}": '
        "invalid syntax",
        EXIT_BAD_ARGS,
    )


def ask_password(prompt: str = "Password: ") -> str:
    """The password typed on the terminal (not echoed), or one line of standard input when
    it is not a terminal; ``""`` at end of input."""
    if sys.stdin is not None and sys.stdin.isatty():
        return getpass.getpass(prompt)
    sys.stderr.write(prompt + "\n")
    sys.stderr.flush()
    line = sys.stdin.readline() if sys.stdin is not None else ""
    return line.rstrip("\r\n")


class _Lookup:
    """A flag's value from the namespace, else from the environment."""

    def __init__(self, args: argparse.Namespace, environ: Mapping[str, str]) -> None:
        self.args = args
        self.environ = environ

    def text(self, dest: str) -> str:
        flag = FLAG_NAMES[dest]
        given = getattr(self.args, dest, None)
        if given is not None:
            if given == "" and dest.startswith("tls_"):
                raise CtlError(f"empty string is passed to --{flag} option", EXIT_BAD_ARGS)
            return str(given)
        for name in env_names(flag):
            value = self.environ.get(name, "")
            if value:
                return value
        return ""

    def boolean(self, dest: str, default: bool) -> bool:
        flag = FLAG_NAMES[dest]
        given = getattr(self.args, dest, None)
        if given is not None:
            return parse_go_bool(str(given), f'"--{flag}" flag')
        for name in env_names(flag):
            value = self.environ.get(name, "")
            if value:
                return parse_go_bool(value, name)
        return default


def credentials_from(
    user: str, password: str, ask: Callable[[], str] = ask_password
) -> Credentials | None:
    """etcdctl's ``authCfgFromCmd`` and clientv3's "both set" rule."""
    if not user:
        return None
    if not password:
        name, sep, rest = user.partition(":")
        if sep:
            user, password = name, rest
        else:
            password = ask()
    if not user or not password:
        return None
    return Credentials(user, password)


def security_from_args(
    args: argparse.Namespace,
    environ: Mapping[str, str] | None = None,
    ask: Callable[[], str] = ask_password,
) -> ClientSecurity:
    """The settings the parsed flags and the environment describe; raises :class:`CtlError`
    with etcdctl's message and exit code for a bad combination.  Asks for the password (see
    the module's rules) through ``ask``."""
    look = _Lookup(args, os.environ if environ is None else environ)
    tls = TLSSettings(
        cacert=look.text("tls_cacert"),
        cert=look.text("tls_cert"),
        key=look.text("tls_key"),
        insecure_transport=look.boolean("insecure_transport", True),
        skip_verify=look.boolean("insecure_skip_tls_verify", False),
    )
    if bool(tls.cert) != bool(tls.key):
        raise CtlError(
            f"KeyFile and CertFile must both be present[key: {tls.key}, cert: {tls.cert}]",
            EXIT_BAD_ARGS,
        )
    credentials = credentials_from(look.text("auth_user"), look.text("auth_password"), ask)
    return ClientSecurity(tls=tls, credentials=credentials)
