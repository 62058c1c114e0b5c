"""Logging shared by every process: JSON lines on stderr when it is not a terminal (console
rendering on a terminal), the same processors for Tollway's own structlog loggers and the
standard library's (uvicorn, temporalio, SQLAlchemy). Context bound per request (``requestId``,
``executionId``) appears on every line logged while it is handled.

Tollway's own lines (the access log is one per request) are rendered by structlog and written
straight to stderr; routing them through the standard library as well (a ``LogRecord``, a
handler, a formatter per line) cost more than half again as much CPU."""

from __future__ import annotations

import json
import logging
import sys
from typing import Any

import structlog
from pydantic_core import PydanticSerializationError, to_json


class _NamedWriteLogger(structlog.WriteLogger):
    """A logger writing rendered lines to stderr that knows its name, as
    ``structlog.stdlib.add_logger_name`` expects of a logger."""

    def __init__(self, name: str) -> None:
        super().__init__(sys.stderr)
        self.name = name


class _NamedWriteLoggerFactory:
    def __call__(self, *args: object) -> _NamedWriteLogger:
        return _NamedWriteLogger(str(args[0]) if args else "tollway")


SHARED: list[structlog.types.Processor] = [
    structlog.contextvars.merge_contextvars,
    structlog.stdlib.add_log_level,
    structlog.stdlib.add_logger_name,
    structlog.processors.TimeStamper(fmt="iso", utc=True),
]


def _json_line(event: Any, *, default: Any = None, **kw: Any) -> str:
    """A line encoded by pydantic-core, the encoder the API's JSON answers use
    (``api.errors.JsonResponse``). What it refuses (a lone surrogate) goes through the
    standard encoder, so such a value never costs the line."""
    try:
        return to_json(event, fallback=default).decode()
    except PydanticSerializationError:
        return json.dumps(event, default=default, **kw)


def configure_logging(level: int = logging.INFO, json_lines: bool | None = None) -> None:
    json_lines = not sys.stderr.isatty() if json_lines is None else json_lines
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer(serializer=_json_line)
        if json_lines
        else structlog.dev.ConsoleRenderer()
    )
    structlog.configure(
        processors=[*SHARED, structlog.processors.format_exc_info, renderer],
        logger_factory=_NamedWriteLoggerFactory(),
        wrapper_class=structlog.make_filtering_bound_logger(level),
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=SHARED,
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    # The API logs requests itself (api/request_scope.py: request id, redacted query); uvicorn's
    # access log would write ?client_token=… as it came.
    access = logging.getLogger("uvicorn.access")
    access.handlers[:] = []
    access.propagate = False
