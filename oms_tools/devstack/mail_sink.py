"""A local SMTP sink: accepts every message and keeps each as one .eml file in a directory.

`oms dev` runs one on `smtp_host:smtp_port` so shopper notifications work with nothing to
install, and land in <data_dir>/mail where a person (or a test) reads them. It runs in a thread
of its own (aiosmtpd's Controller), beside whatever event loop its owner has.
"""

from __future__ import annotations

import email
import email.policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller


class _Keep:
    """aiosmtpd handler: write each message to `<directory>/<n>-<recipient>.eml`, numbering
    on from the highest number already there (a restarted stack keeps its mail). The number
    is counted here: listing the directory for every message made each one cost more than
    the last."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.count = max((_number(p) for p in directory.glob("*.eml")), default=0)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.count += 1
        for rcpt in envelope.rcpt_tos:
            safe = "".join(c if c.isalnum() or c in "@._-" else "_" for c in rcpt)[:100]
            (self.directory / f"{self.count:06d}-{safe}.eml").write_bytes(envelope.content)
        return "250 Message accepted for delivery"


def _number(path: Path) -> int:
    head = path.name.split("-", 1)[0]
    return int(head) if head.isdigit() else 0


class MailSink:
    """An SMTP server on host:port that keeps what it receives in `directory`."""

    def __init__(self, directory: Path, host: str = "127.0.0.1", port: int = 15025) -> None:
        self.directory = directory
        self.host = host
        self.port = port
        self._controller: Controller | None = None

    def start(self) -> MailSink:
        """Listen (returns once the port accepts connections)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        self._controller = Controller(_Keep(self.directory), hostname=self.host, port=self.port)
        self._controller.start()
        return self

    def stop(self) -> None:
        """Stop listening; what was received stays on disk."""
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def messages(self) -> list[EmailMessage]:
        """Every message received so far, oldest first."""
        out = []
        for path in sorted(self.directory.glob("*.eml")):
            parsed = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
            assert isinstance(parsed, EmailMessage)
            out.append(parsed)
        return out
