"""Tracking beyond the single view: the caller's list (from Temporal visibility) and the
Server-Sent Events stream of one execution."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from api.access import authenticate, deps_of, ok, read_view, reader
from api.auth import bearer_token
from api.bodies import has_control
from api.cursors import BadCursor, CursorSigner
from api.deps import client_address
from api.errors import FieldError, bad_request, not_found
from tollway.executions import QueryRejected, TemporalUnavailable
from workflows.models import ExecutionView, Status

EVENT_POLL_SECONDS = 0.5


async def stream_events(request: Request) -> Response:
    """Server-Sent Events: one ``execution`` event per change, until the execution ends.

    Keep-alive comments while nothing changes; after ``TOLLWAY_SSE_MAX_SECONDS`` a
    ``reconnect`` event ends the stream (the client reconnects, with ``Last-Event-ID``).
    Concurrent streams are capped per token and per client address. A client that goes away
    cancels the stream and its polling at once (Starlette watches for the disconnect)."""
    deps = deps_of(request)
    settings = deps.settings
    execution_id = request.path_params["executionId"]
    shape, headers = await reader(request, execution_id)
    first = await read_view(deps, execution_id)
    if first is None:
        raise not_found(f"Execution {execution_id!r} does not exist.")
    shape(first)  # authorization before the stream starts
    presented = bearer_token(request) or request.query_params.get("client_token") or ""
    token_key = hashlib.sha256(presented.encode()).hexdigest()
    freed = deps.streams.take(token_key, client_address(request))  # 429 when capped
    gauge = request.app.state.metrics.streams_open
    gauge.inc()

    def release() -> None:
        freed()
        gauge.dec()

    async def events() -> AsyncIterator[str]:
        loop = asyncio.get_running_loop()
        ends_at = loop.time() + settings.sse_max_seconds
        view: ExecutionView | None = first
        last_sent = None
        quiet = 0.0
        while view is not None:
            if view.updatedAt != last_sent:
                last_sent = view.updatedAt
                payload = json.dumps(shape(view), separators=(",", ":"))
                yield f"id: {view.updatedAt.isoformat()}\nevent: execution\ndata: {payload}\n\n"
                quiet = 0.0
                if view.status.terminal:
                    return
            elif quiet >= settings.sse_keepalive_seconds:
                yield ": keep-alive\n\n"
                quiet = 0.0
            if loop.time() >= ends_at:
                yield 'retry: 1000\nevent: reconnect\ndata: {"reason":"max_lifetime"}\n\n'
                return
            await asyncio.sleep(EVENT_POLL_SECONDS)
            quiet += EVENT_POLL_SECONDS
            try:
                view = await deps.service.view(execution_id)
            except TemporalUnavailable:
                continue

    return _HeldStream(
        release,
        events(),
        media_type="text/event-stream",
        headers={**headers, "Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


class _HeldStream(StreamingResponse):
    """A stream that gives its slot back however it ends (even before its first byte)."""

    def __init__(self, release: Callable[[], None], *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._release = release

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._release()


async def list_executions(request: Request) -> JSONResponse:
    deps = deps_of(request)
    principal = await authenticate(request, "executions:read")
    workflow_id = request.path_params["id"]
    if await deps.workflows.get(workflow_id) is None:
        raise not_found(f"Workflow {workflow_id!r} does not exist.")
    params = request.query_params
    errors: list[FieldError] = []
    unknown = sorted(set(params) - {"status", "sourceSystem", "externalRef", "limit", "cursor"})
    errors += [FieldError(name, "unknown query parameter") for name in unknown]
    status = params.get("status")
    if status is not None and status not in {s.value for s in Status}:
        errors.append(FieldError("status", f"must be one of {', '.join(s.value for s in Status)}"))
    limit_text = params.get("limit", "20")
    limit = int(limit_text) if limit_text.isdigit() else 0
    if not 1 <= limit <= 100:
        errors.append(FieldError("limit", "must be an integer from 1 to 100"))
    filters = {k: params[k] for k in ("status", "sourceSystem", "externalRef") if params.get(k)}
    errors += [
        FieldError(name, "must not contain control characters")
        for name, value in filters.items()
        if has_control(value)
    ]
    signer = CursorSigner(deps.client_token_secret)
    cursor: bytes | None = None
    if params.get("cursor"):
        try:
            cursor = signer.open(params["cursor"], principal.organization_id, workflow_id, filters)
        except BadCursor:
            errors.append(
                FieldError("cursor", "is not a cursor this API returned for these filters")
            )
    if errors:
        raise bad_request("Query parameters are invalid.", errors)
    try:
        items, next_token = await deps.service.list_executions(
            principal.organization_id, workflow_id, filters, limit, cursor
        )
    except QueryRejected as rejected:
        raise QueryRejected(str(rejected), field="query") from None
    next_cursor = (
        signer.issue(next_token, principal.organization_id, workflow_id, filters)
        if next_token
        else None
    )
    return ok(
        {"executions": items, "nextCursor": next_cursor, "hasMore": next_cursor is not None},
        request.state.response_headers,
    )
