"""``/healthz`` (the process answers) and ``/readyz`` (its dependencies answer, each named)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse

from api.deps import Deps
from tollway.readiness import readiness


async def healthz(request: Request) -> PlainTextResponse:
    return PlainTextResponse("ok")


async def readyz(request: Request) -> JSONResponse:
    deps: Deps = request.app.state.deps
    status, body = await readiness(deps.engine, deps.service.client)
    headers = {"Retry-After": "2"} if status != 200 else {}
    return JSONResponse(body, status_code=status, headers=headers)
