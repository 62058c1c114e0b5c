"""API errors and the one envelope every response uses.

    ApiError                      -> {code, error, message, requestId, data: null, errors?}
      ├─ 400 validation_error / idempotency_key_reused / bad_request
      ├─ 401 unauthorized         (with WWW-Authenticate: Bearer)
      ├─ 403 forbidden
      ├─ 404 not_found
      ├─ 413 payload_too_large
      ├─ 429 rate_limited         (with Retry-After)
      ├─ 503 temporal_unavailable (the execution may exist; retry with the same key)
      └─ 503 database_unavailable (Tollway's database did not answer; retry)

``code`` is the HTTP status (an integer, as in the success envelope); ``error`` is the
machine-readable reason; ``errors`` names each bad field.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import structlog
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.request_id import current_request_id
from tollway.outage import DATABASE_DOWN

__all__ = ["DATABASE_DOWN"]


def database_unavailable() -> ApiError:
    return ApiError(
        503,
        "database_unavailable",
        "Tollway's database did not answer; nothing was changed. Retry shortly.",
        headers={"Retry-After": "2"},
    )


def temporal_unavailable() -> ApiError:
    return ApiError(
        503,
        "temporal_unavailable",
        "Temporal did not answer in time; retry shortly.",
        headers={"Retry-After": "1"},
    )


@dataclass
class FieldError:
    field: str
    message: str
    code: str | None = None

    def as_dict(self) -> dict[str, str]:
        out = {"field": self.field, "message": self.message}
        if self.code:
            out["code"] = self.code
        return out


@dataclass
class ApiError(Exception):
    status: int
    error: str
    message: str
    errors: list[FieldError] = field(default_factory=list)
    headers: dict[str, str] = field(default_factory=dict)


def bad_request(
    message: str, errors: list[FieldError], error: str = "validation_error"
) -> ApiError:
    return ApiError(400, error, message, errors)


def unauthorized(message: str = "A valid API token is required.") -> ApiError:
    return ApiError(401, "unauthorized", message, headers={"WWW-Authenticate": "Bearer"})


def forbidden(message: str) -> ApiError:
    return ApiError(403, "forbidden", message)


def not_found(message: str) -> ApiError:
    return ApiError(404, "not_found", message)


def envelope(status: int, message: str, data: Any = None, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"code": status, "data": data, "message": message}
    body.update(extra)
    body["requestId"] = current_request_id()
    return body


def error_response(exc: ApiError, extra_headers: dict[str, str] | None = None) -> JSONResponse:
    extra: dict[str, Any] = {"error": exc.error}
    if exc.errors:
        extra["errors"] = [e.as_dict() for e in exc.errors]
    return JSONResponse(
        envelope(exc.status, exc.message, **extra),
        status_code=exc.status,
        headers={**exc.headers, **(extra_headers or {})},
    )


async def handle_api_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    metrics = getattr(request.app.state, "metrics", None)
    if metrics is not None and 400 <= exc.status < 500:
        metrics.client_errors.labels(exc.error).inc()
    return error_response(exc, getattr(request.state, "response_headers", None))


class FaultMiddleware:
    """A real fault: logged with the request id (bound by the outer RequestIdMiddleware) and
    answered as a 500 in the usual envelope, with no internals in the body."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.log = structlog.get_logger("tollway.api")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception:
            self.log.exception(
                "unhandled error", path=scope.get("path"), method=scope.get("method")
            )
            if started:
                raise
            response = JSONResponse(
                envelope(
                    500, "Internal error; quote the request id when reporting it.", error="internal"
                ),
                status_code=500,
            )
            await response(scope, receive, send)
