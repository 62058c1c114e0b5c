"""What every HTTP request goes through, in one ASGI layer (each layer wraps ``send`` again,
and this sits on every request's hot path):

* a **request id**, taken from a sane incoming ``X-Request-ID`` or generated, echoed in the
  response's ``X-Request-ID`` and bound to every log line of the request (with the
  execution id when the path names one);
* **faults**: an unhandled exception is logged with that request id and answered as a 500 in
  the usual envelope, with no internals in the body;
* the **access log**: one line per request through the same logger as everything else, never
  with a credential (query values such as ``client_token`` are redacted), and the request
  metrics from the same measurement.
"""

from __future__ import annotations

import re
import secrets
import time
from urllib.parse import parse_qsl, urlencode

import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.errors import JsonResponse, envelope
from api.metrics import record_request
from api.request_id import request_id_var

REDACTED_PARAMS = frozenset({"client_token", "token", "access_token"})
_SANE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:\-]{0,127}$")
_EXECUTION = re.compile(r"^/(?:v1/public/executions|status)/(exe_[A-Za-z0-9]+)")
access_log = structlog.get_logger("tollway.access")
fault_log = structlog.get_logger("tollway.api")


def redacted_query(query: str) -> str:
    pairs = parse_qsl(query, keep_blank_values=True)
    return urlencode([(k, "[redacted]" if k.lower() in REDACTED_PARAMS else v) for k, v in pairs])


def _incoming_id(scope: Scope) -> str:
    for name, value in scope["headers"]:
        if name == b"x-request-id":
            incoming: str = value.decode("latin-1")
            return incoming if _SANE.match(incoming) else ""
    return ""


class RequestScopeMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        # secrets.token_hex(16): uuid4().hex's 32 hex digits, in a quarter of the time.
        request_id = _incoming_id(scope) or f"req_{secrets.token_hex(16)}"
        token = request_id_var.set(request_id)
        path: str = scope.get("path", "")
        found = _EXECUTION.match(path)
        context = {"requestId": request_id}
        if found:
            context["executionId"] = found.group(1)
        structlog.contextvars.bind_contextvars(**context)
        status = 0
        header = (b"x-request-id", request_id.encode("latin-1"))

        async def answering(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                message["headers"] = [*message.get("headers", ()), header]
            await send(message)

        try:
            try:
                await self.app(scope, receive, answering)
            except Exception:
                fault_log.exception("unhandled error", path=path, method=scope.get("method"))
                if status:
                    raise
                await _internal_error(scope, receive, answering)
        finally:
            seconds = time.perf_counter() - started
            answered = status or 500  # nothing sent: the server answers 500 for us
            record_request(scope, answered, seconds)
            query = scope.get("query_string", b"").decode("latin-1")
            access_log.info(
                "request",
                method=scope.get("method"),
                path=path,
                query=redacted_query(query) if query else None,
                status=answered,
                durationMs=round(seconds * 1000, 1),
            )
            structlog.contextvars.unbind_contextvars(*context)
            request_id_var.reset(token)


async def _internal_error(scope: Scope, receive: Receive, send: Send) -> None:
    response = JsonResponse(
        envelope(500, "Internal error; quote the request id when reporting it.", error="internal"),
        status_code=500,
    )
    await response(scope, receive, send)
