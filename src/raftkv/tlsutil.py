"""TLS material of a member, as etcd's flags describe it: certificate files, trust, policy.

Owns: ``TLSInfo`` (one side's files and checks: etcd's ``transport.TLSInfo``), ``TLSPolicy``
(``--tls-min-version``, ``--tls-max-version``, ``--cipher-suites``, shared by clients and
peers), the self-signed certificates of ``--auto-tls`` / ``--peer-auto-tls``, the name checks of
``--peer-cert-allowed-cn`` / ``--peer-cert-allowed-hostname``, and ``ReloadingContext``: an
``ssl.SSLContext`` rebuilt when its files change on disk, as etcd re-reads certificates.

Contracts:
- every function raises ``TLSConfigError`` (one line naming the flag or the file) for bad
  material, never an ``ssl``/``OSError`` traceback;
- a server context from a ``TLSInfo`` with ``client_cert_auth`` requires a client certificate
  signed by ``trusted_ca_file`` (and checks ``crl_file``); a client context verifies the server
  against ``trusted_ca_file`` and its host name, except for generated (``auto``) material,
  whose self-signed certificates nobody can verify (etcd's ``InsecureSkipVerify``);
- cipher suites take Go's names (what etcd's flag takes) and apply to TLS 1.2; TLS 1.3's
  suites are fixed by the protocol (as in Go), so naming one of them changes nothing.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import ssl
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from raftkv.fileutil import PRIVATE_FILE_MODE, mkdir_all

__all__ = [
    "ReloadingContext",
    "TLSConfigError",
    "TLSInfo",
    "TLSPolicy",
    "cert_name_refusal",
    "file_stamp",
    "openssl_cipher_names",
    "read_material",
    "self_signed_cert",
]


class TLSConfigError(ValueError):
    """TLS material or settings that cannot be used; the message names the flag or file."""


# Go's names of the TLS 1.2 suites (crypto/tls) -> OpenSSL's.  etcd accepts Go's insecure
# suites too (RC4, 3DES, CBC-SHA256); the TLS libraries here do not offer them.
_GO_TO_OPENSSL = {
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256": "ECDHE-ECDSA-AES128-GCM-SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384": "ECDHE-ECDSA-AES256-GCM-SHA384",
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256": "ECDHE-RSA-AES128-GCM-SHA256",
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384": "ECDHE-RSA-AES256-GCM-SHA384",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-ECDSA-CHACHA20-POLY1305",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305": "ECDHE-ECDSA-CHACHA20-POLY1305",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-RSA-CHACHA20-POLY1305",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305": "ECDHE-RSA-CHACHA20-POLY1305",
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA": "ECDHE-ECDSA-AES128-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA": "ECDHE-ECDSA-AES256-SHA",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA": "ECDHE-RSA-AES128-SHA",
    "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA": "ECDHE-RSA-AES256-SHA",
    "TLS_RSA_WITH_AES_128_GCM_SHA256": "AES128-GCM-SHA256",
    "TLS_RSA_WITH_AES_256_GCM_SHA384": "AES256-GCM-SHA384",
    "TLS_RSA_WITH_AES_128_CBC_SHA": "AES128-SHA",
    "TLS_RSA_WITH_AES_256_CBC_SHA": "AES256-SHA",
}
_TLS13_SUITES = frozenset(
    {"TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256"}
)
_GO_INSECURE = frozenset(
    {
        "TLS_RSA_WITH_RC4_128_SHA",
        "TLS_RSA_WITH_3DES_EDE_CBC_SHA",
        "TLS_RSA_WITH_AES_128_CBC_SHA256",
        "TLS_ECDHE_ECDSA_WITH_RC4_128_SHA",
        "TLS_ECDHE_RSA_WITH_RC4_128_SHA",
        "TLS_ECDHE_RSA_WITH_3DES_EDE_CBC_SHA",
        "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256",
        "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256",
    }
)
_VERSIONS = {"": None, "TLS1.2": ssl.TLSVersion.TLSv1_2, "TLS1.3": ssl.TLSVersion.TLSv1_3}


def openssl_cipher_names(go_names: Sequence[str]) -> list[str]:
    """OpenSSL's names of the TLS 1.2 suites among ``go_names`` (etcd's ``--cipher-suites``),
    in the given order; TLS 1.3 names are accepted and dropped (always enabled)."""
    out: list[str] = []
    for name in go_names:
        if name in _TLS13_SUITES:
            continue
        if name in _GO_INSECURE:
            raise TLSConfigError(
                f"--cipher-suites: {name} is an insecure cipher suite raftkv does not offer"
            )
        openssl = _GO_TO_OPENSSL.get(name)
        if openssl is None:
            raise TLSConfigError(f'unexpected TLS cipher suite "{name}"')
        if openssl not in out:
            out.append(openssl)
    return out


@dataclass(frozen=True)
class TLSPolicy:
    """``--tls-min-version``, ``--tls-max-version`` and ``--cipher-suites`` (Go names)."""

    min_version: str = "TLS1.2"
    max_version: str = ""
    cipher_suites: tuple[str, ...] = ()

    def validate(self) -> None:
        """etcd's checks and messages (``embed.Config.Validate``)."""
        for version in (self.min_version, self.max_version):
            if version not in _VERSIONS:
                raise TLSConfigError(
                    f'unexpected TLS version "{version}" (must be one of: TLS1.2, TLS1.3)'
                )
        if self.max_version == "TLS1.2" and self.min_version == "TLS1.3":
            raise TLSConfigError(
                f"min version ({self.min_version}) is greater than max version ({self.max_version})"
            )
        if self.min_version == "TLS1.3" and self.cipher_suites:
            raise TLSConfigError("cipher suites cannot be configured when only TLS1.3 is enabled")
        openssl_cipher_names(self.cipher_suites)

    @property
    def restricts_versions(self) -> bool:
        """True when TLS 1.2 or TLS 1.3 is switched off."""
        return self.min_version == "TLS1.3" or self.max_version == "TLS1.2"

    def apply(self, ctx: ssl.SSLContext) -> None:
        ctx.minimum_version = _VERSIONS[self.min_version] or ssl.TLSVersion.TLSv1_2
        maximum = _VERSIONS[self.max_version]
        if maximum is not None:
            ctx.maximum_version = maximum
        names = openssl_cipher_names(self.cipher_suites)
        if names:
            try:
                ctx.set_ciphers(":".join(names))
            except ssl.SSLError as exc:
                raise TLSConfigError(f"--cipher-suites: {exc.reason or exc}") from None


@dataclass(frozen=True)
class TLSInfo:
    """One side's TLS material (client side: ``--cert-file``…; peer side: ``--peer-*``).

    ``client_cert_file``/``client_key_file`` are the certificate this member presents when it
    dials (etcd's ``--peer-client-cert-file``); empty means ``cert_file``/``key_file``.
    ``auto`` marks generated material (``--auto-tls``): nothing can verify it.
    """

    cert_file: str = ""
    key_file: str = ""
    trusted_ca_file: str = ""
    client_cert_auth: bool = False
    crl_file: str = ""
    client_cert_file: str = ""
    client_key_file: str = ""
    allowed_cns: tuple[str, ...] = ()
    allowed_hostnames: tuple[str, ...] = ()
    auto: bool = False

    def to_json(self) -> str:
        """This material as JSON (how a member hands it to its gRPC front processes);
        ``from_json`` reads it back equal."""
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> TLSInfo:
        """The ``TLSInfo`` that ``to_json`` wrote (its lists back to tuples)."""
        fields: dict[str, Any] = {
            k: tuple(v) if isinstance(v, list) else v for k, v in json.loads(text).items()
        }
        return cls(**fields)

    def empty(self) -> bool:
        """No certificate configured (etcd's ``TLSInfo.Empty``)."""
        return not self.cert_file and not self.key_file

    def files(self) -> tuple[str, ...]:
        names = (
            self.cert_file,
            self.key_file,
            self.trusted_ca_file,
            self.crl_file,
            self.client_cert_file,
            self.client_key_file,
        )
        return tuple(f for f in names if f)

    def check_files(self, flag_prefix: str) -> None:
        """Every configured file is readable and the pair is complete; raise otherwise."""
        if bool(self.cert_file) != bool(self.key_file):
            raise TLSConfigError(
                f"TLS needs both --{flag_prefix}cert-file and --{flag_prefix}key-file"
            )
        if self.client_cert_auth and not self.trusted_ca_file and not self.auto:
            raise TLSConfigError(
                f"--{flag_prefix}client-cert-auth needs --{flag_prefix}trusted-ca-file "
                "(the CA that signs the certificates to accept)"
            )
        for path in self.files():
            try:
                with open(path, "rb") as f:
                    f.read(1)
            except OSError as exc:
                raise TLSConfigError(f"cannot read {path}: {exc.strerror}") from None

    def server_context(self, policy: TLSPolicy) -> ssl.SSLContext:
        """A context that serves this side's certificate (and checks clients' when asked)."""
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        policy.apply(ctx)
        _load_chain(ctx, self.cert_file, self.key_file)
        if self.client_cert_auth and not self.auto:
            # Generated material has no CA that could vouch for a client: etcd checks none.
            ctx.verify_mode = ssl.CERT_REQUIRED
            _load_trust(ctx, self.trusted_ca_file, self.crl_file)
        return ctx

    def client_context(self, policy: TLSPolicy) -> ssl.SSLContext:
        """A context for dialing a server of this side, presenting this side's certificate."""
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        policy.apply(ctx)
        cert = self.client_cert_file or self.cert_file
        key = self.client_key_file or self.key_file
        if cert:
            _load_chain(ctx, cert, key)
        if self.auto or not self.trusted_ca_file:
            if self.auto:
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
            else:
                ctx.load_default_certs(ssl.Purpose.SERVER_AUTH)
        else:
            _load_trust(ctx, self.trusted_ca_file, "")
        return ctx


def _load_chain(ctx: ssl.SSLContext, cert: str, key: str) -> None:
    try:
        ctx.load_cert_chain(cert, key)
    except ssl.SSLError as exc:  # before OSError: SSLError is one
        raise TLSConfigError(
            f"certificate {cert} and key {key} do not load: {exc.reason or exc}"
        ) from None
    except OSError as exc:
        raise TLSConfigError(f"cannot read {exc.filename or cert}: {exc.strerror}") from None


def _load_trust(ctx: ssl.SSLContext, ca_file: str, crl_file: str) -> None:
    try:
        ctx.load_verify_locations(cafile=ca_file)
    except (OSError, ssl.SSLError) as exc:
        raise TLSConfigError(f"cannot load trusted CA file {ca_file}: {_why(exc)}") from None
    if crl_file:
        try:
            ctx.load_verify_locations(cafile=crl_file)
        except (OSError, ssl.SSLError) as exc:
            raise TLSConfigError(f"cannot load CRL file {crl_file}: {_why(exc)}") from None
        ctx.verify_flags |= ssl.VERIFY_CRL_CHECK_LEAF


def _why(exc: OSError | ssl.SSLError) -> str:
    if isinstance(exc, ssl.SSLError):
        return str(exc.reason or exc)
    return str(exc.strerror or exc)


Stamp = tuple[tuple[int, int, int], ...]


def file_stamp(paths: Sequence[str]) -> Stamp:
    """(inode, size, mtime) of each file, zeros for one that is missing: a changed stamp
    means the material must be read again."""
    out = []
    for path in paths:
        try:
            st = os.stat(path)
            out.append((st.st_ino, st.st_size, st.st_mtime_ns))
        except OSError:
            out.append((0, 0, 0))
    return tuple(out)


def read_material(path: str) -> bytes:
    """The bytes of a certificate, key, CA or CRL file; ``TLSConfigError`` naming it."""
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as exc:
        raise TLSConfigError(f"cannot read {path}: {exc.strerror}") from None


class ReloadingContext:
    """An ``ssl.SSLContext`` built by ``build`` and built again when any of ``files`` changes
    on disk (size, mtime or inode), as etcd re-reads its certificates.

    ``current()`` is cheap (a few ``stat`` calls); when the new files do not load, the last
    good context stays in use and ``last_error`` says why (a certificate being replaced file
    by file is briefly inconsistent).
    """

    def __init__(self, build: Callable[[], ssl.SSLContext], files: Sequence[str]) -> None:
        self._build = build
        self._files = tuple(files)
        self._stamp = file_stamp(self._files)
        self._ctx = build()
        self.last_error = ""
        self.reloads = 0

    def current(self) -> ssl.SSLContext:
        stamp = file_stamp(self._files)
        if stamp != self._stamp:
            self._stamp = stamp
            try:
                self._ctx = self._build()
                self.reloads += 1
                self.last_error = ""
            except TLSConfigError as exc:
                self.last_error = str(exc)
        return self._ctx

    def serving(self) -> ssl.SSLContext:
        """A context for ``asyncio.start_server``: every handshake switches to ``current()``
        (through the SNI callback, called for every ClientHello), so reloads apply to new
        connections without restarting the listener."""
        ctx = self.current()

        def switch(sslobj: Any, _server_name: str | None, _ctx: ssl.SSLContext) -> None:
            sslobj.context = self.current()

        ctx.sni_callback = switch
        return ctx


def cert_name_refusal(
    cert: dict[str, Any] | None, allowed_cns: Sequence[str], allowed_hostnames: Sequence[str]
) -> str | None:
    """Why a verified peer certificate (``SSLObject.getpeercert()``) is not allowed by
    ``--peer-cert-allowed-cn`` / ``--peer-cert-allowed-hostname``; None when it is."""
    if not allowed_cns and not allowed_hostnames:
        return None
    if not cert:
        return "no client certificate"
    cn = ""
    for rdn in cert.get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                cn = str(value)
    if allowed_cns and cn in allowed_cns:
        return None
    sans = {str(v).lower() for k, v in cert.get("subjectAltName", ()) if k in ("DNS", "IP Address")}
    if allowed_hostnames and any(h.lower() in sans for h in allowed_hostnames):
        return None
    wanted = []
    if allowed_cns:
        wanted.append(f"CN in {list(allowed_cns)}")
    if allowed_hostnames:
        wanted.append(f"a SAN in {list(allowed_hostnames)}")
    return f"certificate CN={cn!r} SAN={sorted(sans)} is not allowed (want {' or '.join(wanted)})"


def self_signed_cert(directory: str, hosts: Sequence[str], validity_years: int) -> TLSInfo:
    """The certificate and key of ``--auto-tls`` in ``directory`` (cert.pem, key.pem),
    generated once for ``hosts`` and reused afterwards, as etcd's ``transport.SelfCert``."""
    cert_path = os.path.join(directory, "cert.pem")
    key_path = os.path.join(directory, "key.pem")
    if os.path.exists(cert_path) and os.path.exists(key_path):
        return TLSInfo(cert_file=cert_path, key_file=key_path, auto=True)
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    names: list[x509.GeneralName] = []
    for host in sorted(set(hosts)):
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "raftkv")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=365 * max(1, validity_years)))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    mkdir_all(directory)
    _write_private(
        key_path,
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )
    _write_private(cert_path, cert.public_bytes(serialization.Encoding.PEM))
    return TLSInfo(cert_file=cert_path, key_file=key_path, auto=True)


def _write_private(path: str, data: bytes) -> None:
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PRIVATE_FILE_MODE)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
