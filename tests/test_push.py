"""Following an execution without polling it per watcher: Server-Sent Events that resume with
``Last-Event-ID``, a hundred streams on one execution fed by one watcher, and ``Prefer: wait``
that holds an answer until the execution settles without growing its history."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import httpx
import pytest
from temporalio.client import Client
from temporalio.worker import Worker

from api.app import create_app
from tests.conftest import make_settings
from tests.helpers import GREETING, Tenant, create, eventually
from tests.servers import serve
from tollway.settings import Settings


def paused(seconds: float) -> dict[str, Any]:
    return {
        **GREETING,
        "steps": [
            {"id": "pause", "kind": "delay", "seconds": seconds},
            {"id": "shape", "kind": "transform", "expression": "{done: `true`}"},
        ],
        "output": "steps.shape",
    }


@pytest.fixture
def push_settings(database_url: str, temporal_address: str, settings: Settings) -> Settings:
    return make_settings(
        database_url,
        temporal_address,
        task_queue=settings.task_queue,  # the session worker runs what is made here
        sse_max_streams_per_token=500,
        sse_max_streams_per_address=500,
    )


async def read_events(
    http: httpx.AsyncClient, url: str, headers: dict[str, str]
) -> list[tuple[str, str, dict[str, Any]]]:
    """Every event of one stream, as (id, event, data), until the server ends it."""
    events = []
    fields: dict[str, str] = {}
    async with http.stream("GET", url, headers=headers, timeout=60) as response:
        assert response.status_code == 200, await response.aread()
        async for line in response.aiter_lines():
            if not line:
                if "data" in fields:
                    events.append(
                        (fields.get("id", ""), fields["event"], json.loads(fields["data"]))
                    )
                fields = {}
            elif not line.startswith(":"):
                name, _, value = line.partition(": ")
                fields[name] = value
    return events


async def test_a_hundred_streams_on_one_execution_share_one_watcher(
    push_settings: Settings, tenant: Tenant, http: httpx.AsyncClient, worker: Worker
) -> None:
    data = (await create(http, tenant, tenant.workflow(paused(3.0)))).json()["data"]
    execution_id = data["execution"]["id"]
    app = create_app(push_settings)
    with serve(app, lifespan="on") as base:
        url = f"{base}/v1/public/executions/{execution_id}/events"
        limits = httpx.Limits(max_connections=150, max_keepalive_connections=150)
        async with httpx.AsyncClient(limits=limits) as real:
            streams = [
                asyncio.create_task(
                    read_events(real, url, {"Authorization": f"Bearer {data['clientToken']}"})
                )
                for _ in range(100)
            ]
            metrics = app.state.metrics
            opened = await eventually(
                lambda: asyncio.sleep(0, metrics.streams_open._value.get()),
                lambda n: n == 100,
                timeout=20,
            )
            assert opened == 100
            watchers = app.state.deps.watchers
            assert watchers.open_count() == 1  # one loop for the hundred
            polls_before = metrics.watch_polls._value.get()
            await asyncio.sleep(1.0)
            polls = metrics.watch_polls._value.get() - polls_before
            assert 1 <= polls <= 3, polls  # one view every 0.5 s, not a hundred
            results = await asyncio.gather(*streams)
        for events in results:
            assert events[0][2]["status"] in {"workflow_running", "payment_confirmed"}
            assert events[-1][2]["status"] == "workflow_succeeded"
            ids = [int(event_id) for event_id, _, _ in events]
            assert ids == sorted(set(ids))  # ordered, one per change
            assert all("requestPayload" not in d for _, _, d in events)  # client-safe
        gone = await eventually(
            lambda: asyncio.sleep(0, watchers.open_count()), lambda n: n == 0, timeout=5
        )
        assert gone == 0  # the watcher stops with its last stream


async def test_last_event_id_resumes_with_only_what_was_not_seen(
    tenant: Tenant, http: httpx.AsyncClient
) -> None:
    data = (await create(http, tenant, tenant.workflow(paused(1.0)))).json()["data"]
    url = f"/v1/public/executions/{data['execution']['id']}/events"
    auth = {"Authorization": f"Bearer {data['clientToken']}"}
    everything = await read_events(http, url, auth)
    assert everything[-1][2]["status"] == "workflow_succeeded"
    assert len(everything) >= 2
    last_id, _, last = everything[-1]
    # Seen everything: nothing is sent again, the ended stream closes at once.
    assert await read_events(http, url, {**auth, "Last-Event-ID": last_id}) == []
    # Seen an earlier state: the current one (all that is left of what was missed).
    again = await read_events(http, url, {**auth, "Last-Event-ID": everything[0][0]})
    assert [(i, d) for i, _, d in again] == [(last_id, last)]
    # An id that is not ours counts as none: the current state first.
    fresh = await read_events(http, url, {**auth, "Last-Event-ID": "not-an-id"})
    assert [d for _, _, d in fresh] == [last]


async def test_prefer_wait_holds_the_view_until_the_execution_settles(
    tenant: Tenant, http: httpx.AsyncClient
) -> None:
    data = (await create(http, tenant, tenant.workflow(paused(1.0)))).json()["data"]
    path = f"/v1/public/executions/{data['execution']['id']}"
    started = time.monotonic()
    held = await http.get(path, headers={**tenant.auth, "Prefer": "wait=20"})
    assert held.status_code == 200
    assert held.headers["preference-applied"] == "wait=20"
    assert held.json()["data"]["execution"]["status"] == "workflow_succeeded"
    assert time.monotonic() - started < 10  # answered when it ended, not at the deadline
    # On create too: a free execution answered once it ended.
    done = await create(http, tenant, tenant.workflow(paused(0.5)), headers={"Prefer": "wait=20"})
    assert done.headers["preference-applied"] == "wait=20"
    assert done.json()["data"]["execution"]["status"] == "workflow_succeeded"
    # Settled already (awaiting payment, waiting on the outside world): answered at once.
    started = time.monotonic()
    priced = await create(http, tenant, tenant.priced_wf, headers={"Prefer": "wait=30"})
    assert priced.json()["data"]["execution"]["status"] == "awaiting_payment"
    assert time.monotonic() - started < 5
    # Not asked for, or not understood: no waiting, no Preference-Applied.
    plain = await http.get(path, headers={**tenant.auth, "Prefer": "wait=soon"})
    assert "preference-applied" not in plain.headers


async def test_waiting_callers_share_one_watcher_and_add_nothing_to_history(
    push_settings: Settings, tenant: Tenant, http: httpx.AsyncClient, client: Client,
    worker: Worker,
) -> None:  # fmt: skip
    data = (await create(http, tenant, tenant.workflow(paused(30.0)))).json()["data"]
    execution_id = data["execution"]["id"]
    handle = client.get_workflow_handle(execution_id)
    await eventually(
        lambda: http.get(f"/v1/public/executions/{execution_id}", headers=tenant.auth),
        lambda r: r.json()["data"]["execution"]["status"] == "workflow_running",
    )
    before = len((await handle.fetch_history()).events)
    app = create_app(push_settings)
    with serve(app, lifespan="on") as base:
        limits = httpx.Limits(max_connections=60, max_keepalive_connections=60)
        async with httpx.AsyncClient(base_url=base, limits=limits, timeout=30) as real:
            waiting = [
                asyncio.create_task(
                    real.get(
                        f"/v1/public/executions/{execution_id}",
                        headers={**tenant.auth, "Prefer": "wait=2"},
                    )
                )
                for _ in range(50)
            ]
            await asyncio.sleep(0.5)
            polls = app.state.metrics.watch_polls
            before_polls = polls._value.get()
            await asyncio.sleep(1.0)
            assert app.state.deps.watchers.open_count() == 1
            assert polls._value.get() - before_polls <= 3  # one loop, not fifty
            answers = await asyncio.gather(*waiting)
    for answer in answers:  # the wait ran out: the current state, still running
        assert answer.headers["preference-applied"] == "wait=2"
        assert answer.json()["data"]["execution"]["status"] == "workflow_running"
    assert len((await handle.fetch_history()).events) == before
    await handle.cancel()
