"""The SMTP notifier against a real local SMTP server (aiosmtpd): one connection for a busy
period, a new one after release, a server restarted under a held connection, a server away."""

from __future__ import annotations

import email
import email.policy
from email.message import EmailMessage
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from oms_tools.devstack.temporal_server import free_port
from services.capture.events.notifications_mail import (
    Message,
    SendFailed,
    SmtpConfig,
    SmtpNotifier,
)


class Counting:
    """Keeps every message with the client port it came from (one per connection)."""

    def __init__(self) -> None:
        self.received: list[tuple[int, EmailMessage, str]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        parsed = email.message_from_bytes(envelope.content, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        self.received.append((session.peer[1], parsed, envelope.mail_from))
        return "250 OK"

    @property
    def connections(self) -> int:
        return len({port for port, _, _ in self.received})


def server(handler: Counting, port: int) -> Controller:
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    return controller


def message(n: int) -> Message:
    return Message(
        to=f"shopper{n}@shop.example",
        subject=f"Bestellung {n} ist unterwegs, Größe M",
        text=f"Hallo, Sendung {n}: 1Z999=AA",
        html=f"<p>Sendung {n}</p>",
        headers={"Message-ID": f"<n{n}@oms.notifications>"},
    )


@pytest.fixture
def port() -> int:
    return free_port()


def notifier(port: int) -> SmtpNotifier:
    return SmtpNotifier(SmtpConfig("127.0.0.1", port, "Shop <orders@shop.example>"))


async def test_a_busy_period_is_one_connection_and_release_ends_it(port: int) -> None:
    handler = Counting()
    controller = server(handler, port)
    smtp = notifier(port)
    try:
        for n in range(3):
            await smtp.send(message(n))
        await smtp.release()
        await smtp.send(message(3))
        await smtp.release()
    finally:
        controller.stop()
    assert len(handler.received) == 4
    ports = [p for p, _, _ in handler.received]
    assert ports[0] == ports[1] == ports[2] != ports[3]
    # What arrived is the message, decoded as any mail reader would.
    _, first, mail_from = handler.received[0]
    assert mail_from == "orders@shop.example"
    assert first["To"] == "shopper0@shop.example"
    assert first["From"] == "Shop <orders@shop.example>"
    assert first["Subject"] == "Bestellung 0 ist unterwegs, Größe M"
    assert first["Message-ID"] == "<n0@oms.notifications>"
    plain = first.get_body(preferencelist=("plain",))
    html = first.get_body(preferencelist=("html",))
    assert plain is not None and html is not None
    assert plain.get_content() == "Hallo, Sendung 0: 1Z999=AA"  # type: ignore[attr-defined]
    assert html.get_content() == "<p>Sendung 0</p>"  # type: ignore[attr-defined]


async def test_a_server_restarted_under_a_held_connection_still_gets_the_message(
    port: int,
) -> None:
    handler = Counting()
    controller = server(handler, port)
    smtp = notifier(port)
    await smtp.send(message(1))
    controller.stop()  # the held connection is now dead
    controller = server(handler, port)
    try:
        await smtp.send(message(2))
        await smtp.release()
    finally:
        controller.stop()
    assert [m["To"] for _, m, _ in handler.received] == [
        "shopper1@shop.example",
        "shopper2@shop.example",
    ]
    assert handler.connections == 2


async def test_a_server_that_is_away_fails_the_send(port: int) -> None:
    smtp = notifier(port)
    with pytest.raises(SendFailed, match="onnect"):
        await smtp.send(message(1))
    # Once it is back, the next send goes through.
    handler = Counting()
    controller = server(handler, port)
    try:
        await smtp.send(message(2))
        await smtp.release()
    finally:
        controller.stop()
    assert [m["To"] for _, m, _ in handler.received] == ["shopper2@shop.example"]
