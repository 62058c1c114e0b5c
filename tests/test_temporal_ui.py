"""What an operator reads in the Temporal UI, read back through the client: the execution's
summary and details, its current details as it moves, and readable activity summaries."""

from __future__ import annotations

import httpx
from sqlalchemy import Engine
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client
from temporalio.converter import decode_typed_search_attributes

from tests.helpers import GREETING, PRICE, Tenant, create, eventually, wait_status
from tests.money import pay_via_webhook
from tollway.settings import Settings
from workflows import search_attributes as sa
from workflows.models import ExecutionInput
from workflows.policies import WORKFLOW_TASK_TIMEOUT


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


async def test_a_free_start_carries_its_own_attributes_summary_and_input(
    http: httpx.AsyncClient, client: Client, tenant: Tenant, settings: Settings
) -> None:
    """A free execution is started from a request shared by the workflow's starts for the same
    caller and source (encoded once): each start still carries exactly its own search
    attributes and input, and the shared summary, details and timeouts."""
    wf = tenant.workflow({**GREETING, "name": "Free greeting"})
    made = [
        (await create(http, tenant, wf, externalRef="ref-1", sourceEntityId="c-1")).json(),
        (await create(http, tenant, wf, sourceEntityType="lead")).json(),
        (await create(http, tenant, wf, externalRef="ref-3")).json(),
    ]
    ids = [answer["data"]["execution"]["id"] for answer in made]
    own = [
        {sa.EXTERNAL_REF: "ref-1", sa.SOURCE_ENTITY_ID: "c-1", sa.SOURCE_ENTITY_TYPE: "contact"},
        {sa.SOURCE_ENTITY_TYPE: "lead"},
        {sa.EXTERNAL_REF: "ref-3", sa.SOURCE_ENTITY_TYPE: "contact"},
    ]
    for eid, answer, attributes in zip(ids, made, own, strict=True):
        described = await client.get_workflow_handle(eid).describe()
        assert described.task_queue == settings.task_queue
        assert described.workflow_type == "TollwayExecution"
        assert described.run_id == answer["data"]["execution"]["runId"]
        assert await described.static_summary() == "Free greeting for crm"
        details = await described.static_details()
        assert details is not None
        assert f"Free greeting ({wf}, version 1)" in details and tenant.token_id in details
        assert "**Price** free" in details
        history = await client.get_workflow_handle(eid).fetch_history()
        started = history.events[0].workflow_execution_started_event_attributes
        carried = decode_typed_search_attributes(started.search_attributes)
        assert {pair.key.name: pair.value for pair in carried} == {
            sa.ORGANIZATION_ID.name: tenant.org_id,
            sa.PUBLIC_WORKFLOW_ID.name: wf,
            sa.SOURCE_SYSTEM.name: "crm",
            sa.STATUS.name: "workflow_queued",
            sa.PAYMENT_STATUS.name: "not_required",
            **{key.name: value for key, value in attributes.items()},
        }
        assert started.workflow_task_timeout.ToTimedelta() == WORKFLOW_TASK_TIMEOUT
        assert started.identity == client.identity
        [inp] = await client.data_converter.decode(started.input.payloads, [ExecutionInput])
        assert isinstance(inp, ExecutionInput) and inp.execution_id == eid
        # What the Temporal database holds is ciphertext, summary included.
        assert started.input.payloads[0].metadata["encoding"] == b"binary/encrypted"
        summary = history.events[0].user_metadata.summary
        assert summary.metadata["encoding"] == b"binary/encrypted"
