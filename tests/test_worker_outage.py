"""Workers die: executions still finish after a restart, the view still answers with every
worker stopped, and a create with no worker answers 503 then attaches on retry."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator

import httpx
import pytest
from sqlalchemy import Engine
from temporalio.client import Client

from tests.conftest import make_settings
from tests.helpers import (
    Tenant,
    api_client,
    count_workflows,
    create,
    eventually,
    key,
    view,
    wait_status,
)
from tests.processes import worker_process
from tests.test_lifecycle import pay
from tollway.settings import Settings


@pytest.fixture
def outage_settings(database_url: str, temporal_address: str) -> Settings:
    return make_settings(
        database_url, temporal_address, query_timeout_seconds=0.5, request_deadline_seconds=2.0
    )


@pytest.fixture
async def outage_http(
    client: Client, outage_settings: Settings, engine: Engine
) -> AsyncIterator[httpx.AsyncClient]:
    async with api_client(outage_settings, client, engine) as http:
        yield http


async def test_killed_worker_restarts_and_execution_finishes_and_view_survives(
    outage_http: httpx.AsyncClient, client: Client, tenant: Tenant, outage_settings: Settings
) -> None:
    with worker_process(outage_settings) as proc:
        closed = (await create(outage_http, tenant, tenant.free_wf)).json()["data"]["execution"]
        await wait_status(outage_http, closed["id"], tenant.auth, "workflow_succeeded")
        opened = await create(outage_http, tenant, tenant.priced_wf)
        assert opened.status_code == 200, opened.text
        execution = opened.json()["data"]
        proc.send_signal(signal.SIGKILL)
        proc.wait()

    # Every worker is stopped: both views still answer, from what the workflow recorded.
    for eid, status in (
        (closed["id"], "workflow_succeeded"),
        (execution["execution"]["id"], "awaiting_payment"),
    ):
        response = await view(outage_http, eid, tenant.auth)
        assert response.status_code == 200, response.text
        got = response.json()["data"]["execution"]
        assert got["status"] == status
        assert got["requestPayload"] == {"name": "Ada"}
    client_view = await view(
        outage_http,
        execution["execution"]["id"],
        {"Authorization": f"Bearer {execution['clientToken']}"},
    )
    assert (
        client_view.json()["data"]["execution"]["checkoutSessionId"]
        == (execution["execution"]["checkoutSessionId"])
    )
    assert "requestPayload" not in client_view.json()["data"]["execution"]
    done_view = (await view(outage_http, closed["id"], tenant.auth)).json()["data"]["execution"]
    assert done_view["responsePayload"] == {"greeting": "hello Ada"}

    # The payment arrives while no worker runs (its delivery waits); a new worker takes it in
    # and finishes the execution.
    payment = asyncio.create_task(pay(client, tenant.engine, execution["execution"]))
    await asyncio.sleep(0.5)
    assert not payment.done()
    with worker_process(outage_settings):
        await asyncio.wait_for(payment, 30)
        done = await wait_status(
            outage_http,
            execution["execution"]["id"],
            tenant.auth,
            "workflow_succeeded",
            timeout=30,
        )
    assert done["paymentStatus"] == "paid"
    assert done["responsePayload"] == {"greeting": "hello Ada"}


async def test_no_worker_gives_503_and_retry_attaches(
    outage_http: httpx.AsyncClient, client: Client, tenant: Tenant, outage_settings: Settings
) -> None:
    idem = key()
    refused = await create(outage_http, tenant, tenant.priced_wf, idempotencyKey=idem)
    assert refused.status_code == 503, refused.text
    payload = refused.json()
    assert payload["error"] == "temporal_unavailable"
    assert "retry with the same idempotency key" in payload["message"]
    assert payload["requestId"] == refused.headers["x-request-id"]
    assert refused.headers["idempotency-key"] == idem

    with worker_process(outage_settings):
        retried = await create(outage_http, tenant, tenant.priced_wf, idempotencyKey=idem)
        assert retried.status_code == 200, retried.text
    eid = retried.json()["data"]["execution"]["id"]
    assert eid == tenant.execution_id(tenant.priced_wf, idem)
    assert retried.json()["data"]["execution"]["checkoutSessionId"]
    counted = await eventually(
        lambda: count_workflows(client, f"WorkflowId = '{eid}'"), lambda n: n >= 1
    )
    assert counted == 1
    assert tenant.orders() == 1


async def test_no_worker_and_generated_key_names_the_key_to_retry_with(
    outage_http: httpx.AsyncClient, tenant: Tenant
) -> None:
    # Priced: its create waits for the workflow to open the checkout, which needs a worker
    # (a free execution's create is one start, answered without one).
    refused = await create(outage_http, tenant, tenant.priced_wf)
    assert refused.status_code == 503
    generated = refused.headers["idempotency-key"]
    assert generated.startswith("idk_") and generated in refused.json()["message"]


async def test_a_free_create_needs_no_worker_and_runs_when_one_comes(
    outage_http: httpx.AsyncClient, tenant: Tenant, outage_settings: Settings
) -> None:
    """A free execution's create is one start: Temporal holds it until a worker polls."""
    made = await create(outage_http, tenant, tenant.free_wf)
    assert made.status_code == 200, made.text
    execution = made.json()["data"]["execution"]
    assert execution["status"] == "workflow_queued"
    with worker_process(outage_settings):
        done = await wait_status(outage_http, execution["id"], tenant.auth, "workflow_succeeded")
    assert done["createdAt"] == execution["createdAt"]  # the create's answer, kept
    assert done["runId"] == execution["runId"]
