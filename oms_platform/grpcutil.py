"""gRPC serving: one way to start a server with authentication, access control, health,
reflection, error mapping and logging; one way to open a channel that carries a token.

Every call but health checks (and reflection, when on) must carry a bearer token; the caller's
roles must be allowed by `oms_platform.access`. Servicers only convert and delegate; whatever
they raise is turned into a status code here, for unary and streaming calls alike (the error
boundary, `refusal_for`):

- domain errors map to their code (INVALID_ARGUMENT carries a google.rpc.BadRequest with the
  field violations);
- the database, Temporal or another service out of reach (connection lost, pool exhausted,
  shutting down) → UNAVAILABLE, and a conflicting concurrent write → ABORTED: both retryable;
- a value the database refuses to store (bad encoding, out of range) → INVALID_ARGUMENT;
- anything else → INTERNAL with an error id, logged with its traceback.

No class name, SQL text or host ever reaches the caller, and messages are clipped so an echoed
input cannot overflow the reply's metadata.
"""

from __future__ import annotations

import functools
import ipaddress
import socket
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import asyncpg
import grpc
import structlog
from google.rpc import code_pb2, error_details_pb2, status_pb2
from temporalio.service import RPCError, RPCStatusCode

from oms_platform import access, auth, codec, metrics, tracing
from oms_platform.errors import (
    AlreadyExists,
    DomainError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    Unavailable,
    clip,
)
from oms_platform.tls import TLSConfig

if TYPE_CHECKING:
    from grpc_health.v1 import health

log = structlog.get_logger("oms.grpc")

_CODES: dict[type[DomainError], tuple[grpc.StatusCode, int]] = {
    InvalidArgument: (grpc.StatusCode.INVALID_ARGUMENT, code_pb2.INVALID_ARGUMENT),
    FailedPrecondition: (grpc.StatusCode.FAILED_PRECONDITION, code_pb2.FAILED_PRECONDITION),
    NotFound: (grpc.StatusCode.NOT_FOUND, code_pb2.NOT_FOUND),
    AlreadyExists: (grpc.StatusCode.ALREADY_EXISTS, code_pb2.ALREADY_EXISTS),
    PermissionDenied: (grpc.StatusCode.PERMISSION_DENIED, code_pb2.PERMISSION_DENIED),
    ResourceExhausted: (grpc.StatusCode.RESOURCE_EXHAUSTED, code_pb2.RESOURCE_EXHAUSTED),
    Unavailable: (grpc.StatusCode.UNAVAILABLE, code_pb2.UNAVAILABLE),
}
STATUS_DETAILS_KEY = "grpc-status-details-bin"

# Clipping: the status message and BadRequest ride in the reply's trailing metadata, which
# clients cap (8-16 KiB); an echoed 100 KB id must not push a refusal past that. Each
# violation is already short (InvalidArgument clips its texts and keeps at most
# MAX_REPORTED_VIOLATIONS + 1), but those could still be ~20 KB of four-byte characters,
# so the details are capped in bytes too.
MAX_MESSAGE_CHARS = 512
MAX_DETAILS_BYTES = 4096


def status_for(error: DomainError) -> tuple[grpc.StatusCode, status_pb2.Status]:
    """The gRPC code and rich google.rpc.Status for a domain error (clipped to fit metadata)."""
    code, numeric = next(
        (v for k, v in _CODES.items() if isinstance(error, k)),
        (grpc.StatusCode.FAILED_PRECONDITION, code_pb2.FAILED_PRECONDITION),
    )
    status = status_pb2.Status(code=numeric, message=clip(error.message, MAX_MESSAGE_CHARS))
    if isinstance(error, InvalidArgument):
        bad = error_details_pb2.BadRequest()
        for index, v in enumerate(error.violations):
            violation = error_details_pb2.BadRequest.FieldViolation(
                field=v.field, description=v.description
            )
            if bad.ByteSize() + violation.ByteSize() > MAX_DETAILS_BYTES:
                bad.field_violations.add(
                    field="",
                    description=f"{len(error.violations) - index} more violations not shown",
                )
                break
            bad.field_violations.append(violation)
        status.details.add().Pack(bad)
    return code, status


@dataclass(frozen=True)
class Refusal:
    """How an error is answered: code, message, rich status; `error_id` set for INTERNAL."""

    code: grpc.StatusCode
    message: str
    status: status_pb2.Status
    error_id: str = ""

    @property
    def trailing_metadata(self) -> tuple[tuple[str, bytes], ...]:
        return ((STATUS_DETAILS_KEY, self.status.SerializeToString()),)


# Postgres out of reach or shedding load: the same request may succeed on retry.
_DB_AWAY = (
    asyncpg.PostgresConnectionError,  # class 08
    asyncpg.exceptions.OperatorInterventionError,  # class 57: shutdown, cancel, cannot connect
    asyncpg.exceptions.InsufficientResourcesError,  # class 53: too many connections, disk full
    asyncpg.exceptions.ConnectionDoesNotExistError,
    asyncpg.exceptions.InterfaceError,  # e.g. the pool is closing, the connection was lost
    ConnectionError,  # refused, reset
    socket.gaierror,  # the host name does not resolve (DNS is away)
    TimeoutError,  # no pool connection within the acquire timeout
    asyncpg.exceptions.QueryCanceledError,  # statement timeout under load
)
# Two writers raced; the loser's transaction rolled back whole, so a retry is safe.
_DB_RACE = (
    asyncpg.exceptions.SerializationError,
    asyncpg.exceptions.DeadlockDetectedError,
    asyncpg.exceptions.UniqueViolationError,
)
# What the database says about a value it cannot store, in the caller's terms.
_DATA_RULES = {
    "22021": "a string holds a character that cannot be stored (NUL or invalid encoding)",
    "22P05": "a string holds a character that cannot be stored (NUL or invalid encoding)",
    "22003": "a number is out of the range that can be stored",
    "22008": "a date or time is out of the range that can be stored",
    "22001": "a string is longer than can be stored",
}
_RETRYABLE_TEMPORAL = {
    RPCStatusCode.UNAVAILABLE,
    RPCStatusCode.DEADLINE_EXCEEDED,
    RPCStatusCode.RESOURCE_EXHAUSTED,
    RPCStatusCode.CANCELLED,
}
_RETRYABLE_GRPC = {
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
}


def _plain(code: grpc.StatusCode, numeric: int, message: str) -> Refusal:
    return Refusal(code, message, status_pb2.Status(code=numeric, message=message))


def refusal_for(error: BaseException) -> Refusal:
    """The answer to a call that raised `error`: the one error boundary of every service."""
    if isinstance(error, DomainError):
        code, status = status_for(error)
        return Refusal(code, status.message, status)
    if isinstance(error, codec.Shredded):
        return refusal_for(
            FailedPrecondition(
                "the order's personal data was erased; it can be read but no longer changed"
            )
        )
    if isinstance(error, asyncpg.exceptions.DataError | asyncpg.exceptions._base.DataError):
        sqlstate = getattr(error, "sqlstate", "") or ""
        rule = _DATA_RULES.get(sqlstate, "a value in the request cannot be stored")
        code, status = status_for(InvalidArgument([]))
        message = f"invalid request: {rule}"
        status.message = message
        return Refusal(code, message, status)
    if isinstance(error, _DB_RACE):
        return _plain(
            grpc.StatusCode.ABORTED,
            code_pb2.ABORTED,
            "a concurrent change to the same records won; nothing was written, retry the call",
        )
    if isinstance(error, _DB_AWAY):
        return _plain(
            grpc.StatusCode.UNAVAILABLE,
            code_pb2.UNAVAILABLE,
            "the database is out of reach or busy; nothing was written, retry the call",
        )
    if isinstance(error, RPCError) and error.status in _RETRYABLE_TEMPORAL:
        return _plain(
            grpc.StatusCode.UNAVAILABLE,
            code_pb2.UNAVAILABLE,
            "the workflow engine is out of reach or busy; retry the call",
        )
    if isinstance(error, grpc.aio.AioRpcError) and error.code() in _RETRYABLE_GRPC:
        return _plain(
            grpc.StatusCode.UNAVAILABLE,
            code_pb2.UNAVAILABLE,
            "a service this call needs did not answer; retry the call",
        )
    error_id = uuid.uuid4().hex[:16]
    message = f"internal error (reference {error_id}); the operators have it in their logs"
    return Refusal(
        grpc.StatusCode.INTERNAL,
        message,
        status_pb2.Status(code=code_pb2.INTERNAL, message=message),
        error_id,
    )


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


def _metered(method: str, kind: str, start: float, context: grpc.aio.ServicerContext) -> None:
    metrics.observe_rpc(method, kind, _outcome(context), time.perf_counter() - start)


def _outcome(context: grpc.aio.ServicerContext) -> str:
    """The code the caller saw, for a call that is over."""
    if context.done():
        return getattr(context.code(), "name", None) or "OK"
    # No status went out: the caller left first (a watch closed, a deadline passed). Its code
    # is unset then, and would otherwise count as OK. This side's deadline trails the caller's
    # by the request's transit time, hence the margin.
    remaining = context.time_remaining()
    expired = remaining is not None and remaining < _DEADLINE_MARGIN_SECONDS
    return "DEADLINE_EXCEEDED" if expired else "CANCELLED"


_DEADLINE_MARGIN_SECONDS = 0.2


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

        async def admit(request: Any, context: grpc.aio.ServicerContext, kind: str) -> float:
            start = time.perf_counter()
            # Counted once the call is over, whatever ended it (refused, failed, cancelled).
            context.add_done_callback(functools.partial(_metered, method, kind, start))
            structlog.contextvars.clear_contextvars()
            structlog.contextvars.bind_contextvars(rpc=method)
            order_id = getattr(request, "order_id", "")
            if order_id:
                structlog.contextvars.bind_contextvars(order_id=clip(order_id, 128))
                tracing.tag_order(clip(order_id, 128))
            principal = await gate._authenticate(method, context, start)
            auth.bind_principal(principal)
            structlog.contextvars.bind_contextvars(principal=principal.subject)
            return start

        if handler.unary_unary:
            inner_uu = handler.unary_unary

            async def unary_unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
                start = await admit(request, context, "unary")
                try:
                    response = await inner_uu(request, context)
                except _PASS_THROUGH:
                    raise
                except Exception as error:
                    await _abort(context, error, start)
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
                start = await admit(request, context, "server_stream")
                try:
                    async for response in inner_us(request, context):
                        yield response
                except _PASS_THROUGH:
                    raise
                except Exception as error:
                    await _abort(context, error, start)

            return grpc.unary_stream_rpc_method_handler(
                unary_stream,
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.stream_unary:
            inner_su = handler.stream_unary

            async def stream_unary(requests: Any, context: grpc.aio.ServicerContext) -> Any:
                start = await admit(None, context, "client_stream")
                try:
                    return await inner_su(requests, context)
                except _PASS_THROUGH:
                    raise
                except Exception as error:
                    await _abort(context, error, start)

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


# Raised by `context.abort` (a servicer that chose its own code): already an answer.
_PASS_THROUGH = (grpc.aio.AbortError,)


async def _abort(context: grpc.aio.ServicerContext, error: Exception, start: float) -> None:
    refusal = refusal_for(error)
    if refusal.error_id:
        log.error("rpc failed", code="INTERNAL", error_id=refusal.error_id, exc_info=error)
    elif refusal.code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.ABORTED):
        log.warning("rpc failed", code=refusal.code.name, error=repr(error), ms=_ms(start))
    else:
        log.info("rpc refused", code=refusal.code.name, reason=refusal.message, ms=_ms(start))
    await context.abort(refusal.code, refusal.message, trailing_metadata=refusal.trailing_metadata)


Registration = tuple[Callable[[Any, grpc.aio.Server], None], Any]

# Largest request or reply a server or channel accepts (an import batch, a long timeline).
MAX_MESSAGE_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True)
class ServerLimits:
    """Per-server transport limits (see Settings.grpc_*)."""

    max_concurrent_rpcs: int | None = 1000
    keepalive_seconds: float = 60.0
    keepalive_timeout_seconds: float = 20.0
    max_connection_age_seconds: float = 1800.0
    max_connection_age_grace_seconds: float = 30.0


async def start_server(
    registrations: Iterable[Registration],
    service_names: Iterable[str],
    address: str,
    authenticator: auth.Authenticator,
    *,
    reflection_enabled: bool = True,
    tls: TLSConfig | None = None,
    limits: ServerLimits | None = None,
) -> tuple[grpc.aio.Server, int, health.aio.HealthServicer]:
    """Start a grpc.aio server with authentication, health checking and (optionally)
    reflection; returns it, its port and its health servicer (to report NOT_SERVING).

    `address` may end in `:0` for tests; the bound port is returned. With a server
    certificate in `tls` the port speaks only TLS (and asks for client certificates if so
    configured); without, plaintext.
    """
    # Imported here: the worker opens channels through this module but serves nothing, and
    # keeps about a megabyte less resident without the health and reflection services.
    from grpc_health.v1 import health, health_pb2, health_pb2_grpc
    from grpc_reflection.v1alpha import reflection

    limits = limits or ServerLimits()
    server = grpc.aio.server(
        # A span per call when tracing is on (oms_platform/tracing.py), around everything.
        interceptors=[*tracing.server_interceptors(), _Gate(authenticator, reflection_enabled)],
        maximum_concurrent_rpcs=limits.max_concurrent_rpcs,
        options=[
            ("grpc.so_reuseport", 0),
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.keepalive_time_ms", int(limits.keepalive_seconds * 1000)),
            ("grpc.keepalive_timeout_ms", int(limits.keepalive_timeout_seconds * 1000)),
            # Clients may ping this often without data (grpc's own default is 5 minutes).
            ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
            ("grpc.max_connection_age_ms", int(limits.max_connection_age_seconds * 1000)),
            (
                "grpc.max_connection_age_grace_ms",
                int(limits.max_connection_age_grace_seconds * 1000),
            ),
        ],
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


def channel_target(address: str) -> tuple[str, list[tuple[str, Any]]]:
    """The gRPC target of an address setting and the channel options it needs. One `host:port`
    (or any gRPC target, e.g. `dns:///capture:15051`) is used as it is; a comma-separated list
    of IP `host:port`s (the replicas of a service) becomes one channel that spreads calls round
    robin over the replicas that answer, skipping one that is down."""
    parts = [part.strip() for part in address.split(",") if part.strip()]
    if len(parts) < 2:
        return (parts[0] if parts else address), []
    families = {_ip_family(part) for part in parts}
    if len(families) != 1:
        raise ValueError(f"replica addresses mix IPv4 and IPv6: {address!r}")
    target = f"{families.pop()}:" + ",".join(parts)
    return target, [
        ("grpc.lb_policy_name", "round_robin"),
        # The authority (and the name TLS verifies) of the first replica, not the whole list:
        # replicas of one service share a certificate.
        ("grpc.default_authority", parts[0]),
    ]


def _ip_family(address: str) -> str:
    """The gRPC scheme (ipv4 or ipv6) of a literal `ip:port` (`[ip]:port` for IPv6)."""
    host, _, port = address.rpartition(":")
    try:
        ip = ipaddress.ip_address(host.removeprefix("[").removesuffix("]"))
        int(port)
    except ValueError:
        raise ValueError(
            f"{address!r} in a list of replica addresses is not an IP address with a port; "
            "name replicas by IP, or give one DNS name that resolves to them (dns:///name:port)"
        ) from None
    return f"ipv{ip.version}"


def channel(
    address: str,
    token: auth.TokenSource | None = None,
    *,
    tls: TLSConfig | None = None,
    token_for: Callable[[str], str] | None = None,
) -> grpc.aio.Channel:
    """A client channel to an oms service (to each of its replicas in turn when `address` lists
    several, see `channel_target`); every call carries `token` when one is given (or
    `token_for(method)`, for a caller holding several identities), and the channel is TLS when
    `tls` has a CA (else plaintext)."""
    target, spread = channel_target(address)
    options = [("grpc.max_receive_message_length", MAX_MESSAGE_BYTES), *spread]
    if token_for is None and token is not None:
        source = token

        def token_for(_method: str) -> str:
            return source()

    interceptors = [
        *(bearer_interceptors(token_for) if token_for is not None else []),
        *tracing.client_interceptors(),
    ] or None
    credentials = tls.channel_credentials() if tls is not None else None
    if credentials is None:
        return grpc.aio.insecure_channel(target, options=options, interceptors=interceptors)
    return grpc.aio.secure_channel(target, credentials, options=options, interceptors=interceptors)
