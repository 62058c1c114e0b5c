"""Idempotency: replays, mismatches, concurrency, the header form, bounded history."""

from __future__ import annotations

import asyncio

import httpx
from temporalio.client import Client

from tests.helpers import Tenant, body, count_workflows, create, eventually, key, wait_status


async def test_replay_returns_same_execution_in_current_state(
    http: httpx.AsyncClient, tenant: Tenant
) -> None:
    idem = key()
    first = await create(http, tenant, tenant.free_wf, idempotencyKey=idem)
    execution = first.json()["data"]["execution"]
    await wait_status(http, execution["id"], tenant.auth, "workflow_succeeded")

    again = await create(http, tenant, tenant.free_wf, idempotencyKey=idem)
    assert again.status_code == 200
    assert again.headers["idempotent-replayed"] == "true"
    replayed = again.json()["data"]["execution"]
    assert replayed["id"] == execution["id"] and replayed["runId"] == execution["runId"]
    assert replayed["status"] == "workflow_succeeded"  # current state, not the stored outcome
    assert again.json()["data"]["clientToken"] != first.json()["data"]["clientToken"]


async def test_replay_of_open_priced_execution_keeps_its_checkout(
    http: httpx.AsyncClient, tenant: Tenant
) -> None:
    idem = key()
    first = (await create(http, tenant, tenant.priced_wf, idempotencyKey=idem)).json()["data"]
    again = await create(http, tenant, tenant.priced_wf, idempotencyKey=idem)
    assert again.headers["idempotent-replayed"] == "true"
    data = again.json()["data"]
    assert data["execution"]["checkoutSessionId"] == first["execution"]["checkoutSessionId"]
    assert data["checkoutUrl"] == first["checkoutUrl"]
    assert tenant.orders() == 1


async def test_same_key_different_body_is_400_and_changes_nothing(
    http: httpx.AsyncClient, tenant: Tenant
) -> None:
    idem = key()
    first = (await create(http, tenant, tenant.priced_wf, idempotencyKey=idem)).json()["data"]
    mismatch = await create(
        http, tenant, tenant.priced_wf, idempotencyKey=idem, requestPayload={"name": "Bob"}
    )
    assert mismatch.status_code == 400
    payload = mismatch.json()
    assert payload["error"] == "idempotency_key_reused"
    assert payload["errors"] == [
        {
            "field": "idempotencyKey",
            "message": "already used with a different request",
            "code": "idempotency_key_reused",
        }
    ]
    assert payload["data"] is None
    current = await http.get(
        f"/v1/public/executions/{first['execution']['id']}", headers=tenant.auth
    )
    assert current.json()["data"]["execution"]["requestPayload"] == {"name": "Ada"}
    assert current.json()["data"]["execution"]["updatedAt"] == first["execution"]["updatedAt"]


async def test_same_key_different_body_on_closed_execution_is_400(
    http: httpx.AsyncClient, tenant: Tenant
) -> None:
    idem = key()
    execution = (await create(http, tenant, tenant.free_wf, idempotencyKey=idem)).json()
    await wait_status(http, execution["data"]["execution"]["id"], tenant.auth, "workflow_succeeded")
    mismatch = await create(http, tenant, tenant.free_wf, idempotencyKey=idem, externalRef="x")
    assert mismatch.status_code == 400
    assert mismatch.json()["error"] == "idempotency_key_reused"


async def test_header_key_works_like_body_key(http: httpx.AsyncClient, tenant: Tenant) -> None:
    idem = key()
    by_header = await http.post(
        f"/v1/public/workflows/{tenant.free_wf}/executions",
        json=body(),
        headers={**tenant.auth, "Idempotency-Key": idem},
    )
    execution = by_header.json()["data"]["execution"]
    assert execution["idempotencyKey"] == idem
    assert execution["id"] == tenant.execution_id(tenant.free_wf, idem)
    by_body = await create(http, tenant, tenant.free_wf, idempotencyKey=idem)
    assert by_body.headers["idempotent-replayed"] == "true"
    assert by_body.json()["data"]["execution"]["id"] == execution["id"]
    both_same = await http.post(
        f"/v1/public/workflows/{tenant.free_wf}/executions",
        json=body(idempotencyKey=idem),
        headers={**tenant.auth, "Idempotency-Key": idem},
    )
    assert both_same.json()["data"]["execution"]["id"] == execution["id"]


async def test_same_key_from_two_organizations_gives_two_executions(
    http: httpx.AsyncClient, tenant: Tenant, other_tenant: Tenant
) -> None:
    idem = key()
    mine = (await create(http, tenant, tenant.free_wf, idempotencyKey=idem)).json()
    theirs = (await create(http, other_tenant, tenant.free_wf, idempotencyKey=idem)).json()
    assert mine["data"]["execution"]["id"] != theirs["data"]["execution"]["id"]
    assert theirs["data"]["execution"]["organizationId"] == other_tenant.org_id


async def test_fifty_concurrent_duplicates_make_one_workflow(
    http: httpx.AsyncClient, client: Client, tenant: Tenant
) -> None:
    idem = key()
    responses = await asyncio.gather(
        *(create(http, tenant, tenant.priced_wf, idempotencyKey=idem) for _ in range(50))
    )
    assert [r.status_code for r in responses] == [200] * 50
    ids = {r.json()["data"]["execution"]["id"] for r in responses}
    assert len(ids) == 1
    replayed = [r.headers.get("idempotent-replayed") == "true" for r in responses]
    assert replayed.count(False) == 1
    eid = ids.pop()
    counted = await eventually(
        lambda: count_workflows(client, f"WorkflowId = '{eid}'"), lambda n: n >= 1
    )
    assert counted == 1
    await asyncio.sleep(0.3)
    assert await count_workflows(client, f"TollwayOrganizationId = '{tenant.org_id}'") == 1
    assert tenant.orders() == 1


async def test_many_sequential_replays_leave_history_small(
    http: httpx.AsyncClient, client: Client, tenant: Tenant
) -> None:
    idem = key()
    first = (await create(http, tenant, tenant.priced_wf, idempotencyKey=idem)).json()
    eid = first["data"]["execution"]["id"]
    handle = client.get_workflow_handle(eid)
    before = len((await handle.fetch_history()).events)
    for _ in range(500):
        response = await create(http, tenant, tenant.priced_wf, idempotencyKey=idem)
        assert response.status_code == 200
    after = len((await handle.fetch_history()).events)
    assert after == before, (before, after)
    assert before < 30
