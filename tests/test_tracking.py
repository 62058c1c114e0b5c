"""Tracking beyond the single view: the caller's list (Temporal visibility) and the
Server-Sent Events stream."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine
from temporalio.client import Client

import tollway.newest_first
from api.cursors import CursorSigner
from tests.helpers import GREETING, Tenant, create, eventually, wait_status
from tests.money import pay_via_webhook
from tollway.settings import Settings
from workflows import search_attributes as sa


async def listing(
    http: httpx.AsyncClient, tenant: Tenant, wf: str, **params: Any
) -> httpx.Response:
    return await http.get(
        f"/v1/public/workflows/{wf}/executions", params=params, headers=tenant.auth
    )


async def test_list_is_the_callers_newest_first_with_filters_and_pages(
    http: httpx.AsyncClient, tenant: Tenant, other_tenant: Tenant
) -> None:
    wf = tenant.workflow(GREETING)
    ids = []
    for n in range(3):
        response = await create(
            http, tenant, wf, externalRef=f"ref-{n}", sourceSystem="crm" if n < 2 else "erp"
        )
        ids.append(response.json()["data"]["execution"]["id"])
    await create(http, other_tenant, wf)  # someone else's: never listed for us
    for eid in ids:
        await wait_status(http, eid, tenant.auth, "workflow_succeeded")

    full = await eventually(
        lambda: listing(http, tenant, wf), lambda r: len(r.json()["data"]["executions"]) == 3
    )
    items = full.json()["data"]["executions"]
    assert [i["id"] for i in items] == list(reversed(ids))
    assert items[0]["createdAt"].endswith("Z") and items[0]["workflowId"] == wf
    assert full.headers["ratelimit-limit"]

    done = await eventually(
        lambda: listing(http, tenant, wf, status="workflow_succeeded"),
        lambda r: len(r.json()["data"]["executions"]) == 3,
    )
    assert {i["status"] for i in done.json()["data"]["executions"]} == {"workflow_succeeded"}
    erp = await listing(http, tenant, wf, sourceSystem="erp")
    assert [i["id"] for i in erp.json()["data"]["executions"]] == [ids[2]]
    by_ref = await listing(http, tenant, wf, externalRef="ref-1")
    assert [i["id"] for i in by_ref.json()["data"]["executions"]] == [ids[1]]
    quoted = await listing(http, tenant, wf, externalRef="x' OR '1'='1")
    assert quoted.json()["data"]["executions"] == []

    first = (await listing(http, tenant, wf, limit=2)).json()["data"]
    assert len(first["executions"]) == 2 and first["hasMore"]
    rest = (await listing(http, tenant, wf, limit=2, cursor=first["nextCursor"])).json()["data"]
    assert [i["id"] for i in first["executions"] + rest["executions"]] == list(reversed(ids))


async def _ids(rows: Any) -> list[str]:
    return [row.id async for row in rows]


@pytest.mark.parametrize("reading", ["in closing order", "cut short into windows"])
async def test_list_is_in_creation_order_whatever_order_executions_close_in(
    http: httpx.AsyncClient,
    tenant: Tenant,
    client: Client,
    engine: Engine,
    monkeypatch: pytest.MonkeyPatch,
    reading: str,
) -> None:
    """Temporal's SQL visibility lists open executions first and closed ones by when they
    closed; the list is by creation all the same, across pages."""
    if reading == "cut short into windows":  # every page goes through the counted windows
        monkeypatch.setattr(tollway.newest_first, "MAX_SCANNED", 1)
        monkeypatch.setattr(tollway.newest_first, "MAX_WINDOW", 1)
    wf = tenant.priced_wf
    made = []
    for _ in range(4):  # created in this order: still open, paid last, paid second, paid first
        made.append((await create(http, tenant, wf)).json()["data"]["execution"])
    still_open, paid_last, paid_second, paid_first = made
    for execution in (paid_first, paid_second, paid_last):
        await pay_via_webhook(http, engine, execution)
        await wait_status(http, execution["id"], tenant.auth, "workflow_succeeded")
    newest_first = [e["id"] for e in reversed(made)]
    mine = (
        f"{sa.PUBLIC_WORKFLOW_ID.name} = '{wf}' AND {sa.ORGANIZATION_ID.name} = '{tenant.org_id}'"
    )
    temporal_order = await eventually(
        lambda: _ids(client.list_workflows(mine)), lambda ids: len(ids) == 4
    )
    assert temporal_order == [still_open["id"], paid_last["id"], paid_second["id"],
                              paid_first["id"]]  # fmt: skip

    listed = await eventually(
        lambda: listing(http, tenant, wf),
        lambda r: [i["id"] for i in r.json()["data"]["executions"]] == newest_first,
    )
    assert [i["id"] for i in listed.json()["data"]["executions"]] == newest_first
    assert listed.json()["data"]["hasMore"] is False
    for limit in (1, 2, 3):
        paged: list[str] = []
        params: dict[str, Any] = {"limit": limit}
        while True:
            page = (await listing(http, tenant, wf, **params)).json()["data"]
            assert len(page["executions"]) <= limit
            paged += [i["id"] for i in page["executions"]]
            if not page["hasMore"]:
                break
            params["cursor"] = page["nextCursor"]
        assert paged == newest_first, limit
    started = {i["id"]: i["createdAt"] for i in listed.json()["data"]["executions"]}
    since = await listing(http, tenant, wf, createdAfter=started[made[1]["id"]], limit=2)
    assert [i["id"] for i in since.json()["data"]["executions"]] == newest_first[:2]
    rest = await listing(http, tenant, wf, createdAfter=started[made[1]["id"]], limit=2,
                         cursor=since.json()["data"]["nextCursor"])  # fmt: skip
    assert [i["id"] for i in rest.json()["data"]["executions"]] == newest_first[2:3]
    assert rest.json()["data"]["hasMore"] is False


async def test_list_filters_by_what_the_caller_knows_and_by_created_at(
    http: httpx.AsyncClient, tenant: Tenant, settings: Settings
) -> None:
    wf = tenant.workflow(GREETING)
    made = []
    for n in range(3):
        response = await create(
            http, tenant, wf, sourceEntityType="ticket" if n < 2 else "invoice",
            sourceEntityId=f"T-{n}",
        )  # fmt: skip
        made.append(response.json()["data"]["execution"])
        await asyncio.sleep(0.05)  # distinct creation times
    priced = (await create(http, tenant, tenant.priced_wf)).json()["data"]["execution"]
    for e in made:
        await wait_status(http, e["id"], tenant.auth, "workflow_succeeded")
    listed = await eventually(
        lambda: listing(http, tenant, wf), lambda r: len(r.json()["data"]["executions"]) == 3
    )
    # The list's createdAt is when Temporal started the workflow: what the range filters on.
    started = {i["id"]: i["createdAt"] for i in listed.json()["data"]["executions"]}

    async def ids(workflow: str = wf, **params: Any) -> list[str]:
        response = await listing(http, tenant, workflow, **params)
        assert response.status_code == 200, response.text
        return [i["id"] for i in response.json()["data"]["executions"]]

    assert await ids(sourceEntityType="ticket") == [made[1]["id"], made[0]["id"]]
    assert await ids(sourceEntityType="invoice") == [made[2]["id"]]
    assert await ids(sourceEntityId="T-1") == [made[1]["id"]]
    assert await ids(sourceEntityType="invoice", sourceEntityId="T-1") == []
    assert await ids(tenant.priced_wf, paymentStatus="pending") == [priced["id"]]
    assert await ids(paymentStatus="not_required") == [e["id"] for e in reversed(made)]
    assert await ids(paymentStatus="paid") == []
    # created-at: [createdAfter, createdBefore), RFC 3339 with an offset.
    second = started[made[1]["id"]]
    assert await ids(createdAfter=second) == [made[2]["id"], made[1]["id"]]
    assert await ids(createdBefore=second) == [made[0]["id"]]
    assert await ids(createdAfter=started[made[0]["id"]], createdBefore=started[made[2]["id"]]) == [
        made[1]["id"],
        made[0]["id"],
    ]
    # Pages keep their filters: a cursor is refused with other ones.
    page = (await listing(http, tenant, wf, sourceEntityType="ticket", limit=1)).json()["data"]
    rest = await ids(sourceEntityType="ticket", limit=1, cursor=page["nextCursor"])
    assert [page["executions"][0]["id"], *rest] == [made[1]["id"], made[0]["id"]]
    other = await listing(
        http, tenant, wf, sourceEntityType="invoice", limit=1, cursor=page["nextCursor"]
    )
    assert other.status_code == 400 and other.json()["errors"][0]["field"] == "cursor"
    widened = await listing(
        http, tenant, wf, sourceEntityType="ticket", createdAfter=second, cursor=page["nextCursor"]
    )
    assert widened.status_code == 400
    # Signed by this API but not a position it wrote (an earlier release's page token).
    secret = settings.client_token_secret
    assert secret is not None
    stale = CursorSigner(secret.get_secret_value()).issue(
        b"\x0a\x08temporal", tenant.org_id, wf, {"sourceEntityType": "ticket"}
    )
    old = await listing(http, tenant, wf, sourceEntityType="ticket", cursor=stale)
    assert old.status_code == 400, old.text
    assert [e["field"] for e in old.json()["errors"]] == ["cursor"]


async def test_list_refuses_bad_filters_naming_each(
    http: httpx.AsyncClient, tenant: Tenant
) -> None:
    response = await listing(
        http,
        tenant,
        tenant.free_wf,
        paymentStatus="free",
        createdAfter="yesterday",
        createdBefore="2026-12-01T10:00:00",  # no offset
        sourceEntityId="a\x00b",
    )
    assert response.status_code == 400
    assert {e["field"] for e in response.json()["errors"]} == {
        "paymentStatus", "createdAfter", "createdBefore", "sourceEntityId",
    }  # fmt: skip
    backwards = await listing(
        http, tenant, tenant.free_wf,
        createdAfter="2026-12-02T00:00:00Z", createdBefore="2026-12-01T00:00:00Z",
    )  # fmt: skip
    assert [e["field"] for e in backwards.json()["errors"]] == ["createdBefore"]


async def test_list_refuses_bad_parameters(http: httpx.AsyncClient, tenant: Tenant) -> None:
    response = await listing(http, tenant, tenant.free_wf, status="done", limit=0, colour="red")
    assert response.status_code == 400
    assert {e["field"] for e in response.json()["errors"]} == {"status", "limit", "colour"}
    missing = await listing(http, tenant, "wf_missing")
    assert missing.status_code == 404


async def test_events_stream_one_event_per_change_until_the_end(
    http: httpx.AsyncClient, tenant: Tenant
) -> None:
    wf = tenant.workflow(
        {
            **GREETING,
            "steps": [
                {"id": "pause", "kind": "delay", "seconds": 1.5},
                {"id": "shape", "kind": "transform", "expression": "{done: `true`}"},
            ],
            "output": "steps.shape",
        }
    )
    data = (await create(http, tenant, wf)).json()["data"]
    events: list[dict[str, Any]] = []
    async with http.stream(
        "GET",
        f"/v1/public/executions/{data['execution']['id']}/events",
        params={"client_token": data["clientToken"]},
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        async for line in response.aiter_lines():
            if line.startswith("data: "):
                events.append(json.loads(line[len("data: ") :]))
    statuses = [e["status"] for e in events]
    assert statuses[-1] == "workflow_succeeded"
    assert "workflow_running" in statuses
    assert len({e["updatedAt"] for e in events}) == len(events)  # one per change
    assert all("requestPayload" not in e for e in events)  # client-safe view


async def test_events_need_a_token_that_opens_the_execution(
    http: httpx.AsyncClient, tenant: Tenant, other_tenant: Tenant
) -> None:
    data = (await create(http, tenant, tenant.free_wf)).json()["data"]
    path = f"/v1/public/executions/{data['execution']['id']}/events"
    assert (await http.get(path)).status_code == 401
    assert (await http.get(path, headers=other_tenant.auth)).status_code == 404


class _ClosesBeforeAListing:
    """The real client, except that the first listing matching ``before`` (the open or the
    closed executions) runs only once ``close`` has closed an execution and visibility shows
    it closed: the moment between a page's two reads."""

    def __init__(self, client: Client, close: Any, closed_id: str, before: str) -> None:
        self._client, self._close, self._closed_id = client, close, closed_id
        self._before, self._armed = before, True

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def list_workflows(self, query: str, **kw: Any) -> Any:
        if not (self._armed and self._before in query):
            return self._client.list_workflows(query, **kw)
        self._armed = False

        async def rows() -> Any:
            await self._close()
            closed = f"WorkflowId = '{self._closed_id}' AND ExecutionStatus != 'Running'"
            for _ in range(200):
                if (await self._client.count_workflows(closed)).count:
                    break
                await asyncio.sleep(0.05)
            async for row in self._client.list_workflows(query, **kw):
                yield row

        return rows()


@pytest.mark.parametrize("before", ["ExecutionStatus = 'Running'", "ExecutionStatus != 'Running'"])
async def test_an_execution_closing_while_a_page_is_read_is_on_it_once(
    http: httpx.AsyncClient, tenant: Tenant, client: Client, before: str
) -> None:
    """A page reads open executions and closed ones. One that closes between those reads
    is on the page once: read side by side, the closed listing could run before it closed
    and the open one after (on neither); read one after the other, it can be on both."""
    made = [(await create(http, tenant, tenant.priced_wf)).json()["data"]["execution"]["id"]]
    made += [(await create(http, tenant, tenant.priced_wf)).json()["data"]["execution"]["id"]]
    query = " OR ".join(f"WorkflowId = '{i}'" for i in made)
    await eventually(lambda: client.count_workflows(query), lambda c: c.count == 2)
    target = made[0]

    async def close() -> None:
        response = await http.post(f"/v1/public/executions/{target}/cancel", headers=tenant.auth)
        assert response.status_code == 200, response.text
        await client.get_workflow_handle(target).result()

    wrapped = _ClosesBeforeAListing(client, close, target, before)
    page = await tollway.newest_first.newest_page(wrapped, f"({query})", 5, None)  # type: ignore[arg-type]
    assert sorted(r.id for r in page.rows) == sorted(made)  # each once
    assert page.after is None
    await http.post(f"/v1/public/executions/{made[1]}/cancel", headers=tenant.auth)
