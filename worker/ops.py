"""The worker's operations port: ``/metrics`` (the Temporal SDK's runtime metrics, Tollway's
own worker metrics among them), ``/healthz`` and ``/readyz`` (database and Temporal, each
named), on ``TOLLWAY_WORKER_METRICS_PORT``.

The SDK exports Prometheus from its core on an internal loopback port; this server answers
the public one and passes ``/metrics`` through, so one port serves all three.
"""

from __future__ import annotations

import socket

import httpx
import uvicorn
from sqlalchemy import Engine
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from temporalio.client import Client
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig

from tollway.readiness import DEADLINE_SECONDS, readiness


def free_loopback_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def metrics_runtime(internal_port: int) -> Runtime:
    return Runtime(
        telemetry=TelemetryConfig(
            metrics=PrometheusConfig(
                bind_address=f"127.0.0.1:{internal_port}", counters_total_suffix=True
            )
        )
    )


def ops_app(engine: Engine, client: Client, internal_port: int) -> Starlette:
    async def metrics(request: Request) -> Response:
        async with httpx.AsyncClient(timeout=DEADLINE_SECONDS) as http:
            exported = await http.get(f"http://127.0.0.1:{internal_port}/metrics")
        return Response(exported.content, media_type="text/plain; version=0.0.4")

    async def healthz(request: Request) -> PlainTextResponse:
        return PlainTextResponse("ok")

    async def readyz(request: Request) -> JSONResponse:
        status, body = await readiness(engine, client)
        return JSONResponse(body, status_code=status)

    return Starlette(
        routes=[Route("/metrics", metrics), Route("/healthz", healthz), Route("/readyz", readyz)]
    )


def ops_server(app: Starlette, host: str, port: int) -> uvicorn.Server:
    config = uvicorn.Config(
        app, host=host, port=port, log_config=None, access_log=False, lifespan="off"
    )
    return uvicorn.Server(config)
