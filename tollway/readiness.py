"""Readiness: do the process's dependencies answer within a short deadline? One check for the
API's ``/readyz`` and the worker's; each dependency is named, so a 503 says what is down."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import anyio.to_thread
from sqlalchemy import Engine, text
from temporalio.client import Client

DEADLINE_SECONDS = 2.0


def _select_one(engine: Engine) -> None:
    with engine.connect() as connection:
        connection.execute(text("SELECT 1"))


async def _database(engine: Engine) -> str:
    try:
        async with asyncio.timeout(DEADLINE_SECONDS):
            await anyio.to_thread.run_sync(_select_one, engine, abandon_on_cancel=True)
    except Exception as exc:  # noqa: BLE001 - any failure means "not ready"; say which
        return f"unavailable ({type(exc).__name__})"
    return "ok"


async def _temporal(client: Client) -> str:
    try:
        healthy = await client.service_client.check_health(
            timeout=timedelta(seconds=DEADLINE_SECONDS)
        )
    except Exception as exc:  # noqa: BLE001
        return f"unavailable ({type(exc).__name__})"
    return "ok" if healthy else "unavailable (not serving)"


async def readiness(engine: Engine, client: Client) -> tuple[int, dict[str, Any]]:
    """The HTTP status (200 or 503) and the body of a readiness answer."""
    database, temporal = await asyncio.gather(_database(engine), _temporal(client))
    checks = {"database": database, "temporal": temporal}
    down = [name for name, state in checks.items() if state != "ok"]
    body = {
        "status": "unavailable" if down else "ready",
        "message": f"unavailable: {', '.join(down)}" if down else "ready",
        "checks": checks,
    }
    return (503 if down else 200), body
