"""Executions end to end through the real worker: free, priced (paid by signal), failing."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import httpx
from sqlalchemy import Engine
from temporalio.client import Client

from tests.helpers import GREETING, PRICE, Tenant, create, key, wait_status
from tests.money import capture
from workflows.execution import ExecutionWorkflow
from workflows.models import PaymentEventKind, PaymentNotice

SEED_FIELDS = {
    "checkoutSessionId",
    "clientSafeMetadata",
    "createdAt",
    "externalRef",
    "finishedAt",
    "id",
    "idempotencyKey",
    "initiatedById",
    "initiatedByType",
    "orderId",
    "organizationId",
    "paymentStatus",
    "requestPayload",
    "responsePayload",
    "runId",
    "sourceEntityId",
    "sourceEntityType",
    "sourceSystem",
    "startedAt",
    "status",
    "statusReason",
    "updatedAt",
    "workflowId",
}


def rfc3339_utc(value: str) -> datetime:
    assert value.endswith("Z"), value
    return datetime.fromisoformat(value)


async def pay(
    client: Client,
    engine: Engine,
    execution: dict[str, Any],
    amount: int = 500,
    currency: str = "usd",
) -> None:
    """Take the money in the local bank, then deliver the payment straight to the workflow,
    as the webhook does after verifying."""
    reference = capture(engine, execution, amount, currency)
    handle = client.get_workflow_handle_for(ExecutionWorkflow.run, execution["id"])
    await handle.execute_update(
        ExecutionWorkflow.payment_event,
        PaymentNotice(
            event_id=f"evt_{key()}",
            kind=PaymentEventKind.PAID,
            provider="local",
            checkout_session_id=execution["checkoutSessionId"],
            payment_reference=reference,
            amount=amount,
            currency=currency,
            livemode=False,
        ),
    )


async def test_free_execution_succeeds_with_response_payload(
    http: httpx.AsyncClient, tenant: Tenant
) -> None:
    response = await create(
        http,
        tenant,
        tenant.free_wf,
        externalRef="INV-1",
        sourceEntityId="c_9",
        clientSafeMetadata={"theme": "dark"},
        idempotencyKey="order-1",
    )
    assert response.status_code == 200, response.text
    payload = response.json()
    assert payload["code"] == 200 and payload["message"] == "success"
    assert payload["requestId"] == response.headers["x-request-id"]
    assert "idempotent-replayed" not in response.headers
    execution = payload["data"]["execution"]
    assert SEED_FIELDS <= set(execution)
    assert payload["data"]["clientToken"].startswith("ct_")
    assert execution["status"] == "workflow_queued"
    assert execution["paymentStatus"] == "not_required"
    assert execution["id"] == tenant.execution_id(tenant.free_wf, "order-1")
    assert execution["workflowId"] == tenant.free_wf
    assert execution["organizationId"] == tenant.org_id
    assert execution["initiatedById"] == tenant.token_id
    assert execution["initiatedByType"] == "api_token"
    assert execution["externalRef"] == "INV-1" and execution["sourceEntityId"] == "c_9"
    assert execution["orderId"] is None and execution["checkoutSessionId"] is None
    assert execution["runId"]
    rfc3339_utc(execution["createdAt"])

    done = await wait_status(http, execution["id"], tenant.auth, "workflow_succeeded")
    assert done["responsePayload"] == {"greeting": "hello Ada"}
    assert done["statusReason"] is None
    assert rfc3339_utc(done["createdAt"]) <= rfc3339_utc(done["startedAt"])
    assert rfc3339_utc(done["startedAt"]) <= rfc3339_utc(done["finishedAt"])
    assert done["updatedAt"] == done["finishedAt"]


async def test_generated_key_is_returned(http: httpx.AsyncClient, tenant: Tenant) -> None:
    response = await create(http, tenant, tenant.free_wf)
    execution = response.json()["data"]["execution"]
    assert execution["idempotencyKey"].startswith("idk_")
    assert execution["id"] == tenant.execution_id(tenant.free_wf, execution["idempotencyKey"])


async def test_priced_execution_waits_for_payment_then_succeeds(
    http: httpx.AsyncClient, client: Client, tenant: Tenant
) -> None:
    response = await create(http, tenant, tenant.priced_wf)
    assert response.status_code == 200, response.text
    data = response.json()["data"]
    execution = data["execution"]
    assert execution["status"] == "awaiting_payment"
    assert execution["paymentStatus"] == "pending"
    assert execution["orderId"].startswith("ord_")
    assert execution["checkoutSessionId"].startswith("cs_local_")
    assert data["checkoutUrl"] == execution["checkoutUrl"]
    assert data["checkoutUrl"].endswith(f"/checkout/{execution['checkoutSessionId']}")
    assert tenant.orders() == 1

    # Nothing runs unpaid.
    waiting = await wait_status(http, execution["id"], tenant.auth, "awaiting_payment", 0.5)
    assert waiting["startedAt"] is None and waiting["responsePayload"] is None

    await pay(client, tenant.engine, execution)
    done = await wait_status(http, execution["id"], tenant.auth, "workflow_succeeded")
    assert done["paymentStatus"] == "paid"
    assert done["responsePayload"] == {"greeting": "hello Ada"}
    assert done["orderId"] == execution["orderId"]


async def test_payment_of_wrong_amount_runs_nothing(
    http: httpx.AsyncClient, client: Client, tenant: Tenant
) -> None:
    execution = (await create(http, tenant, tenant.priced_wf)).json()["data"]["execution"]
    await pay(client, tenant.engine, execution, amount=499)
    done = await wait_status(http, execution["id"], tenant.auth, "workflow_failed")
    assert done["startedAt"] is None and done["responsePayload"] is None
    assert "does not match" in done["statusReason"]
    assert done["paymentStatus"] == "refunded"


async def test_failing_transform_fails_with_a_readable_reason(
    http: httpx.AsyncClient, tenant: Tenant
) -> None:
    response = await create(http, tenant, tenant.free_wf, requestPayload={"nobody": True})
    execution = response.json()["data"]["execution"]
    done = await wait_status(http, execution["id"], tenant.auth, "workflow_failed")
    assert done["statusReason"].startswith("step 'shape' failed: transform error:")
    assert "join()" in done["statusReason"]
    assert done["finishedAt"] is not None and done["responsePayload"] is None


async def test_when_skips_a_step_and_output_wraps_non_objects(
    http: httpx.AsyncClient, tenant: Tenant
) -> None:
    wf = tenant.workflow(
        {
            **GREETING,
            "steps": [
                {
                    "id": "skipped",
                    "kind": "transform",
                    "expression": "`1`",
                    "when": "request.never",
                },
                {"id": "count", "kind": "transform", "expression": "length(request.items)"},
            ],
            "output": "steps.count",
        }
    )
    response = await create(http, tenant, wf, requestPayload={"items": [1, 2, 3]})
    execution = response.json()["data"]["execution"]
    done = await wait_status(http, execution["id"], tenant.auth, "workflow_succeeded")
    assert done["responsePayload"] == {"value": 3}


async def test_version_in_force_at_creation_is_kept(
    http: httpx.AsyncClient, client: Client, tenant: Tenant
) -> None:
    from tollway import admin
    from tollway.definitions import parse_definition

    wf = tenant.workflow({**GREETING, "price": PRICE})
    execution = (await create(http, tenant, wf)).json()["data"]["execution"]
    admin.publish_version(
        tenant.engine,
        wf,
        parse_definition(
            {
                **GREETING,
                "price": PRICE,
                "steps": [{"id": "shape", "kind": "transform", "expression": "{greeting: 'v2'}"}],
            }
        ),
    )
    await pay(client, tenant.engine, execution)
    done = await wait_status(http, execution["id"], tenant.auth, "workflow_succeeded")
    assert done["responsePayload"] == {"greeting": "hello Ada"}
    assert done["workflowVersion"] == 1
