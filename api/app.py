"""The Starlette application factory."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import structlog
from sqlalchemy import Engine
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from api import (
    checkout_page,
    codec_routes,
    docs_page,
    health,
    routes,
    status_page,
    tracking_routes,
    webhooks,
)
from api.auth import TokenResolver
from api.deps import Deps, EndpointDirectory, WorkflowCatalog
from api.errors import (
    DATABASE_DOWN,
    ApiError,
    JsonResponse,
    database_unavailable,
    envelope,
    error_response,
    handle_api_error,
    handle_service_error,
    temporal_unavailable,
)
from api.metrics import Metrics, metrics_endpoint
from api.payment_events import PaymentEventProcessor
from api.ratelimit import RateLimiter
from api.request_scope import RequestScopeMiddleware
from api.streams import StreamSlots
from api.watch import Watchers
from tollway.db import make_engine
from tollway.executions import ExecutionService, ServiceError
from tollway.ledger import OrderLedger
from tollway.local_bank import LocalBank
from tollway.logging import configure_logging
from tollway.migrate import require_current
from tollway.settings import Settings, get_settings
from tollway.temporal import connect
from tollway.temporal_calls import CallCounter

log = structlog.get_logger("tollway.api")

_REASONS = {404: "not_found", 405: "method_not_allowed"}


def build_deps(
    settings: Settings, client: Client, engine: Engine, metrics: Metrics | None = None
) -> Deps:
    service = ExecutionService(
        client,
        settings.task_queue,
        request_deadline=settings.request_deadline_seconds,
        query_timeout=settings.query_timeout_seconds,
        public_base_url=settings.public_base_url,
        ledger=OrderLedger(engine),
    )
    polls = metrics.watch_polls.inc if metrics is not None else None

    def loads(cache: str) -> Callable[[], None] | None:
        return metrics.cache_loads.labels(cache).inc if metrics is not None else None

    watchers = Watchers(service, on_poll=polls)
    return Deps(
        settings=settings,
        engine=engine,
        service=service,
        tokens=TokenResolver(
            engine,
            settings.auth_cache_seconds,
            stale=settings.auth_stale_seconds,
            on_load=loads("tokens"),
        ),
        workflows=WorkflowCatalog(
            engine,
            settings.auth_cache_seconds,
            stale=settings.auth_stale_seconds,
            on_load=loads("workflows"),
        ),
        rate_limiter=RateLimiter(settings.rate_limit_storage),
        ledger=OrderLedger(engine),
        payments=PaymentEventProcessor(
            client,
            engine,
            settings.task_queue,
            settings.request_deadline_seconds,
            livemode=settings.payment_provider == "stripe" and settings.stripe_livemode,
            on_view=watchers.publish,
        ),
        local_bank=LocalBank(engine),
        streams=StreamSlots(
            settings.sse_max_streams_per_token, settings.sse_max_streams_per_address
        ),
        watchers=watchers,
        endpoints=EndpointDirectory(engine, settings.auth_cache_seconds, loads("endpoints")),
    )


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    return JsonResponse(
        envelope(exc.status_code, str(exc.detail), error=_REASONS.get(exc.status_code, "error")),
        status_code=exc.status_code,
        headers=exc.headers,
    )


async def _dependency_down(request: Request, exc: Exception) -> JSONResponse:
    """A dependency that does not answer is a 503 with Retry-After, never a 500."""
    if isinstance(exc, RPCError):
        if exc.status not in {RPCStatusCode.UNAVAILABLE, RPCStatusCode.DEADLINE_EXCEEDED}:
            raise exc
        error = temporal_unavailable()
    else:
        error = database_unavailable()
    log.warning("dependency unavailable", error=error.error, path=request.url.path)
    return error_response(error, getattr(request.state, "response_headers", None))


def _by_method(**handlers: Callable[[Request], Awaitable[Response]]) -> Callable[..., Any]:
    """One route for a path with several methods, so a 405 lists them all in ``Allow``
    (two routes on one path answer with the first one's methods only)."""
    handlers.setdefault("HEAD", handlers["GET"])

    async def endpoint(request: Request) -> Response:
        return await handlers[request.method](request)

    return endpoint


def create_app(settings: Settings | None = None, deps: Deps | None = None) -> Starlette:
    """Build the app. Tests hand in ``deps`` (their Temporal client and engine); otherwise
    the lifespan connects with ``settings``."""
    settings = settings or get_settings()
    if deps is None:
        settings.require("api")  # a clear SettingsError before any connection is made

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if deps is not None:
            app.state.deps = deps
            yield
            return
        engine = make_engine(settings.database_url)
        require_current(engine)  # tables are made by `tollway migrate`, never here
        calls = app.state.metrics.temporal_calls
        client = await connect(
            settings, interceptors=[CallCounter(lambda c: calls.labels(c).inc())]
        )
        app.state.deps = build_deps(settings, client, engine, app.state.metrics)
        log.info("api started", temporal=settings.temporal_address)
        yield
        engine.dispose()

    app = Starlette(
        routes=[
            # The public API's hot routes first: each request is matched against the routes
            # in order (a view of an execution had matched seven before its own).
            Route("/v1/public/executions/{executionId}", routes.get_execution, methods=["GET"]),
            Route(
                "/v1/public/workflows/{id}/executions",
                _by_method(GET=tracking_routes.list_executions, POST=routes.create_execution),
                methods=["GET", "POST"],
            ),
            Route(
                "/v1/public/executions/{executionId}/events",
                tracking_routes.stream_events,
                methods=["GET"],
            ),
            Route(
                "/v1/public/executions/{executionId}/cancel",
                routes.cancel_execution,
                methods=["POST"],
            ),
            Route(
                "/v1/public/executions/{executionId}/callbacks/{stepId}",
                routes.receive_callback,
                methods=["POST"],
            ),
            Route(
                "/v1/webhooks/payments/{provider}",
                webhooks.receive_payment_event,
                methods=["POST"],
            ),
            Route("/healthz", health.healthz),
            Route("/readyz", health.readyz),
            Route("/metrics", metrics_endpoint),
            Route("/openapi.json", docs_page.openapi_json),
            Route("/docs", docs_page.docs),
            *(checkout_page.routes() if settings.payment_provider == "local" else []),
            *codec_routes.routes(),
            *status_page.routes(),
        ],
        middleware=[Middleware(RequestScopeMiddleware)],
        exception_handlers={
            ApiError: handle_api_error,
            HTTPException: _http_error,
            ServiceError: handle_service_error,
            RPCError: _dependency_down,
            **dict.fromkeys(DATABASE_DOWN, _dependency_down),
        },
        lifespan=lifespan,
    )
    if deps is not None:
        app.state.deps = deps
    app.state.metrics = Metrics()
    return app


def serve_app() -> Starlette:
    """The factory uvicorn runs (``tollway api``, ``tollway dev``): the process's logging set
    up, then the app. Tests call :func:`create_app` and keep their own logging."""
    configure_logging()
    return create_app()
