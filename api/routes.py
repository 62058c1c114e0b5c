"""HTTP handlers: authenticate, validate, make one service call, map errors to HTTP."""

from __future__ import annotations

import secrets

from starlette.requests import Request
from starlette.responses import JSONResponse

from api.access import authenticate, deps_of, ok, read_view, reader, settle_if_asked
from api.auth import bearer_token
from api.bodies import MAX_JSON_DEPTH, json_depth, load_json, parse_create_body, read_limited
from api.client_tokens import issue
from api.errors import ApiError, FieldError, bad_request, forbidden, not_found
from tollway.executions import (
    CreateCommand,
    TemporalUnavailable,
)
from tollway.views import full_view
from workflows.models import ExecutionRequest


async def create_execution(request: Request) -> JSONResponse:
    deps = deps_of(request)
    principal = await authenticate(request, "executions:create")
    workflow_id = request.path_params["id"]
    record = await deps.workflows.get(workflow_id)
    if record is None:
        raise not_found(f"Workflow {workflow_id!r} does not exist.")
    definition = record.definition
    own = record.organization_id == principal.organization_id
    if definition.access != "public_execute" and not own:
        raise forbidden(f"Workflow {workflow_id!r} is not open to public execution.")
    if not definition.enabled:
        raise forbidden(f"Workflow {workflow_id!r} is disabled.")

    raw = await read_limited(request, deps.settings.max_body_bytes)
    body, key = parse_create_body(raw, request.headers.get("idempotency-key"))
    generated = key is None
    key = key or f"idk_{secrets.token_urlsafe(24)}"
    command = CreateCommand(
        organization_id=principal.organization_id,
        initiated_by_id=principal.token_id,
        workflow=record,
        request=ExecutionRequest(**body.model_dump(exclude={"idempotencyKey"}), idempotencyKey=key),
        fingerprint=body.fingerprint(),
        notify=await deps.endpoints.any_for(principal.organization_id),
    )
    headers: dict[str, str] = request.state.response_headers
    try:
        outcome = await deps.service.create(command)
    except TemporalUnavailable as exc:
        hint = f" (key {key})" if generated else ""
        raise exc.advise(
            "The execution service did not answer in time. The execution may have been "
            f"created: retry with the same idempotency key{hint} to attach to it.",
            headers={"Idempotency-Key": key},
        ) from None
    view = outcome.view
    request.app.state.metrics.creates.labels("replayed" if outcome.replayed else "created").inc()
    if outcome.replayed:
        headers = {**headers, "Idempotent-Replayed": "true"}
    view, headers = await settle_if_asked(request, view, headers)
    token = issue(deps.client_token_secret, view.id, deps.settings.client_token_ttl_seconds)
    data = {"clientToken": token, "checkoutUrl": view.checkoutUrl, "execution": full_view(view)}
    return ok(data, headers)


async def get_execution(request: Request) -> JSONResponse:
    execution_id = request.path_params["executionId"]
    shape, headers = await reader(request, execution_id)
    view = await read_view(deps_of(request), execution_id)
    if view is None:
        raise not_found(f"Execution {execution_id!r} does not exist.")
    shaped = shape(view)  # authorization before any waiting
    settled, headers = await settle_if_asked(request, view, headers)
    return ok({"execution": shaped if settled is view else shape(settled)}, headers)


async def cancel_execution(request: Request) -> JSONResponse:
    deps = deps_of(request)
    principal = await authenticate(request, "executions:create")
    execution_id = request.path_params["executionId"]
    view = await read_view(deps, execution_id)
    if view is None or view.organizationId != principal.organization_id:
        raise not_found(f"Execution {execution_id!r} does not exist.")
    headers: dict[str, str] = request.state.response_headers
    try:
        cancelled = await deps.service.cancel(execution_id, f"api_token {principal.token_id}")
    except TemporalUnavailable as exc:
        raise exc.advise("The execution did not answer in time; retry the cancel.") from None
    await deps.watchers.publish(cancelled)
    return ok({"execution": full_view(cancelled)}, headers)


async def receive_callback(request: Request) -> JSONResponse:
    deps = deps_of(request)
    execution_id, step_id = request.path_params["executionId"], request.path_params["stepId"]
    request.state.response_headers = await deps.rate_limiter.hit(
        execution_id, deps.settings.callback_rate_limit, "callback", "this execution's callbacks"
    )
    token = bearer_token(request)
    if token is None:
        raise ApiError(
            401,
            "unauthorized",
            "The step's callback token is required.",
            headers={"WWW-Authenticate": "Bearer"},
        )
    raw = await read_limited(request, deps.settings.max_body_bytes)
    body = load_json(raw) if raw else None
    if json_depth(body, MAX_JSON_DEPTH) > MAX_JSON_DEPTH:
        raise bad_request(
            "Callback body nests too deeply.",
            [FieldError("body", f"must not nest deeper than {MAX_JSON_DEPTH} levels")],
        )
    try:
        delivered = await deps.service.callback(execution_id, step_id, token, body)
    except TemporalUnavailable as exc:
        raise exc.advise("Not delivered; retry the callback.") from None
    await deps.watchers.publish(delivered)
    return ok({"received": True}, request.state.response_headers)
