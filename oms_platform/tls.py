"""Transport security for gRPC: which certificates a process serves and presents.

One small object read from settings, so every server and client call site stays one line:
`grpcutil.start_server(..., tls=TLSConfig.from_settings(settings))` and
`grpcutil.channel(address, tls=TLSConfig.from_settings(settings))`.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

import grpc

from oms_platform.settings import Settings


def _read(path: str, setting: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as error:
        raise ValueError(f"OMS_{setting.upper()}={path!r} cannot be read: {error}") from error


@dataclass(frozen=True)
class TLSConfig:
    """PEM file paths for one process; empty paths mean plaintext on that side."""

    cert: str = ""
    key: str = ""
    ca: str = ""
    client_cert: str = ""
    client_key: str = ""
    require_client_cert: bool = False

    @classmethod
    def from_settings(cls, settings: Settings) -> TLSConfig:
        """The `tls_*` settings."""
        return cls(
            cert=settings.tls_cert,
            key=settings.tls_key,
            ca=settings.tls_ca,
            client_cert=settings.tls_client_cert,
            client_key=settings.tls_client_key,
            require_client_cert=settings.tls_require_client_cert,
        )

    @property
    def serves_tls(self) -> bool:
        """Whether servers bind a TLS port (a server certificate is configured)."""
        return bool(self.cert)

    @property
    def dials_tls(self) -> bool:
        """Whether clients dial with TLS (a CA to verify servers with is configured)."""
        return bool(self.ca)

    def _check_server(self) -> None:
        if not self.key:
            raise ValueError("OMS_TLS_CERT is set but OMS_TLS_KEY (its private key) is not")
        if self.require_client_cert and not self.ca:
            raise ValueError(
                "OMS_TLS_REQUIRE_CLIENT_CERT needs OMS_TLS_CA to verify client certificates with"
            )

    def _check_client(self) -> None:
        if bool(self.client_cert) != bool(self.client_key):
            raise ValueError("OMS_TLS_CLIENT_CERT and OMS_TLS_CLIENT_KEY are set together")

    def server_credentials(self) -> grpc.ServerCredentials | None:
        """Credentials for a gRPC server's port, or None to serve plaintext."""
        if not self.serves_tls:
            return None
        self._check_server()
        return grpc.ssl_server_credentials(
            [(_read(self.key, "tls_key"), _read(self.cert, "tls_cert"))],
            root_certificates=_read(self.ca, "tls_ca") if self.ca else None,
            require_client_auth=self.require_client_cert,
        )

    def channel_credentials(self) -> grpc.ChannelCredentials | None:
        """Credentials for a gRPC client channel, or None to dial plaintext."""
        if not self.dials_tls:
            return None
        self._check_client()
        presented = bool(self.client_cert)
        return grpc.ssl_channel_credentials(
            root_certificates=_read(self.ca, "tls_ca"),
            private_key=_read(self.client_key, "tls_client_key") if presented else None,
            certificate_chain=_read(self.client_cert, "tls_client_cert") if presented else None,
        )

    def server_ssl_context(self, alpn: list[str]) -> ssl.SSLContext:
        """An ssl context serving this certificate (for servers that are not gRPC's own)."""
        self._check_server()
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(self.cert, self.key)
        if self.ca:
            context.load_verify_locations(self.ca)
        context.verify_mode = ssl.CERT_REQUIRED if self.require_client_cert else ssl.CERT_NONE
        context.set_alpn_protocols(alpn)
        return context
