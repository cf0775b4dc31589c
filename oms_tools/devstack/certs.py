"""A local certificate authority for `oms dev --tls`, made with the `cryptography` package.

One CA signs a server certificate (for localhost and 127.0.0.1: every gRPC service, Postgres
and the Temporal proxy) and a client certificate (what oms processes and the CLI present).
They live in `<data_dir>/tls/` and are reused on later starts while they remain valid, so a
CA someone chose to trust keeps working; anything missing, expiring or not matching is
replaced by a fresh set.
"""

from __future__ import annotations

import ipaddress
import json
import os
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from oms_platform.settings import Settings
from oms_tools.devstack.postgres import PostgresTLS

SERVER_NAMES = ("localhost", "127.0.0.1")
CLIENT_NAME = "oms"
VALID_FOR = timedelta(days=365)
# Certificates closer than this to expiry are replaced at start, so a stack started today does
# not stop working tomorrow.
RENEW_BEFORE = timedelta(days=7)
# Written while a stack runs with TLS, so the CLI against the same data_dir finds the certs:
# the settings a caller needs, as JSON.
IN_USE = "in-use.json"
CLIENT_SETTINGS = (
    "tls_ca",
    "tls_client_cert",
    "tls_client_key",
    "temporal_tls",
    "temporal_tls_ca",
    "temporal_tls_cert",
    "temporal_tls_key",
)


@dataclass(frozen=True)
class DevCertificates:
    """The PEM files of the local CA, the server and the client, in one directory."""

    directory: Path

    @property
    def ca(self) -> Path:
        return self.directory / "ca.pem"

    @property
    def ca_key(self) -> Path:
        return self.directory / "ca-key.pem"

    @property
    def server(self) -> Path:
        return self.directory / "server.pem"

    @property
    def server_key(self) -> Path:
        return self.directory / "server-key.pem"

    @property
    def client(self) -> Path:
        return self.directory / "client.pem"

    @property
    def client_key(self) -> Path:
        return self.directory / "client-key.pem"

    @property
    def files(self) -> tuple[Path, ...]:
        return (self.ca, self.ca_key, self.server, self.server_key, self.client, self.client_key)

    def postgres_tls(self) -> PostgresTLS:
        """The embedded Postgres's TLS: the server certificate, and the client's for asyncpg."""
        return PostgresTLS(self.server, self.server_key, self.ca, self.client, self.client_key)

    def grpc_settings(self, settings: Settings) -> Settings:
        """`settings` for the processes of an encrypted stack: every gRPC server serves the
        server certificate and demands a client certificate; every client presents one."""
        return replace(
            settings,
            tls_cert=str(self.server),
            tls_key=str(self.server_key),
            tls_ca=str(self.ca),
            tls_client_cert=str(self.client),
            tls_client_key=str(self.client_key),
            tls_require_client_cert=True,
        )

    def temporal_settings(self, settings: Settings) -> Settings:
        """`settings` for reaching the stack's Temporal proxy: verify it with the CA, present
        the client certificate."""
        return replace(
            settings,
            temporal_tls=True,
            temporal_tls_ca=str(self.ca),
            temporal_tls_cert=str(self.client),
            temporal_tls_key=str(self.client_key),
        )


def certificates_dir(data_dir: str | Path) -> Path:
    """Where `oms dev --tls` keeps its certificates for this data directory."""
    return Path(data_dir) / "tls"


def ensure(
    directory: Path,
    *,
    now: datetime | None = None,
    server_names: tuple[str, ...] = SERVER_NAMES,
) -> tuple[DevCertificates, bool]:
    """The certificates in `directory`, made afresh unless the existing ones are still good;
    returns them and whether they were (re)generated."""
    now = now or datetime.now(UTC)
    certs = DevCertificates(Path(directory))
    if _still_good(certs, now, server_names):
        return certs, False
    _generate(certs, now, server_names)
    return certs, True


def mark_in_use(data_dir: str | Path, settings: Settings | None) -> None:
    """Record what a caller of the stack on `data_dir` needs to reach it over TLS (taken from
    the stack's `settings`), or with None that the stack runs without TLS."""
    marker = certificates_dir(data_dir) / IN_USE
    if settings is None:
        marker.unlink(missing_ok=True)
        return
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps({name: getattr(settings, name) for name in CLIENT_SETTINGS}))


def dev_client_settings(settings: Settings) -> Settings:
    """For the CLI: while the dev stack on `settings.data_dir` runs with TLS, and unless TLS is
    configured explicitly, `settings` with the stack's CA and client certificate."""
    marker = certificates_dir(settings.data_dir) / IN_USE
    if any(getattr(settings, name) for name in CLIENT_SETTINGS) or not marker.exists():
        return settings
    try:
        found = json.loads(marker.read_text())
    except (OSError, ValueError):
        return settings
    return replace(settings, **{k: v for k, v in found.items() if k in CLIENT_SETTINGS})


# ---- generation --------------------------------------------------------------------------


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "oms dev stack"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _san(names: tuple[str, ...]) -> x509.SubjectAlternativeName:
    entries: list[x509.GeneralName] = []
    for name in names:
        try:
            entries.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            entries.append(x509.DNSName(name))
    return x509.SubjectAlternativeName(entries)


def _leaf_usage() -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=False,
        crl_sign=False,
        encipher_only=False,
        decipher_only=False,
    )


def _generate(certs: DevCertificates, now: datetime, server_names: tuple[str, ...]) -> None:
    certs.directory.mkdir(parents=True, exist_ok=True)
    # Backdated a little: clocks of the processes verifying may lag this one.
    start, end = now - timedelta(minutes=5), now + VALID_FOR
    ca_key = _key()
    ca_name = _name("oms dev stack local CA")
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ca_ski, critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    def leaf(
        common_name: str, usage: x509.ObjectIdentifier, names: tuple[str, ...]
    ) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        key = _key()
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(common_name))
            .issuer_name(ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_leaf_usage(), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(_san(names), critical=False)
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski),
                critical=False,
            )
            .sign(ca_key, hashes.SHA256())
        )
        return cert, key

    server, server_key = leaf(server_names[0], ExtendedKeyUsageOID.SERVER_AUTH, server_names)
    client, client_key = leaf(CLIENT_NAME, ExtendedKeyUsageOID.CLIENT_AUTH, (CLIENT_NAME,))
    for path, cert in ((certs.ca, ca), (certs.server, server), (certs.client, client)):
        _write(path, cert.public_bytes(serialization.Encoding.PEM), private=False)
    for path, key in (
        (certs.ca_key, ca_key),
        (certs.server_key, server_key),
        (certs.client_key, client_key),
    ):
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        _write(path, pem, private=True)


def _write(path: Path, data: bytes, *, private: bool) -> None:
    """Write atomically (a reader never sees half a file); keys readable by the owner only."""
    temporary = path.with_name(path.name + ".tmp")
    temporary.unlink(missing_ok=True)
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600 if private else 0o644)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    temporary.replace(path)


# ---- reuse -------------------------------------------------------------------------------


def _still_good(certs: DevCertificates, now: datetime, server_names: tuple[str, ...]) -> bool:
    if not all(path.exists() for path in certs.files):
        return False
    try:
        ca = x509.load_pem_x509_certificate(certs.ca.read_bytes())
        server = x509.load_pem_x509_certificate(certs.server.read_bytes())
        client = x509.load_pem_x509_certificate(certs.client.read_bytes())
        server_key = serialization.load_pem_private_key(certs.server_key.read_bytes(), None)
        client_key = serialization.load_pem_private_key(certs.client_key.read_bytes(), None)
        for cert in (server, client):
            cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return False
    for cert in (ca, server, client):
        if not cert.not_valid_before_utc <= now < cert.not_valid_after_utc - RENEW_BEFORE:
            return False
    if server.public_key() != server_key.public_key():
        return False
    if client.public_key() != client_key.public_key():
        return False
    san = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return all(entry in san for entry in _san(server_names))
