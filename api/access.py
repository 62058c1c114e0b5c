"""What every handler asks before it acts, in one place: this app's dependencies, who is
calling (API token with a scope, or an execution's client token) and the rate limits that
apply to them, and reading a view with Temporal's unavailability answered as a 503."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse

from api.auth import Principal, bearer_token
from api.client_tokens import PREFIX as CLIENT_TOKEN_PREFIX
from api.client_tokens import verify
from api.deps import Deps
from api.errors import ApiError, JsonResponse, envelope, forbidden, not_found
from tollway.executions import TemporalUnavailable
from tollway.views import client_view, full_view
from workflows.models import ExecutionView


def client_token_cookie(execution_id: str) -> str:
    """The cookie the payer's status page keeps the execution's client token in."""
    return f"tw_ct_{execution_id}"


def client_token_of(request: Request, execution_id: str) -> str | None:
    """A client token given as ``?client_token=`` (browsers, EventSource) or in the status
    page's cookie for this execution."""
    return request.query_params.get("client_token") or request.cookies.get(
        client_token_cookie(execution_id)
    )


def deps_of(request: Request) -> Deps:
    deps: Deps = request.app.state.deps
    return deps


async def limit_client(request: Request, execution_id: str) -> dict[str, str]:
    """Count a client-token read against its execution's limit (429 when spent): per
    execution, so handing out more client tokens (replays) buys no more reads."""
    deps = deps_of(request)
    headers = await deps.rate_limiter.hit(
        execution_id, deps.settings.client_rate_limit, "client", "this execution's client"
    )
    request.state.response_headers = headers
    return headers


async def authenticate(request: Request, scope: str) -> Principal:
    deps = deps_of(request)
    principal = await deps.tokens.require(request)
    request.state.response_headers = await deps.rate_limiter.hit(
        principal.token_id, principal.rate_limit
    )
    if scope not in principal.scopes:
        raise forbidden(f"This API token lacks the {scope!r} scope.")
    return principal


def ok(data: Any, headers: dict[str, str]) -> JSONResponse:
    return JsonResponse(envelope(200, "success", data), headers=headers)


Shape = Callable[[ExecutionView], dict[str, Any]]


async def reader(request: Request, execution_id: str) -> tuple[Shape, dict[str, str]]:
    """Who may read this execution, and how much: the creating organization's API token
    (full view) or the execution's own client token (client-safe view)."""
    deps = deps_of(request)
    presented = bearer_token(request) or client_token_of(request, execution_id)
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
        headers = await limit_client(request, execution_id)
        return client_view, headers
    principal = await authenticate(request, "executions:read")

    def owned(view: ExecutionView) -> dict[str, Any]:
        if view.organizationId != principal.organization_id:
            raise not_found(f"Execution {execution_id!r} does not exist.")
        return full_view(view)

    return owned, request.state.response_headers


async def read_view(deps: Deps, execution_id: str) -> ExecutionView | None:
    try:
        return await deps.service.view(execution_id)
    except TemporalUnavailable as exc:
        raise exc.advise("Temporal did not answer in time.") from None


MAX_WAIT_SECONDS = 60


def preferred_wait(request: Request) -> int | None:
    """``Prefer: wait=N`` (RFC 7240), capped at 60 s; None when not asked for. A preference
    that is not understood is ignored, as the RFC says."""
    for header in request.headers.getlist("prefer"):
        for preference in header.split(","):
            name, _, value = preference.strip().partition("=")
            value = value.split(";")[0].strip().strip('"')
            if name.strip().lower() == "wait" and value.isdigit() and len(value) < 6:
                return min(int(value), MAX_WAIT_SECONDS)
    return None


async def settle_if_asked(
    request: Request, view: ExecutionView, headers: dict[str, str]
) -> tuple[ExecutionView, dict[str, str]]:
    """Hold the answer while ``Prefer: wait`` asks, until the execution is settled (ended, or
    waiting on the outside world). Fed by the shared watcher: no poll loop per caller, and
    nothing added to the workflow's history."""
    wait = preferred_wait(request)
    if wait is None:
        return view, headers
    view = await deps_of(request).watchers.wait_settled(view, wait)
    return view, {**headers, "Preference-Applied": f"wait={wait}", "Vary": "Prefer"}
