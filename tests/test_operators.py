"""Operators in Temporal: a cancellation requested there is a Tollway cancellation (money
included), a terminated execution is reported as terminated, and Temporal's own status says
how each execution ended."""

from __future__ import annotations

import asyncio
import json
import subprocess
import uuid
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine
from temporalio.api.common.v1 import WorkflowExecution
from temporalio.api.enums.v1 import EventType
from temporalio.api.workflowservice.v1 import ResetWorkflowExecutionRequest
from temporalio.client import Client, WorkflowExecutionStatus

from tests.helpers import GREETING, PAYLOAD_KEYS, PRICE, Tenant, create, eventually, wait_status
from tests.money import assert_money_invariants, pay_via_webhook
from tests.processes import run_tollway
from tollway.ledger import OrderLedger

DELAYED = {**GREETING, "price": PRICE, "steps": [{"id": "wait", "kind": "delay", "seconds": 60}]}
CALLBACK = {
    **GREETING,
    "price": PRICE,
    "steps": [{"id": "approve", "kind": "wait_for_callback", "timeoutSeconds": 600}],
}


async def start(http: httpx.AsyncClient, tenant: Tenant, wf: str) -> dict[str, Any]:
    response = await create(http, tenant, wf)
    assert response.status_code == 200, response.text
    execution: dict[str, Any] = response.json()["data"]["execution"]
    return execution


async def closed_as(client: Client, eid: str, status: WorkflowExecutionStatus) -> None:
    described = await eventually(
        client.get_workflow_handle(eid).describe, lambda d: d.status == status
    )
    assert described.status == status


@pytest.mark.parametrize("where", ["awaiting_payment", "queued", "running", "waiting"])
async def test_cancel_requested_in_temporal_is_a_tollway_cancellation(
    http: httpx.AsyncClient, client: Client, engine: Engine, tenant: Tenant, where: str
) -> None:
    if where == "queued":  # one slot, held by another paid execution that waits
        wf = tenant.workflow({**DELAYED, "maxConcurrency": 1})
        holder = await start(http, tenant, wf)
        await pay_via_webhook(http, engine, holder)
        await wait_status(http, holder["id"], tenant.auth, "workflow_running")
    else:
        wf = tenant.workflow(CALLBACK if where == "waiting" else DELAYED)
    execution = await start(http, tenant, wf)
    if where != "awaiting_payment":
        await pay_via_webhook(http, engine, execution)
        shown = {"queued": "workflow_queued", "running": "workflow_running"}
        await wait_status(http, execution["id"], tenant.auth, shown.get(where, "workflow_waiting"))
    await client.get_workflow_handle(execution["id"]).cancel()  # the UI's Request Cancellation
    await closed_as(client, execution["id"], WorkflowExecutionStatus.CANCELED)
    done = await wait_status(http, execution["id"], tenant.auth, "workflow_cancelled")
    assert done["statusReason"].startswith("cancelled by an operator in Temporal"), done
    order = OrderLedger(engine).by_execution(execution["id"])
    assert order is not None
    if where == "awaiting_payment":
        assert done["paymentStatus"] == "cancelled" and order.status == "cancelled"
    else:
        assert done["paymentStatus"] == "refunded" and order.status == "refunded"
    await assert_money_invariants(client, engine, done)
    if where == "queued":
        await client.get_workflow_handle(holder["id"]).cancel()
        await closed_as(client, holder["id"], WorkflowExecutionStatus.CANCELED)


async def test_terminated_paid_execution_is_reported_as_terminated_and_refunded_by_hand(
    http: httpx.AsyncClient,
    client: Client,
    engine: Engine,
    tenant: Tenant,
    database_url: str,
    temporal_address: str,
) -> None:
    execution = await start(http, tenant, tenant.workflow(DELAYED))
    await pay_via_webhook(http, engine, execution)
    await wait_status(http, execution["id"], tenant.auth, "workflow_running")
    await client.get_workflow_handle(execution["id"]).terminate(reason="stuck partner API")
    done = await wait_status(http, execution["id"], tenant.auth, "workflow_cancelled")
    assert done["statusReason"] == "terminated by an operator in Temporal: stuck partner API"
    assert done["paymentStatus"] == "paid" and done["finishedAt"]

    def refund() -> Any:
        result = admin_cli(
            database_url,
            temporal_address,
            "executions",
            "refund",
            execution["id"],
            "--reason",
            "terminated",
            "--json",
        )
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)

    first = refund()
    assert first["alreadyRefunded"] is False and first["refundReference"]
    again = refund()
    assert again["alreadyRefunded"] is True
    assert again["refundReference"] == first["refundReference"]
    settled = await wait_status(http, execution["id"], tenant.auth, "workflow_cancelled")
    assert settled["paymentStatus"] == "refunded"
    await assert_money_invariants(client, engine, settled)


async def test_failed_execution_is_a_failed_workflow_in_temporal(
    http: httpx.AsyncClient, client: Client, engine: Engine, tenant: Tenant
) -> None:
    failing = await create(http, tenant, tenant.free_wf, requestPayload={})
    eid = failing.json()["data"]["execution"]["id"]
    done = await wait_status(http, eid, tenant.auth, "workflow_failed")
    assert done["statusReason"].startswith("step 'shape' failed")
    await closed_as(client, eid, WorkflowExecutionStatus.FAILED)
    query = (
        f"WorkflowId = '{eid}' AND ExecutionStatus = 'Failed' AND TollwayStatus = 'workflow_failed'"
    )
    counted = await eventually(lambda: client.count_workflows(query), lambda c: c.count == 1)
    assert counted.count == 1
    ok = await create(http, tenant, tenant.free_wf)
    ok_id = ok.json()["data"]["execution"]["id"]
    await wait_status(http, ok_id, tenant.auth, "workflow_succeeded")
    await closed_as(client, ok_id, WorkflowExecutionStatus.COMPLETED)
    # The view of a failed execution still answers from what it recorded.
    await asyncio.sleep(0)
    again = (await http.get(f"/v1/public/executions/{eid}", headers=tenant.auth)).json()
    assert again["data"]["execution"]["statusReason"] == done["statusReason"]


def admin_cli(
    database_url: str, temporal_address: str, *args: str
) -> subprocess.CompletedProcess[str]:
    return run_tollway(
        "admin",
        *args,
        env={
            "DATABASE_URL": database_url,
            "TEMPORAL_ADDRESS": temporal_address,
            "TOLLWAY_PAYLOAD_KEYS": PAYLOAD_KEYS,
        },
    )


async def test_operator_cli_lists_shows_and_cancels_executions(
    http: httpx.AsyncClient,
    engine: Engine,
    tenant: Tenant,
    database_url: str,
    temporal_address: str,
) -> None:
    wf = tenant.workflow(DELAYED)
    execution = await start(http, tenant, wf)
    await pay_via_webhook(http, engine, execution)
    await wait_status(http, execution["id"], tenant.auth, "workflow_running")

    def run(*args: str) -> Any:
        result = admin_cli(database_url, temporal_address, "executions", *args, "--json")
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)

    listed = await eventually(
        lambda: asyncio.to_thread(run, "list", "--workflow", wf),
        lambda rows: [r["status"] for r in rows] == ["workflow_running"],
    )
    assert [(r["id"], r["status"]) for r in listed] == [(execution["id"], "workflow_running")]
    # In a thread: the worker serving these executions runs in this test's event loop.
    shown = await asyncio.to_thread(run, "show", execution["id"])
    assert shown["execution"]["status"] == "workflow_running"
    assert shown["ledger"]["order"]["status"] == "paid"
    assert len(shown["ledger"]["payments"]) == 1
    cancelled = await asyncio.to_thread(
        run, "cancel", execution["id"], "--reason", "customer asked"
    )
    assert cancelled["execution"]["status"] == "workflow_cancelled"
    assert cancelled["execution"]["paymentStatus"] == "refunded"
    assert "customer asked" in cancelled["execution"]["statusReason"]
    again = await asyncio.to_thread(
        admin_cli,
        database_url,
        temporal_address,
        "executions",
        "cancel",
        execution["id"],
        "--reason",
        "x",
    )
    assert again.returncode == 0  # the same cancellation, answered again
    missing = admin_cli(database_url, temporal_address, "executions", "show", "exe_nope", "--json")
    assert missing.returncode == 2 and "does not exist" in json.loads(missing.stdout)["error"]


def test_operator_cli_says_in_one_line_what_does_not_answer(
    database_url: str, temporal_address: str
) -> None:
    down = admin_cli(database_url, "127.0.0.1:1", "executions", "show", "exe_x")
    assert down.returncode == 3
    assert down.stderr.strip() == "error: Temporal at 127.0.0.1:1 did not answer; retry later"
    as_json = admin_cli(database_url, "127.0.0.1:1", "executions", "show", "exe_x", "--json")
    assert json.loads(as_json.stdout) == {
        "error": "Temporal at 127.0.0.1:1 did not answer; retry later"
    }
    no_db = admin_cli("postgresql://postgres@127.0.0.1:1/none", temporal_address, "org", "list")
    assert no_db.returncode == 3
    [line] = no_db.stderr.strip().splitlines()
    assert line.startswith("error: the database did not answer")


async def test_open_executions_evicted_from_the_cache_let_go_and_resume(
    client: Client, engine: Engine, tenant: Tenant, database_url: str, temporal_address: str
) -> None:
    """Eviction cancels every task of a cached workflow; the execution's cancellation handling
    must let it go (not loop: the worker would hang), and it resumes when next needed."""
    import concurrent.futures

    from activities.local_provider import LocalPaymentProvider
    from tests.conftest import make_settings
    from tests.helpers import api_client
    from worker.main import build_worker

    settings = make_settings(database_url, temporal_address)
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        worker = build_worker(
            client,
            settings.task_queue,
            LocalPaymentProvider(engine, "http://x"),
            engine,
            pool,
            max_cached_workflows=1,  # each new execution evicts the one before
        )
        async with api_client(settings, client, engine) as http:
            running = asyncio.create_task(worker.run())
            opened = [await start(http, tenant, tenant.priced_wf) for _ in range(3)]
            first = opened[0]
            await pay_via_webhook(http, engine, first)  # evicted: replayed, then paid
            done = await wait_status(http, first["id"], tenant.auth, "workflow_succeeded")
            assert done["paymentStatus"] == "paid"
            await asyncio.wait_for(worker.shutdown(), timeout=20)
            await asyncio.wait_for(running, timeout=5)
    for other in opened[1:]:
        await client.get_workflow_handle(other["id"]).terminate("test done")


async def test_a_reset_execution_is_viewed_as_its_new_run(
    http: httpx.AsyncClient, client: Client, tenant: Tenant
) -> None:
    """The UI's Reset on a closed execution starts a new run: its views, kept per run once
    closed, follow the new run as soon as it has closed."""
    execution = await start(http, tenant, tenant.free_wf)
    handle = client.get_workflow_handle(execution["id"])
    await handle.result()

    async def view() -> dict[str, Any]:
        response = await http.get(f"/v1/public/executions/{execution['id']}", headers=tenant.auth)
        assert response.status_code == 200, response.text
        shown: dict[str, Any] = response.json()["data"]["execution"]
        return shown

    before = [await view() for _ in range(3)]  # seen closed, then answered from its records
    assert before[0]["status"] == "workflow_succeeded", before[0]
    assert before[1] == before[0] and before[2] == before[0]
    first_task = None
    async for event in handle.fetch_history_events():
        if event.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED:
            first_task = event.event_id
            break
    assert first_task is not None
    reset = await client.workflow_service.reset_workflow_execution(
        ResetWorkflowExecutionRequest(
            namespace=client.namespace,
            workflow_execution=WorkflowExecution(workflow_id=execution["id"]),
            reason="operator reset",
            workflow_task_finish_event_id=first_task,
            request_id=str(uuid.uuid4()),
        )
    )
    assert reset.run_id and reset.run_id != before[0]["runId"]
    await client.get_workflow_handle(execution["id"], run_id=reset.run_id).result()
    after = await eventually(view, lambda v: v["runId"] == reset.run_id)
    assert after["runId"] == reset.run_id, after
    assert after["status"] == "workflow_succeeded", after
    assert after["finishedAt"] > before[0]["finishedAt"], (after, before[0])
    assert await view() == after
