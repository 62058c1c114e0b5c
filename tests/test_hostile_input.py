"""Hostile input: bounded reads, bounded nesting, bounded decompression."""

from __future__ import annotations

import json
import tracemalloc
from collections.abc import AsyncIterator
from typing import Any

import httpx
from temporalio.client import Client

from tests.helpers import Tenant, create, wait_status
from tests.history_text import decoded_history
from tests.test_steps import Target, allowed, http_flow, run  # noqa: F401 - fixture

MB = 1024 * 1024


async def test_a_50_mb_checkout_post_is_refused_without_reading_it(
    http: httpx.AsyncClient, tenant: Tenant
) -> None:
    execution = (await create(http, tenant, tenant.priced_wf)).json()["data"]["execution"]
    sent = 0

    async def fifty_megabytes() -> AsyncIterator[bytes]:
        nonlocal sent
        chunk = b"csrf=" + b"a" * (64 * 1024 - 5)
        while sent < 50 * MB:
            sent += len(chunk)
            yield chunk

    tracemalloc.start()
    try:
        response = await http.post(
            f"/checkout/{execution['checkoutSessionId']}/pay",
            content=fifty_megabytes(),
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert 400 <= response.status_code < 500
    assert sent < 1 * MB, f"the server read {sent} bytes of it"
    assert peak < 5 * MB, f"memory peaked at {peak} bytes"
    still = await wait_status(http, execution["id"], tenant.auth, "awaiting_payment")
    assert still["paymentStatus"] == "pending"


async def test_deeply_nested_json_is_400_naming_the_body(
    http: httpx.AsyncClient, tenant: Tenant
) -> None:
    deep = "[" * 100_000 + "]" * 100_000
    url = f"/v1/public/workflows/{tenant.free_wf}/executions"
    response = await http.post(url, content=deep, headers=tenant.auth)
    assert response.status_code == 400, response.text
    assert response.json()["errors"][0]["field"] == "body"
    nested: Any = {}
    for _ in range(100):
        nested = {"a": nested}
    body = {"sourceSystem": "s", "sourceEntityType": "t", "requestPayload": nested}
    too_deep = await http.post(url, json=body, headers=tenant.auth)
    assert too_deep.status_code == 400
    assert [e["field"] for e in too_deep.json()["errors"]] == ["requestPayload"]
    callback = await http.post(
        "/v1/public/executions/exe_x/callbacks/s",
        content=deep,
        headers={"Authorization": "Bearer cb_x"},
    )
    assert callback.status_code == 400 and callback.json()["errors"][0]["field"] == "body"
    assert tenant.orders() == 0


async def test_compressed_bomb_is_refused_and_small_gzip_is_read(
    http: httpx.AsyncClient,
    tenant: Tenant,
    allowed: tuple[Target, str],  # noqa: F811
) -> None:
    target, base = allowed
    bomb = await run(http, tenant, http_flow(base + "/bomb"), "workflow_failed")
    assert "exceeds 1048576 bytes" in bomb["statusReason"], bomb["statusReason"]
    assert target.headers[-1]["accept-encoding"] == "identity"
    small = await run(http, tenant, http_flow(base + "/gzipped"), "workflow_succeeded")
    assert small["responsePayload"]["body"] == {"z": "0" * 1000}


async def test_every_http_request_carries_the_steps_idempotency_key(
    http: httpx.AsyncClient,
    client: Client,
    tenant: Tenant,
    allowed: tuple[Target, str],  # noqa: F811
) -> None:
    target, base = allowed
    before = len(target.headers)
    flow = http_flow(
        base + "/flaky",
        headers={"X-Attempt": {"expr": "to_string(execution.attempt)"}},
    )
    flow["steps"].append(
        {
            "id": "own",
            "kind": "http",
            "url": base + "/json",
            "headers": {"Idempotency-Key": "mine", "X-Execution": {"expr": "execution.id"}},
        }
    )
    done = await run(http, tenant, flow, "workflow_succeeded")
    seen = target.headers[before:]
    flaky = [h for h in seen if h.get("x-attempt")]
    assert [h["idempotency-key"] for h in flaky] == [f"{done['id']}:call"] * 3
    assert [h["x-attempt"] for h in flaky] == ["1", "2", "3"]
    [own] = [h for h in seen if h.get("x-execution")]
    assert own["idempotency-key"] == "mine" and own["x-execution"] == done["id"]
    assert json.dumps(done["workflowId"]) in await decoded_history(client, done["id"])


async def test_tampered_foreign_and_garbage_cursors_are_400(
    http: httpx.AsyncClient, tenant: Tenant, other_tenant: Tenant
) -> None:
    from tests.helpers import eventually

    for _ in range(3):
        await create(http, tenant, tenant.free_wf, sourceSystem="crm")
    url = f"/v1/public/workflows/{tenant.free_wf}/executions"
    first = await eventually(
        lambda: http.get(url, params={"limit": 2, "sourceSystem": "crm"}, headers=tenant.auth),
        lambda r: r.json()["data"]["hasMore"],
    )
    cursor = first.json()["data"]["nextCursor"]
    token, _, mac = cursor.partition(".")
    ok = await http.get(
        url, params={"limit": 2, "sourceSystem": "crm", "cursor": cursor}, headers=tenant.auth
    )
    assert ok.status_code == 200 and ok.json()["data"]["executions"]
    flipped = ("A" if token[5] != "A" else "B").join((token[:5], token[6:]))
    cases = {
        "tampered token": ({"sourceSystem": "crm", "cursor": f"{flipped}.{mac}"}, tenant),
        "other filters": ({"sourceSystem": "erp", "cursor": cursor}, tenant),
        "no filters": ({"cursor": cursor}, tenant),
        "another organization": ({"sourceSystem": "crm", "cursor": cursor}, other_tenant),
        "garbage": ({"cursor": "%%%not-base64"}, tenant),
        "raw page token": ({"sourceSystem": "crm", "cursor": token}, tenant),
    }
    for case, (params, who) in cases.items():
        response = await http.get(url, params={"limit": 2, **params}, headers=who.auth)
        assert response.status_code == 400, (case, response.text)
        assert [e["field"] for e in response.json()["errors"]] == ["cursor"], case


def test_expressions_that_would_run_long_or_build_too_much_are_stopped() -> None:
    import pytest
    from temporalio.exceptions import ApplicationError

    from activities.steps.expressions import evaluate

    def refused(expression: str, context: Any) -> str:
        with pytest.raises(ApplicationError) as caught:
            evaluate(expression, context)
        assert caught.value.non_retryable and caught.value.type == "ExpressionBudget"
        return str(caught.value)

    # Each stage doubles what JSON would repeat: 2^40 leaves, refused without expanding them.
    assert "result over" in refused(" | ".join(["[@, @]"] * 40), [1])
    assert "string over" in refused("to_string([@, @, @, @, @, @, @, @, @, @, @, @])", "x" * 99_000)
    long_strings = {"s": "y" * 200_000}
    assert "string over" in refused("join('', [s, s, s, s, s, s])", long_strings)
    slow = (
        "sort_by(@, &join('', [to_string(@), to_string(@)]))"
        "[*].join('-', [to_string(@), to_string(@), to_string(@)])"
    )
    assert "ran longer than" in refused(slow, list(range(90_000)))
    assert evaluate("join(' ', ['hello', name])", {"name": "Ada"}) == "hello Ada"


async def test_a_transform_building_too_much_fails_the_step_clearly(
    http: httpx.AsyncClient, tenant: Tenant
) -> None:
    from tests.helpers import GREETING

    wf = tenant.workflow(
        {
            **GREETING,
            "steps": [
                {
                    "id": "blow",
                    "kind": "transform",
                    "expression": "join('', [request.s, request.s, request.s, request.s, "
                    "request.s, request.s, request.s, request.s, request.s, request.s])",
                }
            ],
        }
    )
    response = await create(http, tenant, wf, requestPayload={"s": "z" * 200_000})
    eid = response.json()["data"]["execution"]["id"]
    done = await wait_status(http, eid, tenant.auth, "workflow_failed")
    assert done["statusReason"].startswith("step 'blow' failed: expression stopped: it built")


class BigUpstream:
    def app(self) -> Any:
        from starlette.applications import Starlette
        from starlette.responses import Response
        from starlette.routing import Route

        payload = json.dumps({"blob": "b" * (900 * 1024)}).encode()

        async def big(request: Any) -> Response:
            return Response(payload, media_type="application/json")

        return Starlette(routes=[Route("/big", big)])


async def test_outputs_past_the_budget_fail_clearly_and_refund(
    http: httpx.AsyncClient, client: Client, tenant: Tenant
) -> None:
    from tests.helpers import GREETING, PRICE
    from tests.money import assert_money_invariants, pay_via_webhook
    from tests.servers import serve

    def fetch(step_id: str, url: str) -> dict[str, Any]:
        return {"id": step_id, "kind": "http", "url": url, "timeoutSeconds": 10}

    with serve(BigUpstream().app()) as base:
        # Steps that do not read earlier outputs are not sent them.
        lean = tenant.workflow(
            {
                **GREETING,
                "steps": [
                    fetch("a", f"{base}/big"),
                    {"id": "b", "kind": "transform", "expression": "request.name"},
                    {"id": "c", "kind": "transform", "expression": "steps.a.status"},
                ],
                "output": "{b: steps.b, c: steps.c}",
            }
        )
        ok = await create(http, tenant, lean)
        eid = ok.json()["data"]["execution"]["id"]
        done = await wait_status(http, eid, tenant.auth, "workflow_succeeded", 30)
        assert done["responsePayload"] == {"b": "Ada", "c": 200}
        history = await client.get_workflow_handle(eid).fetch_history()
        inputs = [
            e.activity_task_scheduled_event_attributes.input.payloads[0].data
            for e in history.events
            if e.HasField("activity_task_scheduled_event_attributes")
            and e.activity_task_scheduled_event_attributes.activity_type.name == "steps.run"
        ]
        sizes = [len(i) for i in inputs]  # a, b, c, output
        assert sizes[1] < 10_000 and sizes[3] < 10_000, sizes  # b and output: no blob
        assert sizes[2] > 900 * 1024, sizes  # c reads steps.a, so it gets it

        heavy = tenant.workflow(
            {
                **GREETING,
                "price": PRICE,
                "steps": [fetch(s, f"{base}/big") for s in ("one", "two", "three")],
            }
        )
        paid = (await create(http, tenant, heavy)).json()["data"]["execution"]
        await pay_via_webhook(http, tenant.engine, paid)
        failed = await wait_status(http, paid["id"], tenant.auth, "workflow_failed", 30)
    assert failed["statusReason"].startswith("step 'two' failed: its output is over the")
    assert failed["paymentStatus"] == "refunded"
    await assert_money_invariants(client, tenant.engine, failed)
