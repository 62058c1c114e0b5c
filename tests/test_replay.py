"""Determinism guard: the Replayer runs today's workflow code over histories produced by the
tests (every path: free, paid, failed, mismatched) and over histories checked in under
tests/histories/. A non-deterministic change fails here, before it reaches a running worker.

Set TOLLWAY_RECORD_HISTORIES=1 to add the histories of this run whose names are new (existing
files are never overwritten: they stand for executions of older code).
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import Engine
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from temporalio.client import Client, WorkflowHistory, WorkflowUpdateStage
from temporalio.worker import Replayer

from tests.helpers import CONVERTER, GREETING, PRICE, SECRETS_KEY, Tenant, create, wait_status
from tests.money import pay_via_webhook
from tests.servers import serve
from tests.test_lifecycle import pay
from tollway.status_webhooks import WebhookStore
from workflows.execution import ExecutionWorkflow
from workflows.late_payment import LatePaymentRefundWorkflow, RefundAnnouncementWorkflow
from workflows.models import CancelInput
from workflows.webhook_delivery import WebhookDeliveryWorkflow

HISTORIES = Path(__file__).parent / "histories"


def replayer() -> Replayer:
    return Replayer(
        workflows=[
            ExecutionWorkflow,
            LatePaymentRefundWorkflow,
            RefundAnnouncementWorkflow,
            WebhookDeliveryWorkflow,
        ],
        data_converter=CONVERTER,
    )


async def test_replay_of_histories_produced_now(
    http: httpx.AsyncClient, client: Client, engine: Engine, tenant: Tenant,
    other_tenant: Tenant,
) -> None:  # fmt: skip
    async def start(wf: str, **kw: Any) -> dict[str, Any]:
        execution: dict[str, Any] = (await create(http, tenant, wf, **kw)).json()["data"][
            "execution"
        ]
        return execution

    # An organization with a status webhook endpoint: its executions emit events, and each
    # delivery is a workflow of its own (the receiver fails once, so it retries).
    failed_once: set[str] = set()

    async def hook(request: Request) -> JSONResponse:
        event = request.headers["webhook-id"]
        first = event not in failed_once
        failed_once.add(event)
        return JSONResponse({}, status_code=500 if first else 200)

    receiver = serve(Starlette(routes=[Route("/hook", hook, methods=["POST"])]))
    base = receiver.__enter__()
    endpoint, _secret = WebhookStore(engine, SECRETS_KEY).create(
        other_tenant.org_id, f"{base}/hook", []
    )
    notified = (await create(http, other_tenant, other_tenant.priced_wf)).json()["data"][
        "execution"
    ]
    free = await start(tenant.free_wf)
    failing = await start(tenant.free_wf, requestPayload={})
    paid = await start(tenant.priced_wf)
    wrong = await start(tenant.priced_wf, sourceEntityId="w")
    refunded = await start(tenant.priced_wf, requestPayload={})
    cancelled = await start(tenant.priced_wf, sourceEntityId="c")
    racing = await start(tenant.priced_wf, sourceEntityId="r")
    operator_cancelled = await start(
        tenant.workflow(
            {**GREETING, "price": PRICE, "steps": [{"id": "wait", "kind": "delay", "seconds": 60}]}
        )
    )
    duplicate = await start(tenant.priced_wf, sourceEntityId="d")
    expiring = await start(
        tenant.workflow({**GREETING, "price": PRICE, "paymentTimeoutSeconds": 1})
    )
    queued_callback = await start(
        tenant.workflow(
            {
                **GREETING,
                "maxConcurrency": 1,
                "steps": [
                    {"id": "hold", "kind": "wait_for_callback"},
                    {"id": "shape", "kind": "transform", "expression": "steps.hold"},
                ],
            }
        )
    )
    waiting = await wait_status(http, queued_callback["id"], tenant.auth, "workflow_waiting")
    token = waiting["callbacks"]["hold"]["token"]
    await http.post(
        f"/v1/public/executions/{queued_callback['id']}/callbacks/hold",
        json={"ok": 1},
        headers={"Authorization": f"Bearer {token}"},
    )
    await pay(client, engine, paid)
    await pay_via_webhook(http, engine, notified)
    await pay(client, engine, wrong, currency="eur")
    await pay_via_webhook(http, engine, refunded)
    await http.post(f"/v1/public/executions/{cancelled['id']}/cancel", headers=tenant.auth)
    late = await pay_via_webhook(http, engine, cancelled)
    # A payment that lands in the closing workflow: refunded and recorded there.
    await client.get_workflow_handle_for(ExecutionWorkflow.run, racing["id"]).start_update(
        ExecutionWorkflow.cancel,
        CancelInput(by="replay test"),
        id="cancel",
        wait_for_stage=WorkflowUpdateStage.ACCEPTED,
    )
    await pay_via_webhook(http, engine, racing)
    await pay_via_webhook(http, engine, operator_cancelled)
    await wait_status(http, operator_cancelled["id"], tenant.auth, "workflow_running")
    await client.get_workflow_handle(operator_cancelled["id"]).cancel()
    await asyncio.gather(
        pay_via_webhook(http, engine, duplicate), pay_via_webhook(http, engine, duplicate)
    )
    ends = {
        "free_succeeded": (free["id"], "workflow_succeeded"),
        "transform_failed_fails_the_workflow": (failing["id"], "workflow_failed"),
        "paid_succeeded": (paid["id"], "workflow_succeeded"),
        "payment_mismatch": (wrong["id"], "workflow_failed"),
        "failed_and_refunded": (refunded["id"], "workflow_failed"),
        "cancelled_then_paid_late": (cancelled["id"], "workflow_cancelled"),
        "cancelled_in_temporal_while_running": (operator_cancelled["id"], "workflow_cancelled"),
        "cancelled_then_paid_late_refund_shown": (racing["id"], "workflow_cancelled"),
        "duplicate_payment_refunded": (duplicate["id"], "workflow_succeeded"),
        "payment_expired": (expiring["id"], "workflow_cancelled"),
        "queued_then_callback_random_token": (queued_callback["id"], "workflow_succeeded"),
    }
    histories: dict[str, WorkflowHistory] = {}
    for name, (eid, status) in ends.items():
        await wait_status(http, eid, tenant.auth, status)
        histories[name] = await client.get_workflow_handle(eid).fetch_history()
    await wait_status(http, notified["id"], other_tenant.auth, "workflow_succeeded")
    histories["paid_succeeded_with_status_webhooks"] = await client.get_workflow_handle(
        notified["id"]
    ).fetch_history()
    store = WebhookStore(engine, SECRETS_KEY)
    succeeded = next(
        d for d in store.deliveries(endpoint.id) if d.event_type == "execution.succeeded"
    )
    delivery = client.get_workflow_handle(succeeded.id)
    assert await delivery.result() == "succeeded"
    histories["status_webhook_delivered_on_retry"] = await delivery.fetch_history()
    receiver.__exit__(None, None, None)

    late_refund = client.get_workflow_handle(f"{cancelled['id']}-refund-{late}")
    await late_refund.result()
    # Announces the refund (execution.refunded) since it was recorded; the checked-in
    # late_payment_refund.json is from before.
    histories["late_payment_refund_announced"] = await late_refund.fetch_history()
    for history in histories.values():
        await replayer().replay_workflow(history)

    if os.environ.get("TOLLWAY_RECORD_HISTORIES") == "1":
        # Only new names are written: a checked-in history stands for executions recorded by
        # an older version of the code, which must keep replaying.
        HISTORIES.mkdir(exist_ok=True)
        for name, history in histories.items():
            path = HISTORIES / f"{name}.json"
            if not path.exists():
                path.write_text(history.to_json())


async def test_replay_of_checked_in_histories() -> None:
    files = sorted(HISTORIES.glob("*.json"))
    assert files, "no checked-in histories"
    for path in files:
        history = WorkflowHistory.from_json(path.stem, json.loads(path.read_text()))
        await replayer().replay_workflow(history)
