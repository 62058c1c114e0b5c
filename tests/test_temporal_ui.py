"""What an operator reads in the Temporal UI, read back through the client: the execution's
summary and details, its current details as it moves, and readable activity summaries."""

from __future__ import annotations

import httpx
from sqlalchemy import Engine
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client

from tests.helpers import GREETING, PRICE, Tenant, create, eventually, wait_status
from tests.money import pay_via_webhook


async def current_details(client: Client, eid: str) -> str:
    metadata = await client.get_workflow_handle(eid).query("__temporal_workflow_metadata")
    return str(metadata.current_details)


async def test_summary_details_and_activity_summaries_are_readable(
    http: httpx.AsyncClient, client: Client, engine: Engine, tenant: Tenant
) -> None:
    wf = tenant.workflow(
        {**GREETING, "name": "Slow greeting", "price": PRICE,
         "steps": [{"id": "wait", "kind": "delay", "seconds": 60}]}
    )  # fmt: skip
    execution = (await create(http, tenant, wf)).json()["data"]["execution"]
    eid = execution["id"]
    described = await client.get_workflow_handle(eid).describe()
    assert await described.static_summary() == "Slow greeting for crm"
    details = await described.static_details()
    assert details is not None
    assert f"({wf}, version 1)" in details and tenant.org_id in details
    assert "500 usd" in details and "Ada" not in details  # ids and money, no payload
    waiting = await current_details(client, eid)
    assert "**Status** awaiting_payment" in waiting and "**Payment** pending" in waiting

    await pay_via_webhook(http, engine, execution)
    await wait_status(http, eid, tenant.auth, "workflow_running")
    running = await eventually(lambda: current_details(client, eid), lambda d: "**Step** wait" in d)
    assert "**Status** workflow_running" in running and "**Payment** paid" in running

    history = await client.get_workflow_handle(eid).fetch_history()
    codec = client.data_converter.payload_codec
    summaries = []
    for event in history.events:
        if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            [payload] = (
                await codec.decode([event.user_metadata.summary])
                if codec
                else [event.user_metadata.summary]
            )
            summaries.append(payload.data.decode().strip('"'))
    assert summaries == ["open the checkout", "record the payment"]
    await http.post(f"/v1/public/executions/{eid}/cancel", headers=tenant.auth)
