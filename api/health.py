"""``/healthz`` (the process answers) and ``/readyz`` (its dependencies answer, each named)."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import anyio.to_thread
from sqlalchemy import text
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse

from api.deps import Deps

DEADLINE_SECONDS = 2.0


async def healthz(request: Request) -> PlainTextResponse:
    return PlainTextResponse("ok")


def _select_one(deps: Deps) -> None:
    with deps.engine.connect() as connection:
        connection.execute(text("SELECT 1"))


async def _database(deps: Deps) -> str:
    try:
        async with asyncio.timeout(DEADLINE_SECONDS):
            await anyio.to_thread.run_sync(_select_one, deps, abandon_on_cancel=True)
    except Exception as exc:  # noqa: BLE001 - any failure means "not ready"; say which
        return f"unavailable ({type(exc).__name__})"
    return "ok"


async def _temporal(deps: Deps) -> str:
    try:
        healthy = await deps.service.client.service_client.check_health(
            timeout=timedelta(seconds=DEADLINE_SECONDS)
        )
    except Exception as exc:  # noqa: BLE001
        return f"unavailable ({type(exc).__name__})"
    return "ok" if healthy else "unavailable (not serving)"


async def readyz(request: Request) -> JSONResponse:
    deps: Deps = request.app.state.deps
    database, temporal = await asyncio.gather(_database(deps), _temporal(deps))
    checks = {"database": database, "temporal": temporal}
    down = [name for name, state in checks.items() if state != "ok"]
    status = 503 if down else 200
    message = f"unavailable: {', '.join(down)}" if down else "ready"
    headers = {"Retry-After": "2"} if down else {}
    return JSONResponse(
        {"status": "ready" if not down else "unavailable", "message": message, "checks": checks},
        status_code=status,
        headers=headers,
    )
