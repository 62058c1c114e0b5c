"""maxConcurrency: executions beyond the limit show workflow_queued and start in arrival
order; a cancelled or crashed run frees its slot."""

from __future__ import annotations

from typing import Any

import httpx
from temporalio.client import Client

from tests.helpers import GREETING, Tenant, create, wait_status

HOLD = {
    **GREETING,
    "maxConcurrency": 1,
    "steps": [
        {"id": "hold", "kind": "wait_for_callback", "timeoutSeconds": 120},
    ],
    "output": "steps.hold",
}


async def start(http: httpx.AsyncClient, tenant: Tenant, wf: str, n: int) -> dict[str, Any]:
    response = await create(http, tenant, wf, sourceEntityId=str(n))
    assert response.status_code == 200, response.text
    execution: dict[str, Any] = response.json()["data"]["execution"]
    return execution


async def release(http: httpx.AsyncClient, tenant: Tenant, execution_id: str) -> None:
    waiting = await wait_status(http, execution_id, tenant.auth, "workflow_waiting")
    token = waiting["callbacks"]["hold"]["token"]
    response = await http.post(
        f"/v1/public/executions/{execution_id}/callbacks/hold",
        json={"done": True},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert response.status_code == 200, response.text
    await wait_status(http, execution_id, tenant.auth, "workflow_succeeded")


async def test_limit_queues_in_arrival_order_and_frees_slots(
    http: httpx.AsyncClient, client: Client, tenant: Tenant
) -> None:
    wf = tenant.workflow(HOLD)
    a = await start(http, tenant, wf, 1)
    await wait_status(http, a["id"], tenant.auth, "workflow_waiting")
    b, c, d = [await start(http, tenant, wf, n) for n in (2, 3, 4)]
    for queued in (b, c, d):
        view = await wait_status(http, queued["id"], tenant.auth, "workflow_queued", 1)
        assert view["startedAt"] is None

    await release(http, tenant, a["id"])  # first in line (b) starts, c and d keep waiting
    await wait_status(http, b["id"], tenant.auth, "workflow_waiting")
    await wait_status(http, c["id"], tenant.auth, "workflow_queued", 0.5)

    cancelled = await http.post(f"/v1/public/executions/{c['id']}/cancel", headers=tenant.auth)
    assert cancelled.status_code == 200
    assert cancelled.json()["data"]["execution"]["statusReason"].endswith("while queued")

    # b crashes (terminated by an operator): its slot is freed and d starts.
    await client.get_workflow_handle(b["id"]).terminate("operator test")
    await wait_status(http, d["id"], tenant.auth, "workflow_waiting", 30)
    await release(http, tenant, d["id"])


async def test_no_limit_means_no_queue(http: httpx.AsyncClient, tenant: Tenant) -> None:
    wf = tenant.workflow({**HOLD, "maxConcurrency": None})
    first, second = await start(http, tenant, wf, 1), await start(http, tenant, wf, 2)
    await wait_status(http, first["id"], tenant.auth, "workflow_waiting")
    await wait_status(http, second["id"], tenant.auth, "workflow_waiting")
