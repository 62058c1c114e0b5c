"""HTTP handlers: authenticate, validate, make one service call, map errors to HTTP."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse

from api.auth import Principal, bearer_token
from api.bodies import MAX_JSON_DEPTH, json_depth, load_json, parse_create_body, read_limited
from api.client_tokens import PREFIX as CLIENT_TOKEN_PREFIX
from api.client_tokens import issue, verify
from api.deps import Deps
from api.errors import ApiError, FieldError, bad_request, envelope, forbidden, not_found
from api.service import (
    AlreadyTerminal,
    CallbackRefused,
    CreateCommand,
    IdempotencyKeyReused,
    TemporalUnavailable,
)
from api.views import client_view, full_view
from workflows.models import ExecutionRequest, ExecutionView


def _deps(request: Request) -> Deps:
    deps: Deps = request.app.state.deps
    return deps


async def _authenticate(request: Request, scope: str) -> Principal:
    deps = _deps(request)
    principal = await deps.tokens.require(request)
    request.state.response_headers = await deps.rate_limiter.hit(
        principal.token_id, principal.rate_limit
    )
    if scope not in principal.scopes:
        raise forbidden(f"This API token lacks the {scope!r} scope.")
    return principal


def _ok(data: Any, headers: dict[str, str]) -> JSONResponse:
    return JSONResponse(envelope(200, "success", data), headers=headers)


async def create_execution(request: Request) -> JSONResponse:
    deps = _deps(request)
    principal = await _authenticate(request, "executions:create")
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
    )
    headers: dict[str, str] = request.state.response_headers
    try:
        outcome = await deps.service.create(command)
    except IdempotencyKeyReused:
        raise bad_request(
            "This idempotency key was already used with a different request.",
            [
                FieldError(
                    "idempotencyKey",
                    "already used with a different request",
                    "idempotency_key_reused",
                )
            ],
            error="idempotency_key_reused",
        ) from None
    except TemporalUnavailable:
        hint = f" (key {key})" if generated else ""
        raise ApiError(
            503,
            "temporal_unavailable",
            "The execution service did not answer in time. The execution may have been "
            f"created: retry with the same idempotency key{hint} to attach to it.",
            headers={"Idempotency-Key": key, "Retry-After": "1"},
        ) from None
    view = outcome.view
    request.app.state.metrics.creates.labels("replayed" if outcome.replayed else "created").inc()
    if outcome.replayed:
        headers = {**headers, "Idempotent-Replayed": "true"}
    token = issue(deps.client_token_secret, view.id, deps.settings.client_token_ttl_seconds)
    data = {"clientToken": token, "checkoutUrl": view.checkoutUrl, "execution": full_view(view)}
    return _ok(data, headers)


Shape = Callable[[ExecutionView], dict[str, Any]]


async def _reader(request: Request, execution_id: str) -> tuple[Shape, dict[str, str]]:
    """Who may read this execution, and how much: the creating organization's API token
    (full view) or the execution's own client token (client-safe view)."""
    deps = _deps(request)
    presented = bearer_token(request) or request.query_params.get("client_token")
    if presented and presented.startswith(CLIENT_TOKEN_PREFIX):
        opens = verify(deps.client_token_secret, presented)
        if opens is None:
            raise ApiError(
                401,
                "unauthorized",
                "The client token is not valid or has expired.",
                headers={"WWW-Authenticate": "Bearer"},
            )
        if opens != execution_id:
            raise not_found(f"Execution {execution_id!r} does not exist.")
        # Per execution, so handing out more client tokens (replays) buys no more reads.
        headers = await deps.rate_limiter.hit(
            execution_id, deps.settings.client_rate_limit, "client", "this execution's client"
        )
        request.state.response_headers = headers
        return client_view, headers
    principal = await _authenticate(request, "executions:read")

    def owned(view: ExecutionView) -> dict[str, Any]:
        if view.organizationId != principal.organization_id:
            raise not_found(f"Execution {execution_id!r} does not exist.")
        return full_view(view)

    return owned, request.state.response_headers


async def get_execution(request: Request) -> JSONResponse:
    execution_id = request.path_params["executionId"]
    shape, headers = await _reader(request, execution_id)
    view = await _view_or_unavailable(_deps(request), execution_id)
    if view is None:
        raise not_found(f"Execution {execution_id!r} does not exist.")
    return _ok({"execution": shape(view)}, headers)


async def _view_or_unavailable(deps: Deps, execution_id: str) -> ExecutionView | None:
    try:
        return await deps.service.view(execution_id)
    except TemporalUnavailable:
        raise ApiError(503, "temporal_unavailable", "Temporal did not answer in time.") from None


async def cancel_execution(request: Request) -> JSONResponse:
    deps = _deps(request)
    principal = await _authenticate(request, "executions:create")
    execution_id = request.path_params["executionId"]
    view = await _view_or_unavailable(deps, execution_id)
    if view is None or view.organizationId != principal.organization_id:
        raise not_found(f"Execution {execution_id!r} does not exist.")
    headers: dict[str, str] = request.state.response_headers
    try:
        cancelled = await deps.service.cancel(execution_id, f"api_token {principal.token_id}")
    except AlreadyTerminal as ended:
        return JSONResponse(
            envelope(
                409,
                f"Execution already ended: {ended.view.status.value}.",
                {"execution": full_view(ended.view)},
                error="already_terminal",
            ),
            status_code=409,
            headers=headers,
        )
    except TemporalUnavailable:
        raise ApiError(
            503, "temporal_unavailable", "The execution did not answer in time; retry the cancel."
        ) from None
    return _ok({"execution": full_view(cancelled)}, headers)


_CALLBACK_REFUSALS = {
    "UnknownCallback": (404, "not_found", "This execution has no such callback."),
    "BadCallbackToken": (401, "unauthorized", "The callback token is not valid."),
    "CallbackClosed": (409, "callback_closed", "This callback is no longer awaited."),
}


async def receive_callback(request: Request) -> JSONResponse:
    deps = _deps(request)
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
        await deps.service.callback(execution_id, step_id, token, body)
    except CallbackRefused as refused:
        status, error, message = _CALLBACK_REFUSALS.get(
            refused.reason, (409, "callback_closed", "This callback is no longer awaited.")
        )
        headers = {"WWW-Authenticate": "Bearer"} if status == 401 else {}
        raise ApiError(status, error, message, headers=headers) from None
    except TemporalUnavailable:
        raise ApiError(503, "temporal_unavailable", "Not delivered; retry the callback.") from None
    return _ok({"received": True}, request.state.response_headers)
