"""The access log: one line per request through the same logger as everything else, with its
request id (and execution id when the path names one), and never a credential: query values
such as ``client_token`` are redacted before anything is logged. The same measurement feeds
the request metrics."""

from __future__ import annotations

import re
import time
from urllib.parse import parse_qsl, urlencode

import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.metrics import record_request

REDACTED_PARAMS = frozenset({"client_token", "token", "access_token"})
_EXECUTION = re.compile(r"^/(?:v1/public/executions|status)/(exe_[A-Za-z0-9]+)")
log = structlog.get_logger("tollway.access")


def redacted_query(query: str) -> str:
    pairs = parse_qsl(query, keep_blank_values=True)
    return urlencode([(k, "[redacted]" if k.lower() in REDACTED_PARAMS else v) for k, v in pairs])


class AccessLogMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500
        path: str = scope.get("path", "")
        found = _EXECUTION.match(path)
        if found:
            structlog.contextvars.bind_contextvars(executionId=found.group(1))

        async def recording_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, recording_send)
        finally:
            seconds = time.perf_counter() - started
            record_request(scope, status, seconds)
            query = scope.get("query_string", b"").decode("latin-1")
            log.info(
                "request",
                method=scope.get("method"),
                path=path,
                query=redacted_query(query) if query else None,
                status=status,
                durationMs=round(seconds * 1000, 1),
            )
            if found:
                structlog.contextvars.unbind_contextvars("executionId")
