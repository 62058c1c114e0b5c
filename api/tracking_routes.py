"""Tracking beyond the single view: the caller's list (from Temporal visibility) and the
Server-Sent Events stream of one execution."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from typing import Any

from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import Receive, Scope, Send

from api.access import authenticate, client_token_of, deps_of, ok, read_view, reader
from api.auth import bearer_token
from api.bodies import has_control
from api.cursors import BadCursor, CursorSigner
from api.deps import client_address
from api.errors import FieldError, bad_request, not_found
from api.watch import event_id
from tollway.executions import QueryRejected
from workflows import search_attributes as sa
from workflows.models import PaymentStatus, Status


async def stream_events(request: Request) -> Response:
    """Server-Sent Events: the current state first, then one ``execution`` event per change,
    until the execution ends. Each event's ``id`` orders the changes; a client that reconnects
    with ``Last-Event-ID`` gets only a state it has not seen (the current one, if newer).

    Every stream on an execution in this process is fed by one shared watcher
    (``api.watch``). Keep-alive comments while nothing changes; after
    ``TOLLWAY_SSE_MAX_SECONDS`` a ``reconnect`` event ends the stream. Concurrent streams are
    capped per token and per client address; a client that goes away frees its slot and its
    share of the watcher at once."""
    deps = deps_of(request)
    settings = deps.settings
    execution_id = request.path_params["executionId"]
    shape, headers = await reader(request, execution_id)
    first = await read_view(deps, execution_id)
    if first is None:
        raise not_found(f"Execution {execution_id!r} does not exist.")
    shape(first)  # authorization before the stream starts
    seen = _last_event_id(request)
    presented = bearer_token(request) or client_token_of(request, execution_id) or ""
    token_key = hashlib.sha256(presented.encode()).hexdigest()
    freed = deps.streams.take(token_key, client_address(request))  # 429 when capped
    watch = deps.watchers.join(execution_id)
    gauge = request.app.state.metrics.streams_open
    gauge.inc()

    def release() -> None:
        freed()
        deps.watchers.leave(watch)
        gauge.dec()

    async def events() -> AsyncIterator[ServerSentEvent]:
        await watch.offer(first)
        loop = asyncio.get_running_loop()
        ends_at = loop.time() + settings.sse_max_seconds
        sent = seen
        while True:
            version, view = watch.version, watch.latest or first
            number = event_id(view)
            if sent is None or number > sent:
                sent = number
                data = json.dumps(shape(view), separators=(",", ":"))
                yield ServerSentEvent(data, event="execution", id=str(number), sep="\n")
            if view.status.terminal:
                return
            left = ends_at - loop.time()
            if left <= 0 or not await watch.changed(version, left):
                yield ServerSentEvent(
                    '{"reason":"max_lifetime"}', event="reconnect", retry=1000, sep="\n"
                )
                return

    return _HeldStream(
        release,
        events(),
        sep="\n",
        ping=settings.sse_keepalive_seconds,
        ping_message_factory=lambda: ServerSentEvent(comment="keep-alive", sep="\n"),
        headers={**headers, "Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


def _last_event_id(request: Request) -> int | None:
    """``Last-Event-ID`` (or ``?lastEventId=``, for clients that cannot set headers); an id
    that is not one of ours counts as none."""
    raw = request.headers.get("last-event-id") or request.query_params.get("lastEventId")
    return int(raw) if raw and raw.isdigit() and len(raw) < 20 else None


class _HeldStream(EventSourceResponse):
    """A stream that gives its slot and its watcher share back however it ends (even before
    its first byte, or when the client goes away)."""

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
    known = {*sa.FILTERS, "createdAfter", "createdBefore", "limit", "cursor"}
    errors += [FieldError(name, "unknown query parameter") for name in sorted(set(params) - known)]
    for name, kind in (("status", Status), ("paymentStatus", PaymentStatus)):
        value = params.get(name)
        if value is not None and value not in {s.value for s in kind}:
            errors.append(FieldError(name, f"must be one of {', '.join(s.value for s in kind)}"))
    limit_text = params.get("limit", "20")
    limit = int(limit_text) if limit_text.isdigit() else 0
    if not 1 <= limit <= 100:
        errors.append(FieldError("limit", "must be an integer from 1 to 100"))
    filters = {k: params[k] for k in sa.FILTERS if params.get(k)}
    errors += [
        FieldError(name, "must not contain control characters")
        for name, value in filters.items()
        if has_control(value)
    ]
    created = {name: _instant(params.get(name), name, errors) for name in _RANGE}
    after, before = created["createdAfter"], created["createdBefore"]
    if after is not None and before is not None and after >= before:
        errors.append(FieldError("createdBefore", "must be later than createdAfter"))
    # The cursor is bound to every filter, the range included.
    signed = {**filters, **{k: params[k] for k in _RANGE if k in params}}
    signer = CursorSigner(deps.client_token_secret)
    cursor: bytes | None = None
    if params.get("cursor"):
        try:
            cursor = signer.open(params["cursor"], principal.organization_id, workflow_id, signed)
        except BadCursor:
            errors.append(
                FieldError("cursor", "is not a cursor this API returned for these filters")
            )
    if errors:
        raise bad_request("Query parameters are invalid.", errors)
    try:
        items, next_token = await deps.service.list_executions(
            principal.organization_id, workflow_id, filters, limit, cursor, after, before
        )
    except QueryRejected as rejected:
        field = rejected.field if rejected.field == "cursor" else "query"
        raise QueryRejected(str(rejected), field=field) from None
    next_cursor = (
        signer.issue(next_token, principal.organization_id, workflow_id, signed)
        if next_token
        else None
    )
    return ok(
        {"executions": items, "nextCursor": next_cursor, "hasMore": next_cursor is not None},
        request.state.response_headers,
    )


_RANGE = ("createdAfter", "createdBefore")


def _instant(text: str | None, name: str, errors: list[FieldError]) -> datetime | None:
    """An RFC 3339 timestamp with its offset (``2026-12-01T10:00:00Z``)."""
    if text is None:
        return None
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        value = None
    if value is None or value.tzinfo is None:
        errors.append(FieldError(name, "must be an RFC 3339 timestamp with an offset"))
        return None
    return value
