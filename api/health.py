"""``/healthz`` (the process answers) and ``/readyz`` (its dependencies answer, each named)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse

from api.access import deps_of
from tollway.readiness import readiness


async def healthz(request: Request) -> PlainTextResponse:
    return PlainTextResponse("ok")


async def readyz(request: Request) -> JSONResponse:
    deps = deps_of(request)
    status, body = await readiness(deps.engine, deps.service.client)
    headers = {"Retry-After": "2"} if status != 200 else {}
    return JSONResponse(body, status_code=status, headers=headers)
