"""gRPC serving: one way to start a server with authentication, access control, health,
reflection, error mapping and logging; one way to open a channel that carries a token.

Every call but health checks (and reflection, when on) must carry a bearer token; the caller's
roles must be allowed by `oms_platform.access`. Servicers only convert and delegate; domain
errors they let through are turned into status codes here (INVALID_ARGUMENT carries a
google.rpc.BadRequest with every field violation).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

import grpc
import structlog
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from oms_platform import access, auth
from oms_platform.errors import (
    AlreadyExists,
    DomainError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
)
from oms_platform.tls import TLSConfig

log = structlog.get_logger("oms.grpc")

_CODES: dict[type[DomainError], tuple[grpc.StatusCode, int]] = {
    InvalidArgument: (grpc.StatusCode.INVALID_ARGUMENT, code_pb2.INVALID_ARGUMENT),
    FailedPrecondition: (grpc.StatusCode.FAILED_PRECONDITION, code_pb2.FAILED_PRECONDITION),
    NotFound: (grpc.StatusCode.NOT_FOUND, code_pb2.NOT_FOUND),
    AlreadyExists: (grpc.StatusCode.ALREADY_EXISTS, code_pb2.ALREADY_EXISTS),
    PermissionDenied: (grpc.StatusCode.PERMISSION_DENIED, code_pb2.PERMISSION_DENIED),
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


class _Gate(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Every call: authenticate the bearer token, check the access table, bind the principal
    for the handler, map domain errors to status codes and write one log line."""

    def __init__(self, authenticator: auth.Authenticator, reflection: bool) -> None:
        self._authenticator = authenticator
        self._open = access.OPEN_PREFIXES + (access.REFLECTION_PREFIXES if reflection else ())

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Any],
        details: grpc.HandlerCallDetails,
    ) -> Any:
        handler = await continuation(details)
        if handler is None or details.method.startswith(self._open):
            return handler
        method = details.method
        gate = self

        async def admit(request: Any, context: grpc.aio.ServicerContext) -> float:
            start = time.perf_counter()
            structlog.contextvars.clear_contextvars()
            structlog.contextvars.bind_contextvars(rpc=method)
            order_id = getattr(request, "order_id", "")
            if order_id:
                structlog.contextvars.bind_contextvars(order_id=order_id)
            principal = await gate._authenticate(method, context, start)
            auth.bind_principal(principal)
            structlog.contextvars.bind_contextvars(principal=principal.subject)
            return start

        if handler.unary_unary:
            inner_uu = handler.unary_unary

            async def unary_unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
                start = await admit(request, context)
                try:
                    response = await inner_uu(request, context)
                except DomainError as error:
                    await _abort(context, error, method, start)
                    raise  # abort raises; this keeps type checkers content
                log.debug("rpc", code="OK", ms=_ms(start))
                return response

            return grpc.unary_unary_rpc_method_handler(
                unary_unary,
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream:
            inner_us = handler.unary_stream

            async def unary_stream(
                request: Any, context: grpc.aio.ServicerContext
            ) -> AsyncIterator[Any]:
                start = await admit(request, context)
                try:
                    async for response in inner_us(request, context):
                        yield response
                except DomainError as error:
                    await _abort(context, error, method, start)

            return grpc.unary_stream_rpc_method_handler(
                unary_stream,
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.stream_unary:
            inner_su = handler.stream_unary

            async def stream_unary(requests: Any, context: grpc.aio.ServicerContext) -> Any:
                start = await admit(None, context)
                try:
                    return await inner_su(requests, context)
                except DomainError as error:
                    await _abort(context, error, method, start)

            return grpc.stream_unary_rpc_method_handler(
                stream_unary,
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        # Bidirectional streams: none in the API today; refused rather than let through.
        return _refuse(
            handler,
            grpc.StatusCode.PERMISSION_DENIED,
            f"{method.lstrip('/')} is not open to any role",
        )

    async def _authenticate(
        self, method: str, context: grpc.aio.ServicerContext, start: float
    ) -> auth.Principal:
        metadata = dict(context.invocation_metadata() or ())
        try:
            principal = self._authenticator.authenticate_header(metadata.get(auth.METADATA_KEY))
        except auth.Unauthenticated as error:
            log.info("rpc refused", code="UNAUTHENTICATED", reason=error.reason, ms=_ms(start))
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, error.reason)
            raise  # abort raises
        reason = access.refusal(method, principal.roles)
        if reason is not None:
            log.info(
                "rpc refused",
                code="PERMISSION_DENIED",
                reason=reason,
                principal=principal.subject,
                ms=_ms(start),
            )
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, reason)
        return principal


def _refuse(handler: Any, code: grpc.StatusCode, message: str) -> Any:
    async def refuse(request: Any, context: grpc.aio.ServicerContext) -> Any:
        await context.abort(code, message)

    return grpc.stream_stream_rpc_method_handler(
        refuse,
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )


def _ms(start: float) -> float:
    return round((time.perf_counter() - start) * 1000, 2)


async def _abort(
    context: grpc.aio.ServicerContext, error: DomainError, method: str, start: float
) -> None:
    code, status = status_for(error)
    log.info("rpc refused", code=code.name, reason=error.message, ms=_ms(start))
    await context.abort(
        code, error.message, trailing_metadata=((STATUS_DETAILS_KEY, status.SerializeToString()),)
    )


Registration = tuple[Callable[[Any, grpc.aio.Server], None], Any]


async def start_server(
    registrations: Iterable[Registration],
    service_names: Iterable[str],
    address: str,
    authenticator: auth.Authenticator,
    *,
    reflection_enabled: bool = True,
    tls: TLSConfig | None = None,
) -> tuple[grpc.aio.Server, int, health.aio.HealthServicer]:
    """Start a grpc.aio server with authentication, health checking and (optionally)
    reflection; returns it, its port and its health servicer (to report NOT_SERVING).

    `address` may end in `:0` for tests; the bound port is returned. With a server
    certificate in `tls` the port speaks only TLS (and asks for client certificates if so
    configured); without, plaintext.
    """
    server = grpc.aio.server(
        interceptors=[_Gate(authenticator, reflection_enabled)],
        options=[("grpc.so_reuseport", 0), ("grpc.max_receive_message_length", 16 * 1024 * 1024)],
    )
    names = list(service_names)
    for add, servicer in registrations:
        add(servicer, server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    if reflection_enabled:
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
    return server, port, health_servicer


class _Bearer:
    """Adds `authorization: Bearer <token>` to a call; grpc.aio takes one interceptor object
    per kind of call, hence the four small subclasses below."""

    def __init__(self, token_for: Callable[[str], str]) -> None:
        self._token_for = token_for

    def _with_token(self, details: Any) -> Any:
        method = details.method.decode() if isinstance(details.method, bytes) else details.method
        metadata = [(k, v) for k, v in (details.metadata or ()) if k != auth.METADATA_KEY]
        metadata.append((auth.METADATA_KEY, f"Bearer {self._token_for(method)}"))
        return details._replace(metadata=grpc.aio.Metadata(*metadata))


class _BearerUnaryUnary(_Bearer, grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(self._with_token(details), request)


class _BearerUnaryStream(_Bearer, grpc.aio.UnaryStreamClientInterceptor):  # type: ignore[misc]
    async def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(self._with_token(details), request)


class _BearerStreamUnary(_Bearer, grpc.aio.StreamUnaryClientInterceptor):  # type: ignore[misc]
    async def intercept_stream_unary(self, continuation: Any, details: Any, requests: Any) -> Any:
        return await continuation(self._with_token(details), requests)


class _BearerStreamStream(_Bearer, grpc.aio.StreamStreamClientInterceptor):  # type: ignore[misc]
    async def intercept_stream_stream(self, continuation: Any, details: Any, requests: Any) -> Any:
        return await continuation(self._with_token(details), requests)


def bearer_interceptors(token_for: Callable[[str], str]) -> list[Any]:
    """Client interceptors adding a bearer token to every kind of call; `token_for` gets the
    full method name (a caller holding several identities may choose by RPC)."""
    return [
        kind(token_for)
        for kind in (_BearerUnaryUnary, _BearerUnaryStream, _BearerStreamUnary, _BearerStreamStream)
    ]


def channel(
    address: str,
    token: auth.TokenSource | None = None,
    *,
    tls: TLSConfig | None = None,
    token_for: Callable[[str], str] | None = None,
) -> grpc.aio.Channel:
    """A client channel to an oms service; every call carries `token` when one is given (or
    `token_for(method)`, for a caller holding several identities), and the channel is TLS when
    `tls` has a CA (else plaintext)."""
    options = [("grpc.max_receive_message_length", 16 * 1024 * 1024)]
    if token_for is None and token is not None:
        source = token

        def token_for(_method: str) -> str:
            return source()

    interceptors = bearer_interceptors(token_for) if token_for is not None else None
    credentials = tls.channel_credentials() if tls is not None else None
    if credentials is None:
        return grpc.aio.insecure_channel(address, options=options, interceptors=interceptors)
    return grpc.aio.secure_channel(address, credentials, options=options, interceptors=interceptors)
