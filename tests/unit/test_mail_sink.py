"""The dev stack's SMTP sink numbers its messages on from what the directory already holds."""

from __future__ import annotations

import smtplib
from email.message import EmailMessage
from pathlib import Path

from oms_tools.devstack.mail_sink import MailSink
from oms_tools.devstack.temporal_server import free_port


def _send(port: int, to: str, subject: str) -> None:
    message = EmailMessage()
    message["From"] = "orders@shop.example"
    message["To"] = to
    message["Subject"] = subject
    message.set_content("hello")
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as smtp:
        smtp.send_message(message)


def test_numbering_continues_after_the_mail_already_kept(tmp_path: Path) -> None:
    (tmp_path / "000007-old@shop.example.eml").write_bytes(b"Subject: old\r\n\r\nold\r\n")
    sink = MailSink(tmp_path, port=free_port()).start()
    try:
        _send(sink.port, "ada@shop.example", "first")
        _send(sink.port, "bob@shop.example", "second")
    finally:
        sink.stop()
    names = sorted(p.name for p in tmp_path.glob("*.eml"))
    assert names == [
        "000007-old@shop.example.eml",
        "000008-ada@shop.example.eml",
        "000009-bob@shop.example.eml",
    ]
    assert [m["Subject"] for m in MailSink(tmp_path).messages()] == ["old", "first", "second"]
