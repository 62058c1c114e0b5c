"""The bench's least front (bench/floor_front.py) starts the very execution the API would start
for the same body and key, so the bench compares like with like."""

from __future__ import annotations

import httpx
from sqlalchemy import Engine
from temporalio.client import Client

from bench.floor_front import FloorFront
from tests.helpers import Tenant, body, create, key, wait_status
from tollway import admin
from tollway.settings import Settings

PER_EXECUTION = {
    "id", "runId", "idempotencyKey", "createdAt", "updatedAt", "startedAt", "finishedAt"
}  # fmt: skip


async def test_the_api_takes_the_floor_fronts_start_as_its_own(
    client: Client, settings: Settings, engine: Engine, http: httpx.AsyncClient, tenant: Tenant
) -> None:
    record = admin.find_workflow(engine, tenant.free_wf)
    assert record is not None
    front = FloorFront(settings, client, record, tenant.org_id, tenant.token_id)
    floors_key, apis_key = key(), key()
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=front), base_url="http://floor.test"
    ) as floor:
        assert (await floor.get("/")).text == "ok"
        started = await floor.post("/", json=body(idempotencyKey=floors_key))
    assert started.status_code == 200
    eid = started.json()["data"]["execution"]["id"]
    assert eid == tenant.execution_id(tenant.free_wf, floors_key)

    ours = (await create(http, tenant, tenant.free_wf, idempotencyKey=apis_key)).json()
    await wait_status(http, ours["data"]["execution"]["id"], tenant.auth, "workflow_succeeded")
    await wait_status(http, eid, tenant.auth, "workflow_succeeded")
    # The API replays the floor's execution (same ID, same fingerprint: a changed body would be
    # refused as a mismatch) and shows it as it shows its own, but for what is each one's.
    again = await create(http, tenant, tenant.free_wf, idempotencyKey=floors_key)
    assert again.status_code == 200, again.text
    assert again.headers["idempotent-replayed"] == "true"
    floors = again.json()["data"]["execution"]
    mine = (await http.get(f"/v1/public/executions/{ours['data']['execution']['id']}",
                           headers=tenant.auth)).json()["data"]["execution"]  # fmt: skip
    differ = {k for k in floors.keys() | mine.keys() if floors.get(k) != mine.get(k)}
    assert differ <= PER_EXECUTION, differ
    assert floors["idempotencyKey"] == floors_key
    assert floors["responsePayload"] == {"greeting": "hello Ada"}
