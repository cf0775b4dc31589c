"""The Notifier port (send one message to one shopper) and its SMTP adapter.

The sender depends on the port only, so a deployment swaps the medium (another mail API, SMS)
with an adapter of its own; tests use the SMTP adapter against a real local sink.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Protocol

import aiosmtplib

from oms_platform.settings import Settings

TLS_MODES = ("none", "starttls", "tls")


@dataclass(frozen=True)
class Message:
    """One message: recipient, subject, plain text body, optional HTML body, extra headers."""

    to: str
    subject: str
    text: str
    html: str = ""
    headers: Mapping[str, str] = field(default_factory=dict)


class SendFailed(Exception):
    """The message was not accepted; worth trying again later."""


class Notifier(Protocol):
    """Sends one message; raises SendFailed when it was not accepted."""

    async def send(self, message: Message) -> None:
        """Hand `message` over for delivery."""
        ...


@dataclass(frozen=True)
class SmtpConfig:
    """Where and how mail is handed over."""

    host: str
    port: int
    sender: str
    tls: str = "none"
    username: str = ""
    password: str = ""
    timeout_seconds: float = 10.0

    @staticmethod
    def from_settings(settings: Settings) -> SmtpConfig:
        """The deployment's SMTP server (settings `smtp_*`, `notify_from`)."""
        if settings.smtp_tls not in TLS_MODES:
            raise ValueError(f"OMS_SMTP_TLS must be one of {', '.join(TLS_MODES)}")
        return SmtpConfig(
            host=settings.smtp_host,
            port=settings.smtp_port,
            sender=settings.notify_from,
            tls=settings.smtp_tls,
            username=settings.smtp_username,
            password=settings.smtp_password,
            timeout_seconds=settings.smtp_timeout_seconds,
        )


class SmtpNotifier:
    """Sends each message over its own SMTP connection (notifications are few and far
    between per process; a held connection would only time out)."""

    def __init__(self, config: SmtpConfig) -> None:
        self._config = config

    async def send(self, message: Message) -> None:
        """Hand `message` to the SMTP server."""
        c = self._config
        email = EmailMessage()
        email["From"] = c.sender
        email["To"] = message.to
        email["Subject"] = message.subject
        for name, value in message.headers.items():
            email[name] = value
        email.set_content(message.text)
        if message.html:
            email.add_alternative(message.html, subtype="html")
        try:
            await aiosmtplib.send(
                email,
                hostname=c.host,
                port=c.port,
                use_tls=c.tls == "tls",
                start_tls=c.tls == "starttls",
                username=c.username or None,
                password=c.password or None,
                timeout=c.timeout_seconds,
            )
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as error:
            raise SendFailed(f"{type(error).__name__}: {error}"[:500]) from error
