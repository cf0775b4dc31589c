"""The Notifier port (send one message to one shopper) and its SMTP adapter.

The sender depends on the port only, so a deployment swaps the medium (another mail API, SMS)
with an adapter of its own; tests use the SMTP adapter against a real local sink.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field
from email.charset import QP, Charset
from email.header import Header
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.utils import formatdate, parseaddr
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

    async def release(self) -> None:
        """Let go of what is held between busy periods (a connection); called when there is
        nothing to send."""
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
    """Sends over one SMTP connection held while there is mail to send, opened on the first
    message and closed by `release` (the sender calls it when a pass finds nothing due), so a
    burst of notifications pays for one handshake, and a quiet process holds no connection
    for the server to time out. A held connection the server dropped is replaced once per
    message; any other failure closes it and raises SendFailed."""

    def __init__(self, config: SmtpConfig) -> None:
        self._config = config
        self._smtp: aiosmtplib.SMTP | None = None
        self._lock = asyncio.Lock()

    async def send(self, message: Message) -> None:
        """Hand `message` to the SMTP server."""
        c = self._config
        data = as_bytes(c.sender, message)
        sender = parseaddr(c.sender)[1] or c.sender  # the envelope takes the bare address
        async with self._lock:
            held = self._smtp is not None
            try:
                try:
                    await (await self._connected()).sendmail(sender, [message.to], data)
                except (aiosmtplib.SMTPServerDisconnected, ConnectionError):
                    if not held:
                        raise
                    await self._close()  # dropped while idle: once more on a new one
                    await (await self._connected()).sendmail(sender, [message.to], data)
            except (aiosmtplib.SMTPException, OSError, TimeoutError) as error:
                await self._close()
                raise SendFailed(f"{type(error).__name__}: {error}"[:500]) from error

    async def release(self) -> None:
        """Close the held connection (QUIT), if there is one."""
        async with self._lock:
            await self._close()

    async def _connected(self) -> aiosmtplib.SMTP:
        if self._smtp is None:
            c = self._config
            smtp = aiosmtplib.SMTP(
                hostname=c.host,
                port=c.port,
                use_tls=c.tls == "tls",
                start_tls=c.tls == "starttls",
                username=c.username or None,
                password=c.password or None,
                timeout=c.timeout_seconds,
            )
            await smtp.connect()
            self._smtp = smtp
        return self._smtp

    async def _close(self) -> None:
        smtp, self._smtp = self._smtp, None
        if smtp is None:
            return
        try:
            await smtp.quit()
        except (aiosmtplib.SMTPException, OSError, TimeoutError):
            smtp.close()


# Bodies in quoted-printable: readable as they are kept (a .eml in the dev sink), any text.
_UTF8 = Charset("utf-8")
_UTF8.body_encoding = QP


def as_bytes(sender: str, message: Message) -> bytes:
    """The message as the bytes handed to the server: text, or text and HTML alternatives,
    UTF-8 in quoted-printable, a subject that is not ASCII encoded as RFC 2047. Built with the
    email package's compat32 classes, a few times cheaper than `EmailMessage` for the same
    result."""
    text = MIMEText(message.text, "plain", _UTF8)  # type: ignore[arg-type]
    if message.html:
        mail: MIMEText | MIMEMultipart = MIMEMultipart("alternative")
        mail.attach(text)
        mail.attach(MIMEText(message.html, "html", _UTF8))  # type: ignore[arg-type]
    else:
        mail = text
    mail["From"] = sender
    mail["To"] = message.to
    subject = message.subject
    mail["Subject"] = subject if subject.isascii() else Header(subject, "utf-8").encode()
    mail["Date"] = formatdate(localtime=False)
    for name, value in message.headers.items():
        mail[name] = value
    return mail.as_bytes()
