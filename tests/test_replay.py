"""Determinism guard: the Replayer runs today's workflow code over histories produced by the
tests (every path: free, paid, failed, mismatched) and over histories checked in under
tests/histories/. A non-deterministic change fails here, before it reaches a running worker.

Set TOLLWAY_RECORD_HISTORIES=1 to (re)write the checked-in histories from this run.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import httpx
from temporalio.client import Client, WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from tests.helpers import Tenant, create, wait_status
from tests.test_lifecycle import pay
from workflows.execution import ExecutionWorkflow

HISTORIES = Path(__file__).parent / "histories"


def replayer() -> Replayer:
    return Replayer(workflows=[ExecutionWorkflow], data_converter=pydantic_data_converter)


async def test_replay_of_histories_produced_now(
    http: httpx.AsyncClient, client: Client, tenant: Tenant
) -> None:
    free = (await create(http, tenant, tenant.free_wf)).json()["data"]["execution"]
    failing = (await create(http, tenant, tenant.free_wf, requestPayload={})).json()["data"]
    paid = (await create(http, tenant, tenant.priced_wf)).json()["data"]["execution"]
    wrong = (await create(http, tenant, tenant.priced_wf, sourceEntityId="w")).json()["data"]
    await pay(client, paid)
    await pay(client, wrong["execution"], currency="eur")
    ends = {
        "free_succeeded": (free["id"], "workflow_succeeded"),
        "transform_failed": (failing["execution"]["id"], "workflow_failed"),
        "paid_succeeded": (paid["id"], "workflow_succeeded"),
        "payment_mismatch": (wrong["execution"]["id"], "workflow_failed"),
    }
    histories: dict[str, WorkflowHistory] = {}
    for name, (eid, status) in ends.items():
        await wait_status(http, eid, tenant.auth, status)
        histories[name] = await client.get_workflow_handle(eid).fetch_history()

    for history in histories.values():
        await replayer().replay_workflow(history)

    if os.environ.get("TOLLWAY_RECORD_HISTORIES") == "1":
        HISTORIES.mkdir(exist_ok=True)
        for name, history in histories.items():
            (HISTORIES / f"{name}.json").write_text(history.to_json())


async def test_replay_of_checked_in_histories() -> None:
    files = sorted(HISTORIES.glob("*.json"))
    assert files, "no checked-in histories"
    for path in files:
        history = WorkflowHistory.from_json(path.stem, json.loads(path.read_text()))
        await replayer().replay_workflow(history)
