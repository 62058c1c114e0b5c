"""Worker crashes cost callers seconds, and repeat no side effect blindly: a step cut short by
a SIGKILL resumes on the next worker within seconds, with the same Idempotency-Key; creates and
webhooks in flight when a worker dies are answered 200, not 503."""

from __future__ import annotations

import asyncio
import signal
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from temporalio.client import Client

from tests.conftest import make_settings
from tests.helpers import GREETING, Tenant, api_client, create, eventually, wait_status
from tests.money import capture, completed, send
from tests.processes import worker_process
from tests.servers import serve
from tollway.settings import Settings


class HangsOnce:
    """An upstream whose first request hangs (until released), later ones answer at once."""

    def __init__(self) -> None:
        self.keys: list[str | None] = []
        self.release = threading.Event()

    def app(self) -> Starlette:
        async def handle(request: Request) -> JSONResponse:
            self.keys.append(request.headers.get("idempotency-key"))
            if len(self.keys) == 1:
                while not self.release.is_set():
                    await asyncio.sleep(0.05)
            return JSONResponse({"attempt": len(self.keys)})

        return Starlette(routes=[Route("/work", handle, methods=["POST"])])


@pytest.fixture
def crash_settings(database_url: str, temporal_address: str) -> Settings:
    return make_settings(database_url, temporal_address, request_deadline_seconds=10.0)


@pytest.fixture
async def crash_http(
    client: Client, engine: Engine, crash_settings: Settings
) -> AsyncIterator[httpx.AsyncClient]:
    async with api_client(crash_settings, client, engine, timeout=30) as http:
        yield http


@pytest.fixture
def upstream() -> Iterator[tuple[HangsOnce, str]]:
    target = HangsOnce()
    with serve(target.app()) as base:
        yield target, base
    target.release.set()


async def test_step_cut_short_by_sigkill_resumes_within_seconds_with_the_same_key(
    crash_http: httpx.AsyncClient,
    tenant: Tenant,
    crash_settings: Settings,
    upstream: tuple[HangsOnce, str],
) -> None:
    target, base = upstream
    wf = tenant.workflow(
        {
            **GREETING,
            "steps": [
                {
                    "id": "call",
                    "kind": "http",
                    "method": "POST",
                    "url": f"{base}/work",
                    "timeoutSeconds": 120,
                    "timeout": 300,
                    "retry": {"maxAttempts": 3, "initialIntervalSeconds": 0.2},
                }
            ],
            "output": "steps.call.body",
        }
    )
    with worker_process(crash_settings) as doomed:
        eid = (await create(crash_http, tenant, wf)).json()["data"]["execution"]["id"]
        await eventually(lambda: asyncio.sleep(0, len(target.keys)), lambda n: n == 1)
        assert len(target.keys) == 1
        doomed.send_signal(signal.SIGKILL)
        doomed.wait()
    with worker_process(crash_settings):
        # Noticed dead by its missing heartbeat (5 s), retried on the new worker.
        done = await wait_status(crash_http, eid, tenant.auth, "workflow_succeeded", timeout=15)
    assert done["responsePayload"] == {"attempt": 2}
    assert target.keys == [f"{eid}:call", f"{eid}:call"]


async def test_creates_and_webhooks_in_flight_when_a_worker_dies_are_answered(
    crash_http: httpx.AsyncClient,
    client: Client,
    engine: Engine,
    tenant: Tenant,
    crash_settings: Settings,
) -> None:
    with worker_process(crash_settings), worker_process(crash_settings) as doomed:
        opened = [
            (await create(crash_http, tenant, tenant.priced_wf)).json()["data"]["execution"]
            for _ in range(8)
        ]
        events = [completed(e, capture(engine, e)) for e in opened]

        async def kill_soon() -> None:
            await asyncio.sleep(0.05)
            doomed.send_signal(signal.SIGKILL)

        responses: list[Any] = await asyncio.gather(
            *(send(crash_http, event) for event in events),
            *(create(crash_http, tenant, tenant.free_wf) for _ in range(8)),
            kill_soon(),
        )
        answered = [r for r in responses if r is not None]
        assert [r.status_code for r in answered] == [200] * 16, [
            r.text for r in answered if r.status_code != 200
        ]
        for execution in opened:
            await wait_status(crash_http, execution["id"], tenant.auth, "workflow_succeeded", 45)
