"""gRPC edge of the servicing service: converts wire <-> domain and delegates."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import asyncpg
import grpc
from google.protobuf.timestamp_pb2 import Timestamp
from oms.servicing.v1 import servicing_pb2 as pb
from oms.servicing.v1 import servicing_pb2_grpc

from oms_platform.db import idempotent
from services.servicing import domain
from services.servicing.store import ProcessExceptionStore

CATEGORY_TO_DOMAIN: dict[pb.ProcessExceptionCategory.ValueType, str] = {
    pb.PROCESS_EXCEPTION_CATEGORY_UNSPECIFIED: "",
    pb.PROCESS_EXCEPTION_CATEGORY_PAYMENT: domain.PAYMENT,
    pb.PROCESS_EXCEPTION_CATEGORY_FULFILLMENT: domain.FULFILLMENT,
    pb.PROCESS_EXCEPTION_CATEGORY_INVENTORY: domain.INVENTORY,
    pb.PROCESS_EXCEPTION_CATEGORY_FRAUD: domain.FRAUD,
    pb.PROCESS_EXCEPTION_CATEGORY_CARRIER: domain.CARRIER,
    pb.PROCESS_EXCEPTION_CATEGORY_INVOICING: domain.INVOICING,
}
CATEGORY_TO_PB: dict[str, pb.ProcessExceptionCategory.ValueType] = {
    v: k for k, v in CATEGORY_TO_DOMAIN.items() if v
}

SEVERITY_TO_DOMAIN: dict[pb.ProcessExceptionSeverity.ValueType, str] = {
    pb.PROCESS_EXCEPTION_SEVERITY_UNSPECIFIED: "",
    pb.PROCESS_EXCEPTION_SEVERITY_LOW: domain.LOW,
    pb.PROCESS_EXCEPTION_SEVERITY_MEDIUM: domain.MEDIUM,
    pb.PROCESS_EXCEPTION_SEVERITY_HIGH: domain.HIGH,
}
SEVERITY_TO_PB: dict[str, pb.ProcessExceptionSeverity.ValueType] = {
    v: k for k, v in SEVERITY_TO_DOMAIN.items() if v
}

STATUS_TO_DOMAIN: dict[pb.ProcessExceptionStatus.ValueType, str] = {
    pb.PROCESS_EXCEPTION_STATUS_UNSPECIFIED: "",
    pb.PROCESS_EXCEPTION_STATUS_NEW: domain.NEW,
    pb.PROCESS_EXCEPTION_STATUS_TRIAGED: domain.TRIAGED,
    pb.PROCESS_EXCEPTION_STATUS_PAUSED: domain.PAUSED,
    pb.PROCESS_EXCEPTION_STATUS_IGNORED: domain.IGNORED,
    pb.PROCESS_EXCEPTION_STATUS_VOIDED: domain.VOIDED,
    pb.PROCESS_EXCEPTION_STATUS_RESOLVED: domain.RESOLVED,
}
STATUS_TO_PB: dict[str, pb.ProcessExceptionStatus.ValueType] = {
    v: k for k, v in STATUS_TO_DOMAIN.items() if v
}


def _enum_name(table: Mapping[Any, str], value: int) -> str:
    # A number this build does not know (a newer client) stays visible in the violation.
    return table.get(value, f"unknown({value})")


def record_to_domain(request: pb.RecordProcessExceptionRequest) -> domain.RecordProcessException:
    """The domain request for a RecordProcessException call."""
    return domain.RecordProcessException(
        idempotency_key=request.idempotency_key,
        order_id=request.order_id,
        category=_enum_name(CATEGORY_TO_DOMAIN, request.category),
        severity=_enum_name(SEVERITY_TO_DOMAIN, request.severity),
        attached_to=request.attached_to,
        message=request.message,
    )


def timestamp(value: datetime) -> Timestamp:
    """A protobuf Timestamp for an aware datetime."""
    out = Timestamp()
    out.FromDatetime(value)
    return out


def process_exception_to_pb(exception: domain.ProcessException) -> pb.ProcessException:
    """The wire form of a stored process exception."""
    return pb.ProcessException(
        process_exception_id=exception.id,
        order_id=exception.order_id,
        category=CATEGORY_TO_PB[exception.category],
        severity=SEVERITY_TO_PB[exception.severity],
        status=STATUS_TO_PB[exception.status],
        attached_to=exception.attached_to,
        message=exception.message,
        created_at=timestamp(exception.created_at),
        updated_at=timestamp(exception.updated_at),
    )


class ServicingServicer(servicing_pb2_grpc.ServicingServiceServicer):
    """ServicingService over the process-exception store."""

    def __init__(self, store: ProcessExceptionStore) -> None:
        self._store = store

    async def RecordProcessException(
        self, request: pb.RecordProcessExceptionRequest, context: grpc.aio.ServicerContext
    ) -> pb.RecordProcessExceptionResponse:
        command = record_to_domain(request)
        domain.validate_record(command)

        async def record(conn: asyncpg.Connection) -> pb.RecordProcessExceptionResponse:
            raised = domain.new_process_exception(command, str(uuid.uuid4()), datetime.now(UTC))
            stored = await self._store.insert(conn, raised)
            return pb.RecordProcessExceptionResponse(
                process_exception=process_exception_to_pb(stored)
            )

        response, _replayed = await idempotent(
            self._store.pool,
            domain.idempotency_key_for(command.order_id, command.idempotency_key),
            request,
            pb.RecordProcessExceptionResponse,
            record,
        )
        return response

    async def ListProcessExceptions(
        self, request: pb.ListProcessExceptionsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListProcessExceptionsResponse:
        query = domain.list_query(
            order_id=request.order_id,
            statuses=[_enum_name(STATUS_TO_DOMAIN, s) for s in request.statuses],
            categories=[_enum_name(CATEGORY_TO_DOMAIN, c) for c in request.categories],
            page_size=request.page_size,
            page_token=request.page_token,
        )
        page = domain.page_of(query, await self._store.list(query))
        return pb.ListProcessExceptionsResponse(
            process_exceptions=[process_exception_to_pb(e) for e in page.process_exceptions],
            next_page_token=domain.next_page_token(query, page),
        )
