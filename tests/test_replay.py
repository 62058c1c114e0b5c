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
from temporalio.client import Client, WorkflowHistory, WorkflowUpdateStage
from temporalio.worker import Replayer

from tests.helpers import CONVERTER, GREETING, PRICE, Tenant, create, wait_status
from tests.money import pay_via_webhook
from tests.test_lifecycle import pay
from workflows.execution import ExecutionWorkflow
from workflows.late_payment import LatePaymentRefundWorkflow
from workflows.models import CancelInput

HISTORIES = Path(__file__).parent / "histories"


def replayer() -> Replayer:
    return Replayer(
        workflows=[ExecutionWorkflow, LatePaymentRefundWorkflow],
        data_converter=CONVERTER,
    )


async def test_replay_of_histories_produced_now(
    http: httpx.AsyncClient, client: Client, engine: Engine, tenant: Tenant
) -> None:
    async def start(wf: str, **kw: Any) -> dict[str, Any]:
        execution: dict[str, Any] = (await create(http, tenant, wf, **kw)).json()["data"][
            "execution"
        ]
        return execution

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

    late_refund = client.get_workflow_handle(f"{cancelled['id']}-refund-{late}")
    await late_refund.result()
    histories["late_payment_refund"] = await late_refund.fetch_history()
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
