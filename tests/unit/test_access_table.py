"""The access table covers the API exactly: every RPC has a decision, nothing else does."""

from __future__ import annotations

from oms.capture.v1 import capture_pb2
from oms.events.v1 import events_pb2
from oms.fulfillment.v1 import fulfillment_pb2
from oms.outbox.v1 import outbox_pb2
from oms.payments.v1 import payments_pb2
from oms.servicing.v1 import servicing_pb2
from oms.subscriptions.v1 import subscriptions_pb2

from oms_platform import access, auth

SERVICES = [
    capture_pb2.DESCRIPTOR.services_by_name["CaptureService"],
    fulfillment_pb2.DESCRIPTOR.services_by_name["FulfillmentService"],
    payments_pb2.DESCRIPTOR.services_by_name["PaymentsService"],
    servicing_pb2.DESCRIPTOR.services_by_name["ServicingService"],
    subscriptions_pb2.DESCRIPTOR.services_by_name["SubscriptionsService"],
    outbox_pb2.DESCRIPTOR.services_by_name["OutboxService"],
    events_pb2.DESCRIPTOR.services_by_name["EventsService"],
]


def every_rpc() -> set[str]:
    return {f"/{s.full_name}/{m.name}" for s in SERVICES for m in s.methods}


def test_every_rpc_of_every_service_is_in_the_table_and_nothing_else_is() -> None:
    assert every_rpc() - set(access.POLICY) == set(), "RPCs nobody decided about"
    assert set(access.POLICY) - every_rpc() == set(), "table entries naming no RPC"


def test_every_entry_names_known_roles() -> None:
    for method, roles in access.POLICY.items():
        assert roles and roles <= auth.ROLES, method


def test_only_the_worker_drives_the_lifecycle() -> None:
    lifecycle = [
        "/oms.capture.v1.CaptureService/RecordOrderProgress",
        "/oms.payments.v1.PaymentsService/AuthorizePayment",
        "/oms.payments.v1.PaymentsService/CreateInvoice",
        "/oms.payments.v1.PaymentsService/CaptureInvoice",
        "/oms.fulfillment.v1.FulfillmentService/CreateFulfillmentOrders",
        "/oms.subscriptions.v1.SubscriptionsService/RecordSubscriptionProgress",
    ]
    for method in lifecycle:
        assert access.allowed_roles(method) == {auth.WORKFLOW}, method
    # Services record their outboxes' dead letters (servicing checks the category).
    assert access.allowed_roles("/oms.servicing.v1.ServicingService/RecordProcessException") == {
        auth.WORKFLOW,
        auth.SERVICE,
    }


def test_an_rpc_missing_from_the_table_is_refused_for_everyone() -> None:
    reason = access.refusal("/oms.capture.v1.CaptureService/DropAllOrders", auth.ROLES)
    assert reason == "oms.capture.v1.CaptureService/DropAllOrders is not open to any role"


def test_a_refusal_names_the_role_and_the_rpc() -> None:
    reason = access.refusal(
        "/oms.capture.v1.CaptureService/RecordOrderProgress", frozenset({auth.STOREFRONT})
    )
    assert (
        reason == "role storefront may not call oms.capture.v1.CaptureService/RecordOrderProgress"
    )
