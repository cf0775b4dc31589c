"""structlog configured once per process: JSON when not on a terminal, readable otherwise.

Context (order_id, workflow_id, rpc) is bound with contextvars at the edges, so every line
logged while handling a request carries it.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

from oms_platform.errors import clip
from oms_platform.redaction import redact

_configured = False


def configure(level: str = "info", fmt: str = "auto", service: str = "") -> None:
    """Configure structlog and stdlib logging for this process (idempotent)."""
    global _configured
    if _configured:
        return
    _configured = True
    render_json = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.ExtraAdder(),
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    if service:
        shared.insert(0, _add_service(service))
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if render_json
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[
            *shared,
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            # Last before rendering, so tracebacks and bound context are masked too.
            redact_personal_data,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    # Libraries (temporalio, asyncpg, grpc) log through stdlib; route them through structlog.
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[_drop_meta, redact_personal_data, renderer],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)
    # Workflow and activity loggers carry the workflow id (Temporal adds it as `extra`).
    for name in ("temporalio.workflow", "temporalio.activity"):
        logging.getLogger(name).setLevel(level.upper())


# Longest string value a log line carries (tracebacks get more room).
MAX_VALUE_CHARS = 1024
MAX_TRACEBACK_CHARS = 20_000


def redact_personal_data(
    logger: Any, name: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: mask emails, phones, names, addresses and payment tokens in an
    event's keys and values, nested ones included (oms never logs them)."""
    meta = {k: event.pop(k) for k in ("_record", "_from_structlog") if k in event}
    redacted: MutableMapping[str, Any] = redact(dict(event))
    for key, value in redacted.items():
        # A hostile 100 KB field (an order id, a message) is not copied whole into every line.
        limit = MAX_TRACEBACK_CHARS if key == "exception" else MAX_VALUE_CHARS
        if isinstance(value, str):
            redacted[key] = clip(value, limit)
    redacted.update(meta)
    return redacted


def _drop_meta(logger: Any, name: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    event.pop("_record", None)
    event.pop("_from_structlog", None)
    return event


def _add_service(service: str) -> Any:
    def processor(
        logger: Any, name: str, event: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        event.setdefault("service", service)
        return event

    return processor


def get_logger(name: str = "oms") -> Any:
    """A structlog logger."""
    return structlog.get_logger(name)
