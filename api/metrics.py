"""Prometheus metrics of the API, served at ``GET /metrics`` (restrict it at the proxy).

One registry per app: requests and latency by route template and status, creates and replays,
client errors by reason, payment webhooks by outcome, open event streams.
"""

from __future__ import annotations

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match
from starlette.types import ASGIApp, Scope


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        # The request counter's and latency histogram's children by (route, method, status).
        self.answered: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}
        self.requests = Counter(
            "tollway_http_requests",
            "HTTP requests by route template, method and status.",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "tollway_http_request_duration_seconds",
            "HTTP request latency by route template and method.",
            ["route", "method"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=self.registry,
        )
        self.creates = Counter(
            "tollway_creates",
            "Execution creates answered, by outcome (created, replayed).",
            ["outcome"],
            registry=self.registry,
        )
        self.client_errors = Counter(
            "tollway_client_errors",
            "4xx answers by machine-readable reason.",
            ["reason"],
            registry=self.registry,
        )
        self.webhooks = Counter(
            "tollway_payment_webhooks",
            "Payment webhooks by provider and outcome.",
            ["provider", "outcome"],
            registry=self.registry,
        )
        self.streams_open = Gauge(
            "tollway_sse_streams_open", "Event streams open now.", registry=self.registry
        )
        self.temporal_calls = Counter(
            "tollway_temporal_calls",
            "Calls this API made to Temporal, by kind (start_update_with_start_workflow, "
            "query_workflow, start_workflow_update, describe_workflow, ...).",
            ["call"],
            registry=self.registry,
        )
        self.cache_loads = Counter(
            "tollway_cache_loads",
            "Reads of the API's own database behind its caches, by cache (tokens, workflows, "
            "endpoints): one per key per refresh, however many requests wait on it.",
            ["cache"],
            registry=self.registry,
        )
        self.watch_polls = Counter(
            "tollway_watch_polls",
            "Views read by the shared execution watchers (one loop per watched execution, "
            "whatever the number of streams and waiting callers on it).",
            registry=self.registry,
        )


def _route(app: ASGIApp, scope: Scope) -> str:
    """The route template that answered: the router leaves it in the scope; matched again
    only for answers given before routing (a 404, a middleware's own answer)."""
    answered = scope.get("route")
    if answered is not None and hasattr(answered, "path"):
        return str(answered.path)
    for route in getattr(app, "routes", []):
        match, _ = route.matches(scope)
        if match == Match.FULL:
            return str(getattr(route, "path", "other"))
    return "unmatched"


def record_request(scope: Scope, status: int, seconds: float) -> None:
    """Count one answered request (called by the access log, which times it already)."""
    metrics: Metrics | None = getattr(scope["app"].state, "metrics", None)
    if metrics is not None:
        route, method = _route(scope["app"].router, scope), scope.get("method", "")
        key = (route, method, status)
        children = metrics.answered.get(key)
        if children is None:  # labels() takes a lock and builds its key on every call
            children = metrics.answered[key] = (
                metrics.requests.labels(route, method, str(status)),
                metrics.latency.labels(route, method),
            )
        children[0].inc()
        children[1].observe(seconds)


async def metrics_endpoint(request: Request) -> Response:
    metrics: Metrics = request.app.state.metrics
    return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)
