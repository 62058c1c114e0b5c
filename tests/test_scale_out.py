"""Scale-out, proven on this machine: two ``tollway api`` and two ``tollway worker`` processes on
one Temporal dev server, PostgreSQL and Redis-backed rate limits. Concurrent creates, replays
and payments go through both APIs while one worker and one API are SIGKILLed; every execution
finishes once, replays attach across APIs, the rate limit is one limit. And graceful shutdown:
SIGTERM lets an API finish the requests in flight and a worker finish its running activity."""

from __future__ import annotations

import asyncio
import signal
import threading
import time
import uuid
from functools import partial
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client

from tests.conftest import make_settings
from tests.helpers import (
    GREETING,
    Tenant,
    body,
    count_workflows,
    eventually,
    key,
    workflow_exists,
)
from tests.money import pay_via_webhook
from tests.processes import api_process, worker_process
from tests.servers import serve
from tollway import admin
from tollway.definitions import parse_definition

pytestmark = pytest.mark.scale_out
EXECUTIONS = 24


@pytest.fixture
def postgres_url(database_url: str) -> str:
    if not database_url.startswith("postgres"):
        pytest.skip("scale-out runs on PostgreSQL: set TOLLWAY_TEST_DATABASE_URL (CI does)")
    return database_url


async def _until_all(
    http: httpx.AsyncClient, tenant: Tenant, ids: list[str], status: str, within: float
) -> dict[str, dict[str, Any]]:
    deadline = time.monotonic() + within
    views: dict[str, dict[str, Any]] = {}
    while time.monotonic() < deadline:
        answers = await asyncio.gather(
            *(http.get(f"/v1/public/executions/{i}", headers=tenant.auth) for i in ids)
        )
        views = {i: a.json()["data"]["execution"] for i, a in zip(ids, answers, strict=True)}
        if all(v["status"] == status for v in views.values()):
            return views
        await asyncio.sleep(0.3)
    late = {i: v["status"] for i, v in views.items() if v["status"] != status}
    raise AssertionError(f"not {status} within {within} s: {late}")


async def test_two_apis_and_two_workers_lose_nothing_when_one_of_each_dies(
    postgres_url: str, temporal_address: str, tenant: Tenant, engine: Engine, client: Client
) -> None:
    settings = make_settings(
        postgres_url,
        temporal_address,
        rate_limit_storage="redis://127.0.0.1:6379/13",
        auth_cache_seconds=5.0,
    )
    with (
        worker_process(settings) as doomed_worker,
        worker_process(settings),
        api_process(settings) as doomed_api,
        api_process(settings) as api,
    ):
        apis = [
            httpx.AsyncClient(base_url=doomed_api.base, timeout=30),
            httpx.AsyncClient(base_url=api.base, timeout=30),
        ]
        survivor = apis[1]

        # One limit across both APIs: 6 per minute for this token, whichever API counts it.
        org_token = admin.create_token(engine, tenant.org_id, "6/minute")[1]
        limited = {"Authorization": f"Bearer {org_token}"}
        path = f"/v1/public/workflows/{tenant.free_wf}/executions"
        statuses = [(await apis[n % 2].get(path, headers=limited)).status_code for n in range(10)]
        assert statuses == [200] * 6 + [429] * 4

        # Concurrent creates through both APIs, then each replayed through the other one.
        keys = [key() for _ in range(EXECUTIONS)]
        created = await asyncio.gather(
            *(
                apis[n % 2].post(
                    f"/v1/public/workflows/{tenant.priced_wf}/executions",
                    json=body(idempotencyKey=k),
                    headers=tenant.auth,
                )
                for n, k in enumerate(keys)
            )
        )
        assert [c.status_code for c in created] == [200] * EXECUTIONS
        executions = [c.json()["data"]["execution"] for c in created]
        replayed = await asyncio.gather(
            *(
                apis[(n + 1) % 2].post(
                    f"/v1/public/workflows/{tenant.priced_wf}/executions",
                    json=body(idempotencyKey=k),
                    headers=tenant.auth,
                )
                for n, k in enumerate(keys)
            )
        )
        for first, again in zip(executions, replayed, strict=True):
            assert again.status_code == 200 and again.headers["Idempotent-Replayed"] == "true"
            assert again.json()["data"]["execution"]["id"] == first["id"]

        # Half the payments through both APIs; then one worker and one API die, and the rest
        # go through the API that is left while the other worker takes over.
        half = EXECUTIONS // 2
        await asyncio.gather(
            *(pay_via_webhook(apis[n % 2], engine, e) for n, e in enumerate(executions[:half]))
        )
        doomed_worker.send_signal(signal.SIGKILL)
        doomed_api.proc.send_signal(signal.SIGKILL)
        await asyncio.gather(*(pay_via_webhook(survivor, engine, e) for e in executions[half:]))

        ids = [e["id"] for e in executions]
        views = await _until_all(survivor, tenant, ids, "workflow_succeeded", within=90)
        for view in views.values():
            assert view["paymentStatus"] == "paid"
            assert view["responsePayload"] == {"greeting": "hello Ada"}
        scheduled: dict[str, int] = {}
        for execution_id in ids:  # one workflow each, completed once, the same work in each
            assert await count_workflows(client, f"WorkflowId = '{execution_id}'") == 1
            history = await client.get_workflow_handle(execution_id).fetch_history()
            kinds = [e.event_type for e in history.events]
            assert kinds.count(EventType.EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED) == 1
            scheduled[execution_id] = sum(
                1
                for e in history.events
                if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
                and e.activity_task_scheduled_event_attributes.activity_type.name == "steps.run"
            )
        assert len(set(scheduled.values())) == 1, scheduled  # no step scheduled twice
        for http in apis:
            await http.aclose()
    # The tenant fixture then checks the money: one payment taken per execution, none twice.


async def test_sigterm_lets_requests_in_flight_finish(
    postgres_url: str, temporal_address: str, tenant: Tenant, client: Client
) -> None:
    settings = make_settings(postgres_url, temporal_address)
    with api_process(settings) as api:
        async with httpx.AsyncClient(base_url=api.base, timeout=30) as http:
            path = f"/v1/public/workflows/{tenant.priced_wf}/executions"
            keys = [key() for _ in range(16)]
            sent = [
                asyncio.create_task(
                    http.post(path, json=body(idempotencyKey=k), headers=tenant.auth)
                )
                for k in keys
            ]
            # Every request is being handled: its workflow is started, and its answer waits
            # for the workflow's first task, which no worker takes before the signal.
            for eid in (tenant.execution_id(tenant.priced_wf, k) for k in keys):
                await eventually(partial(workflow_exists, client, eid), bool)
            assert not any(task.done() for task in sent)
            api.proc.send_signal(signal.SIGTERM)
            with worker_process(settings):
                answers = await asyncio.gather(*sent, return_exceptions=True)
                assert all(isinstance(a, httpx.Response) for a in answers), answers
                assert [a.status_code for a in answers if isinstance(a, httpx.Response)] == [
                    200
                ] * 16
                # uvicorn exits by re-raising the signal it handled, once they are answered.
                assert api.proc.wait(timeout=30) in (0, -signal.SIGTERM)


def _slow_partner(hits: list[float], release: threading.Event) -> Starlette:
    async def slow(request: Request) -> JSONResponse:
        hits.append(time.monotonic())
        while not release.is_set():
            await asyncio.sleep(0.05)
        return JSONResponse({"done": True})

    return Starlette(routes=[Route("/slow", slow, methods=["GET", "POST"])])


async def test_sigterm_lets_the_worker_finish_its_running_activity(
    postgres_url: str, temporal_address: str, tenant: Tenant, engine: Engine, client: Client
) -> None:
    hits: list[float] = []
    release = threading.Event()
    settings = make_settings(
        postgres_url,
        temporal_address,
        worker_drain_seconds=20.0,
        task_queue=f"drain-{uuid.uuid4().hex[:8]}",
    )
    with serve(_slow_partner(hits, release)) as partner:
        definition = {
            **GREETING,
            "steps": [
                {
                    "id": "call",
                    "kind": "http",
                    "url": f"{partner}/slow",
                    "timeoutSeconds": 30,
                    "retry": {"maxAttempts": 3, "initialIntervalSeconds": 0.1},
                }
            ],  # fmt: skip
            "output": "steps.call.body",
        }
        workflow = admin.create_workflow(engine, tenant.org_id, parse_definition(definition)).id
        with api_process(settings) as api, worker_process(settings) as worker:
            async with httpx.AsyncClient(base_url=api.base, timeout=30) as http:
                created = await http.post(
                    f"/v1/public/workflows/{workflow}/executions",
                    json=body(idempotencyKey=key()),
                    headers=tenant.auth,
                )
                assert created.status_code == 200, created.text
                execution_id = created.json()["data"]["execution"]["id"]
                while not hits:  # the activity is running on the worker
                    await asyncio.sleep(0.05)
                worker.send_signal(signal.SIGTERM)
                await asyncio.sleep(1.0)
                assert worker.poll() is None  # still draining: it waits for the activity
                release.set()
                assert await asyncio.to_thread(worker.wait, 30) == 0
                with worker_process(settings):  # someone to run the workflow's next task
                    deadline = time.monotonic() + 30
                    while time.monotonic() < deadline:
                        view = (
                            await http.get(
                                f"/v1/public/executions/{execution_id}", headers=tenant.auth
                            )
                        ).json()["data"]["execution"]
                        if view["status"] == "workflow_succeeded":
                            break
                        await asyncio.sleep(0.2)
                assert view["status"] == "workflow_succeeded", view
                assert view["responsePayload"] == {"done": True}
    assert len(hits) == 1  # finished where it ran, not cancelled and retried elsewhere
    history = await client.get_workflow_handle(execution_id).fetch_history()
    step = next(  # the http step's activity (the output is built by a later one)
        e
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
        and e.activity_task_scheduled_event_attributes.activity_type.name == "steps.run"
    )
    [started] = [
        e
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED
        and e.activity_task_started_event_attributes.scheduled_event_id == step.event_id
    ]
    assert started.activity_task_started_event_attributes.attempt == 1
