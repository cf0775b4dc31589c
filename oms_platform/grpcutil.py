"""gRPC serving: one way to start a server with health, reflection, error mapping and logging.

Servicers only convert and delegate; domain errors they let through are turned into status
codes here (INVALID_ARGUMENT carries a google.rpc.BadRequest with every field violation).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

import grpc
import structlog
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from oms_platform.errors import (
    AlreadyExists,
    DomainError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
)
from oms_platform.tls import TLSConfig

log = structlog.get_logger("oms.grpc")

_CODES: dict[type[DomainError], tuple[grpc.StatusCode, int]] = {
    InvalidArgument: (grpc.StatusCode.INVALID_ARGUMENT, code_pb2.INVALID_ARGUMENT),
    FailedPrecondition: (grpc.StatusCode.FAILED_PRECONDITION, code_pb2.FAILED_PRECONDITION),
    NotFound: (grpc.StatusCode.NOT_FOUND, code_pb2.NOT_FOUND),
    AlreadyExists: (grpc.StatusCode.ALREADY_EXISTS, code_pb2.ALREADY_EXISTS),
}
STATUS_DETAILS_KEY = "grpc-status-details-bin"


def status_for(error: DomainError) -> tuple[grpc.StatusCode, status_pb2.Status]:
    """The gRPC code and rich google.rpc.Status for a domain error."""
    code, numeric = next(
        (v for k, v in _CODES.items() if isinstance(error, k)),
        (grpc.StatusCode.FAILED_PRECONDITION, code_pb2.FAILED_PRECONDITION),
    )
    status = status_pb2.Status(code=numeric, message=error.message)
    if isinstance(error, InvalidArgument):
        bad = error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(
                    field=v.field, description=v.description
                )
                for v in error.violations
            ]
        )
        status.details.add().Pack(bad)
    return code, status


def field_violations(error: grpc.aio.AioRpcError) -> list[tuple[str, str]]:
    """(field, description) pairs of a BadRequest carried by an INVALID_ARGUMENT error."""
    for key, value in error.trailing_metadata() or ():
        if key == STATUS_DETAILS_KEY:
            status = status_pb2.Status.FromString(value)
            out: list[tuple[str, str]] = []
            for detail in status.details:
                bad = error_details_pb2.BadRequest()
                if detail.Unpack(bad):
                    out += [(v.field, v.description) for v in bad.field_violations]
            return out
    return []


class _ErrorsAndLogging(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Maps domain errors to status codes and writes one log line per call."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Any],
        details: grpc.HandlerCallDetails,
    ) -> Any:
        handler = await continuation(details)
        if handler is None or details.method.startswith(("/grpc.health", "/grpc.reflection")):
            return handler
        method = details.method
        if handler.unary_unary:
            inner = handler.unary_unary

            async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
                start = time.perf_counter()
                structlog.contextvars.clear_contextvars()
                structlog.contextvars.bind_contextvars(rpc=method)
                order_id = getattr(request, "order_id", "")
                if order_id:
                    structlog.contextvars.bind_contextvars(order_id=order_id)
                try:
                    response = await inner(request, context)
                except DomainError as error:
                    await _abort(context, error, method, start)
                    raise  # abort raises; this keeps type checkers content
                log.debug("rpc", code="OK", ms=round((time.perf_counter() - start) * 1000, 2))
                return response

            return grpc.unary_unary_rpc_method_handler(
                unary,
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler


async def _abort(
    context: grpc.aio.ServicerContext, error: DomainError, method: str, start: float
) -> None:
    code, status = status_for(error)
    log.info(
        "rpc refused",
        code=code.name,
        reason=error.message,
        ms=round((time.perf_counter() - start) * 1000, 2),
    )
    await context.abort(
        code, error.message, trailing_metadata=((STATUS_DETAILS_KEY, status.SerializeToString()),)
    )


Registration = tuple[Callable[[Any, grpc.aio.Server], None], Any]


async def start_server(
    registrations: Iterable[Registration],
    service_names: Iterable[str],
    address: str,
    *,
    tls: TLSConfig | None = None,
) -> tuple[grpc.aio.Server, int]:
    """Start a grpc.aio server with health checking and reflection; returns it and its port.

    `address` may end in `:0` for tests; the bound port is returned. With a server
    certificate in `tls` the port speaks only TLS (and asks for client certificates if so
    configured); without, plaintext.
    """
    server = grpc.aio.server(
        interceptors=[_ErrorsAndLogging()],
        options=[("grpc.so_reuseport", 0), ("grpc.max_receive_message_length", 16 * 1024 * 1024)],
    )
    names = list(service_names)
    for add, servicer in registrations:
        add(servicer, server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        [
            *names,
            health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
            reflection.SERVICE_NAME,
        ],
        server,
    )
    credentials = tls.server_credentials() if tls is not None else None
    if credentials is None:
        port = server.add_insecure_port(address)
    else:
        port = server.add_secure_port(address, credentials)
    await server.start()
    for name in ["", *names]:
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    return server, port


def channel(address: str, *, tls: TLSConfig | None = None) -> grpc.aio.Channel:
    """A client channel to another oms service: TLS when `tls` has a CA, else plaintext."""
    options = [("grpc.max_receive_message_length", 16 * 1024 * 1024)]
    credentials = tls.channel_credentials() if tls is not None else None
    if credentials is None:
        return grpc.aio.insecure_channel(address, options=options)
    return grpc.aio.secure_channel(address, credentials, options=options)
