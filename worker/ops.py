"""The worker's operations port: ``/metrics`` (the Temporal SDK's runtime metrics, Tollway's
own worker metrics among them), ``/healthz`` and ``/readyz`` (database and Temporal, each
named), on ``TOLLWAY_WORKER_METRICS_PORT``.

The SDK exports Prometheus from its core on an internal loopback port; this server answers
the public one and passes ``/metrics`` through, so one port serves all three.
"""

from __future__ import annotations

import asyncio
import socket
from datetime import timedelta

import anyio.to_thread
import httpx
import uvicorn
from sqlalchemy import Engine, text
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from temporalio.client import Client
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig

DEADLINE_SECONDS = 2.0


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

    def select_one() -> None:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))

    async def database() -> str:
        try:
            async with asyncio.timeout(DEADLINE_SECONDS):
                await anyio.to_thread.run_sync(select_one, abandon_on_cancel=True)
        except Exception as exc:  # noqa: BLE001 - any failure is "not ready"; say which
            return f"unavailable ({type(exc).__name__})"
        return "ok"

    async def temporal() -> str:
        try:
            healthy = await client.service_client.check_health(
                timeout=timedelta(seconds=DEADLINE_SECONDS)
            )
        except Exception as exc:  # noqa: BLE001
            return f"unavailable ({type(exc).__name__})"
        return "ok" if healthy else "unavailable (not serving)"

    async def readyz(request: Request) -> JSONResponse:
        database_state, temporal_state = await asyncio.gather(database(), temporal())
        checks = {"database": database_state, "temporal": temporal_state}
        down = [name for name, state in checks.items() if state != "ok"]
        return JSONResponse(
            {
                "status": "unavailable" if down else "ready",
                "message": f"unavailable: {', '.join(down)}" if down else "ready",
                "checks": checks,
            },
            status_code=503 if down else 200,
        )

    return Starlette(
        routes=[Route("/metrics", metrics), Route("/healthz", healthz), Route("/readyz", readyz)]
    )


def ops_server(app: Starlette, host: str, port: int) -> uvicorn.Server:
    config = uvicorn.Config(
        app, host=host, port=port, log_config=None, access_log=False, lifespan="off"
    )
    return uvicorn.Server(config)
