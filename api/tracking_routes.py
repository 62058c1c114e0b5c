"""Tracking beyond the single view: the caller's list (from Temporal visibility) and the
Server-Sent Events stream of one execution."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from api.cursors import BadCursor, CursorSigner
from api.errors import ApiError, FieldError, bad_request, not_found
from api.routes import _authenticate, _deps, _ok, _reader, _view_or_unavailable
from api.service import QueryRejected, TemporalUnavailable
from workflows.models import ExecutionView, Status

EVENT_POLL_SECONDS = 0.5


async def stream_events(request: Request) -> Response:
    """Server-Sent Events: one ``execution`` event per change, until the execution ends."""
    deps = _deps(request)
    execution_id = request.path_params["executionId"]
    shape, headers = await _reader(request, execution_id)
    first = await _view_or_unavailable(deps, execution_id)
    if first is None:
        raise not_found(f"Execution {execution_id!r} does not exist.")
    shape(first)  # authorization before the stream starts

    async def events() -> AsyncIterator[str]:
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
            elif quiet >= 15:
                yield ": keep-alive\n\n"
                quiet = 0.0
            await asyncio.sleep(EVENT_POLL_SECONDS)
            quiet += EVENT_POLL_SECONDS
            try:
                view = await deps.service.view(execution_id)
            except TemporalUnavailable:
                continue

    return StreamingResponse(
        events(),
        media_type="text/event-stream",
        headers={**headers, "Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


async def list_executions(request: Request) -> JSONResponse:
    deps = _deps(request)
    principal = await _authenticate(request, "executions:read")
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
    except TemporalUnavailable:
        raise ApiError(503, "temporal_unavailable", "Temporal did not answer in time.") from None
    except QueryRejected as rejected:
        raise bad_request(
            "Temporal refused the query these parameters make.",
            [FieldError("query", str(rejected))],
        ) from None
    next_cursor = (
        signer.issue(next_token, principal.organization_id, workflow_id, filters)
        if next_token
        else None
    )
    return _ok(
        {"executions": items, "nextCursor": next_cursor, "hasMore": next_cursor is not None},
        request.state.response_headers,
    )
