"""Process exceptions in an agent's hands: status transitions, resolution and escalation."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from oms_platform.errors import FailedPrecondition, InvalidArgument
from services.servicing import domain
from services.servicing.domain import Escalate, ProcessException, Resolve, StatusUpdate

RAISED = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
LATER = RAISED + timedelta(hours=4)


def an_exception(**changes: object) -> ProcessException:
    exception = ProcessException(
        id="pe-1",
        order_id="order-1",
        category=domain.PAYMENT,
        severity=domain.HIGH,
        status=domain.NEW,
        attached_to="invoice:inv-1",
        message="Capture of invoice inv-1 failed: processor_unavailable",
        created_at=RAISED,
        updated_at=RAISED,
    )
    return replace(exception, **changes)  # type: ignore[arg-type]


def violated_fields(error: pytest.ExceptionInfo[InvalidArgument]) -> list[str]:
    return [v.field for v in error.value.violations]


# ---- status transitions -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("start", "to"),
    [
        (domain.NEW, domain.TRIAGED),
        (domain.NEW, domain.PAUSED),
        (domain.NEW, domain.IGNORED),
        (domain.NEW, domain.VOIDED),
        (domain.TRIAGED, domain.PAUSED),
        (domain.PAUSED, domain.TRIAGED),
        (domain.TRIAGED, domain.VOIDED),
    ],
)
def test_an_open_exception_moves_to_the_status_an_agent_picks(start: str, to: str) -> None:
    moved = domain.with_status(
        an_exception(status=start), StatusUpdate("pe-1", to, "looked at it", "agent:ada"), LATER
    )

    assert (moved.status, moved.note, moved.updated_by, moved.updated_at) == (
        to,
        "looked at it",
        "agent:ada",
        LATER,
    )


@pytest.mark.parametrize("closed", [domain.IGNORED, domain.VOIDED, domain.RESOLVED])
def test_a_closed_exception_cannot_be_reopened(closed: str) -> None:
    with pytest.raises(FailedPrecondition) as error:
        domain.with_status(an_exception(status=closed), StatusUpdate("pe-1", domain.TRIAGED), LATER)

    assert f"is {closed}" in error.value.message


def test_a_triaged_exception_cannot_go_back_to_new() -> None:
    with pytest.raises(InvalidArgument) as error:
        domain.with_status(
            an_exception(status=domain.TRIAGED), StatusUpdate("pe-1", domain.NEW), LATER
        )

    assert violated_fields(error) == ["status"]


def test_moving_to_the_status_it_has_changes_nothing() -> None:
    exception = an_exception(status=domain.PAUSED)

    assert domain.with_status(exception, StatusUpdate("pe-1", domain.PAUSED), LATER) is exception


def test_resolved_is_not_a_status_an_agent_sets_by_hand() -> None:
    with pytest.raises(InvalidArgument) as error:
        domain.validate_status_update(StatusUpdate("pe-1", domain.RESOLVED))

    assert violated_fields(error) == ["status"]
    assert "ResolveProcessException" in error.value.violations[0].description


def test_a_bad_status_update_names_every_bad_field() -> None:
    with pytest.raises(InvalidArgument) as error:
        domain.validate_status_update(StatusUpdate("", "", "n" * 2001, "a" * 201))

    assert violated_fields(error) == ["process_exception_id", "status", "note", "actor"]


# ---- resolution ---------------------------------------------------------------------------------


def test_a_resolution_records_the_action_note_who_and_when() -> None:
    request = Resolve("pe-1", domain.RETRY, "gateway is back", "agent:ada")

    resolved = domain.resolved(an_exception(), request, "shipped", LATER)

    assert resolved.status == domain.RESOLVED
    assert (resolved.resolution_action, resolved.resolution_note, resolved.resolved_by) == (
        domain.RETRY,
        "gateway is back",
        "agent:ada",
    )
    assert (resolved.resolved_at, resolved.order_status) == (LATER, "shipped")


def test_a_resolution_without_an_actor_is_the_agents() -> None:
    resolved = domain.resolved(an_exception(), Resolve("pe-1", domain.SKIP), "fulfilled", LATER)

    assert resolved.resolved_by == "agent"


def test_resolving_again_with_the_same_action_is_a_replay() -> None:
    done = an_exception(status=domain.RESOLVED, resolution_action=domain.RETRY)

    assert domain.is_resolution_replay(done, domain.RETRY) is True
    assert domain.is_resolution_replay(an_exception(), domain.RETRY) is False


def test_resolving_again_with_another_action_is_refused_naming_the_first() -> None:
    done = an_exception(status=domain.RESOLVED, resolution_action=domain.RETRY)

    with pytest.raises(FailedPrecondition) as error:
        domain.is_resolution_replay(done, domain.CANCEL_ORDER)

    assert "already resolved with retry" in error.value.message


@pytest.mark.parametrize("closed", [domain.IGNORED, domain.VOIDED])
def test_an_ignored_or_voided_exception_cannot_be_resolved(closed: str) -> None:
    with pytest.raises(FailedPrecondition):
        domain.is_resolution_replay(an_exception(status=closed), domain.RETRY)


def test_a_bad_resolution_names_every_bad_field() -> None:
    with pytest.raises(InvalidArgument) as error:
        domain.validate_resolution(Resolve("", "unknown(9)", "n" * 2001))

    assert violated_fields(error) == ["process_exception_id", "action", "note"]


# ---- escalation ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("severity", "escalated_to"),
    [
        (domain.LOW, domain.MEDIUM),
        (domain.MEDIUM, domain.HIGH),
        (domain.HIGH, domain.CRITICAL),
        (domain.CRITICAL, domain.CRITICAL),
    ],
)
def test_escalation_raises_the_severity_one_level(severity: str, escalated_to: str) -> None:
    escalated = domain.escalated(
        an_exception(severity=severity), Escalate("pe-1", "k", "unresolved for 4:00:00"), LATER
    )

    assert escalated.severity == escalated_to
    assert escalated.escalated_at == LATER


def test_escalation_appends_why_to_the_message() -> None:
    escalated = domain.escalated(
        an_exception(), Escalate("pe-1", "k", "unresolved for 4:00:00"), LATER
    )

    assert escalated.message == (
        "Capture of invoice inv-1 failed: processor_unavailable\n"
        "Escalated to critical: unresolved for 4:00:00"
    )


def test_escalation_keeps_the_message_within_2000_characters_newest_words_last() -> None:
    escalated = domain.escalated(
        an_exception(message="m" * 2000), Escalate("pe-1", "k", "unresolved"), LATER
    )

    assert len(escalated.message) == 2000
    assert escalated.message.endswith("Escalated to critical: unresolved")


@pytest.mark.parametrize("closed", [domain.IGNORED, domain.VOIDED, domain.RESOLVED])
def test_a_closed_exception_is_not_escalated(closed: str) -> None:
    exception = an_exception(status=closed)

    assert domain.escalated(exception, Escalate("pe-1", "k", "late"), LATER) is exception


def test_listing_by_severity_and_age_binds_the_page_token_to_those_filters() -> None:
    before = LATER
    query = domain.list_query("", [], [], 1, "", severities=[domain.HIGH], created_before=before)
    page = domain.page_of(query, [an_exception(id="pe-1"), an_exception(id="pe-2")])
    token = domain.next_page_token(query, page)

    again = domain.list_query("", [], [], 1, token, severities=[domain.HIGH], created_before=before)
    with pytest.raises(InvalidArgument) as error:
        domain.list_query("", [], [], 1, token, severities=[domain.LOW], created_before=before)

    assert again.after == domain.Cursor(RAISED, "pe-1")
    assert (again.severities, again.created_before) == ((domain.HIGH,), before)
    assert violated_fields(error) == ["page_token"]


def test_a_bad_severity_filter_is_named() -> None:
    with pytest.raises(InvalidArgument) as error:
        domain.list_query("", [], [], 0, "", severities=["", "urgent"])

    assert violated_fields(error) == ["severities[0]", "severities[1]"]
