"""The Temporal client's transport from settings: plaintext by default, TLS when asked (system
roots, or a CA and a client certificate for mTLS), and an API key for Temporal Cloud."""

from __future__ import annotations

from pathlib import Path

import pytest

from oms_platform import temporal
from oms_platform.settings import Settings


def test_without_temporal_tls_settings_the_client_dials_plaintext() -> None:
    assert temporal.tls_config(Settings()) is None


def test_temporal_tls_alone_verifies_the_frontend_with_the_system_roots() -> None:
    config = temporal.tls_config(Settings(temporal_tls=True))

    assert config is not None
    assert config.server_root_ca_cert is None and config.client_cert is None


def test_a_ca_and_a_client_certificate_are_read_from_their_files(tmp_path: Path) -> None:
    for name in ("ca", "cert", "key"):
        (tmp_path / name).write_bytes(f"{name} pem".encode())

    config = temporal.tls_config(
        Settings.from_env(
            env={
                "OMS_TEMPORAL_TLS_CA": str(tmp_path / "ca"),
                "OMS_TEMPORAL_TLS_CERT": str(tmp_path / "cert"),
                "OMS_TEMPORAL_TLS_KEY": str(tmp_path / "key"),
                "OMS_TEMPORAL_TLS_SERVER_NAME": "ns.acct.tmprl.cloud",
            }
        )
    )

    assert config is not None
    assert config.server_root_ca_cert == b"ca pem"
    assert (config.client_cert, config.client_private_key) == (b"cert pem", b"key pem")
    assert config.domain == "ns.acct.tmprl.cloud"


def test_a_client_certificate_without_its_key_is_refused(tmp_path: Path) -> None:
    (tmp_path / "cert").write_bytes(b"cert pem")

    with pytest.raises(ValueError, match="OMS_TEMPORAL_TLS_KEY"):
        temporal.tls_config(Settings(temporal_tls_cert=str(tmp_path / "cert")))
