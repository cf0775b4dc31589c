"""`oms dev --tls` certificates: a chain that verifies for the names the stack is dialled by,
reused while valid, replaced when they would not serve; the CLI finds them through the data
directory."""

from __future__ import annotations

import ipaddress
import json
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.verification import (
    PolicyBuilder,
    ServerVerifier,
    Store,
    VerificationError,
)

from oms_platform.settings import Settings
from oms_tools.devstack import certs


def _load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def _server_verifier(ca: x509.Certificate, name: x509.GeneralName, at: datetime) -> ServerVerifier:
    return PolicyBuilder().store(Store([ca])).time(at).build_server_verifier(name)


@pytest.fixture
def made(tmp_path: Path) -> certs.DevCertificates:
    generated, fresh = certs.ensure(tmp_path / "tls")
    assert fresh
    return generated


@pytest.mark.parametrize(
    "name", [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
)
def test_the_server_certificate_verifies_against_the_ca_for_localhost_and_127_0_0_1(
    made: certs.DevCertificates, name: x509.GeneralName
) -> None:
    ca, server = _load(made.ca), _load(made.server)

    chain = _server_verifier(ca, name, datetime.now(UTC)).verify(server, [])

    assert chain[-1] == ca


def test_the_server_certificate_does_not_verify_for_another_name(
    made: certs.DevCertificates,
) -> None:
    verifier = _server_verifier(_load(made.ca), x509.DNSName("example.com"), datetime.now(UTC))

    with pytest.raises(VerificationError):
        verifier.verify(_load(made.server), [])


def test_the_client_certificate_verifies_as_a_client_of_the_ca(
    made: certs.DevCertificates,
) -> None:
    verifier = PolicyBuilder().store(Store([_load(made.ca)])).build_client_verifier()

    verified = verifier.verify(_load(made.client), [])

    assert verified.subjects == [x509.DNSName("oms")]


def test_a_certificate_from_another_ca_does_not_verify(
    made: certs.DevCertificates, tmp_path: Path
) -> None:
    other, _ = certs.ensure(tmp_path / "other")
    verifier = _server_verifier(_load(made.ca), x509.DNSName("localhost"), datetime.now(UTC))

    with pytest.raises(VerificationError):
        verifier.verify(_load(other.server), [])


def test_private_keys_are_readable_by_their_owner_only(made: certs.DevCertificates) -> None:
    for key in (made.ca_key, made.server_key, made.client_key):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600


def test_valid_certificates_are_reused_on_a_later_start(made: certs.DevCertificates) -> None:
    before = {path: path.read_bytes() for path in made.files}

    again, fresh = certs.ensure(made.directory, now=datetime.now(UTC) + timedelta(days=300))

    assert not fresh
    assert {path: path.read_bytes() for path in again.files} == before


def test_certificates_close_to_expiry_are_replaced(made: certs.DevCertificates) -> None:
    old_ca = made.ca.read_bytes()
    later = datetime.now(UTC) + certs.VALID_FOR - timedelta(days=1)

    again, fresh = certs.ensure(made.directory, now=later)

    assert fresh and again.ca.read_bytes() != old_ca
    assert _load(again.server).not_valid_after_utc > later + timedelta(days=300)


def test_a_missing_key_or_a_key_that_does_not_match_means_a_fresh_set(
    made: certs.DevCertificates,
) -> None:
    made.client_key.unlink()
    assert certs.ensure(made.directory)[1]

    made.server_key.write_bytes(made.client_key.read_bytes())
    assert certs.ensure(made.directory)[1]
    assert not certs.ensure(made.directory)[1]


def test_a_server_name_not_covered_means_a_fresh_set(made: certs.DevCertificates) -> None:
    again, fresh = certs.ensure(made.directory, server_names=("localhost", "127.0.0.1", "oms"))

    assert fresh
    san = _load(again.server).extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert x509.DNSName("oms") in san.value


def test_the_cli_finds_the_certificates_of_a_tls_stack_on_the_same_data_dir(
    tmp_path: Path,
) -> None:
    made, _ = certs.ensure(certs.certificates_dir(tmp_path))
    stack = made.temporal_settings(made.grpc_settings(Settings(data_dir=str(tmp_path))))
    cli = Settings(data_dir=str(tmp_path))
    assert certs.dev_client_settings(cli) == cli  # no stack running with TLS

    certs.mark_in_use(tmp_path, stack)
    found = certs.dev_client_settings(cli)

    assert found.tls_ca == str(made.ca)
    assert (found.tls_client_cert, found.tls_client_key) == (str(made.client), str(made.client_key))
    assert found.temporal_tls and found.temporal_tls_ca == str(made.ca)
    assert found.tls_cert == ""  # the CLI serves nothing
    assert "tls_cert" not in json.loads((tmp_path / "tls" / certs.IN_USE).read_text())

    certs.mark_in_use(tmp_path, None)
    assert certs.dev_client_settings(cli) == cli


def test_explicit_tls_settings_win_over_the_dev_stack_certificates(tmp_path: Path) -> None:
    made, _ = certs.ensure(certs.certificates_dir(tmp_path))
    certs.mark_in_use(tmp_path, made.grpc_settings(Settings(data_dir=str(tmp_path))))
    explicit = Settings(data_dir=str(tmp_path), tls_ca="/etc/oms/ca.pem")

    assert certs.dev_client_settings(explicit) == explicit
