"""Every way a create can be refused: the right status, the envelope, the field named, and
nothing started in Temporal, nothing written to the database."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest
from temporalio.client import Client

from tests.helpers import Tenant, body, count_workflows, key, make_tenant, workflow_exists
from tollway import admin


def assert_envelope(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    payload: dict[str, Any] = response.json()
    assert payload["code"] == status
    assert payload["data"] is None
    assert payload["requestId"] == response.headers["x-request-id"]
    assert payload["message"]
    return payload


def fields(payload: dict[str, Any]) -> set[str]:
    return {e["field"] for e in payload.get("errors", [])}


async def post_raw(
    http: httpx.AsyncClient, tenant: Tenant, content: bytes, idem: str, wf: str | None = None
) -> httpx.Response:
    return await http.post(
        f"/v1/public/workflows/{wf or tenant.free_wf}/executions",
        content=content,
        headers={**tenant.auth, "Content-Type": "application/json", "Idempotency-Key": idem},
    )


BAD_BODIES: list[tuple[str, Any, set[str]]] = [
    ("missing sourceSystem", {"sourceEntityType": "x"}, {"sourceSystem"}),
    ("missing both required", {}, {"sourceSystem", "sourceEntityType"}),
    ("empty sourceSystem", {"sourceSystem": "", "sourceEntityType": "x"}, {"sourceSystem"}),
    (
        "blank sourceEntityType",
        {"sourceSystem": "a", "sourceEntityType": "  "},
        {"sourceEntityType"},
    ),
    ("number for string", {"sourceSystem": 5, "sourceEntityType": "x"}, {"sourceSystem"}),
    ("string for object", body(requestPayload="hi"), {"requestPayload"}),
    ("list for object", body(clientSafeMetadata=[1]), {"clientSafeMetadata"}),
    ("number for externalRef", body(externalRef=12), {"externalRef"}),
    ("unknown field", body(colour="red"), {"colour"}),
    (
        "two unknown fields and a bad type",
        {**body(a=1, b=2), "sourceEntityId": 3},
        {"a", "b", "sourceEntityId"},
    ),
    ("too long key", body(idempotencyKey="k" * 256), {"idempotencyKey"}),
    ("empty key", body(idempotencyKey=""), {"idempotencyKey"}),
    ("key differs from header", body(idempotencyKey="other"), {"idempotencyKey"}),
]


@pytest.mark.parametrize(
    ("case", "payload", "expected"), BAD_BODIES, ids=[c[0] for c in BAD_BODIES]
)
async def test_bad_body_is_400_naming_each_field_and_starts_nothing(
    http: httpx.AsyncClient,
    client: Client,
    tenant: Tenant,
    case: str,
    payload: Any,
    expected: set[str],
) -> None:
    idem = key()
    response = await post_raw(http, tenant, json.dumps(payload).encode(), idem)
    result = assert_envelope(response, 400)
    assert fields(result) == expected, result
    assert result["error"] == "validation_error"
    assert not await workflow_exists(client, tenant.execution_id(tenant.free_wf, idem))
    assert tenant.orders() == 0


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"{not json", "not valid JSON"),
        (b"", "not valid JSON"),
        (b"\xff\xfe", "not valid JSON"),
        (b"[1, 2]", "JSON object"),
        (b'"text"', "JSON object"),
        (b"null", "JSON object"),
    ],
)
async def test_unparseable_or_non_object_body_is_400(
    http: httpx.AsyncClient, client: Client, tenant: Tenant, content: bytes, message: str
) -> None:
    idem = key()
    response = await post_raw(http, tenant, content, idem, wf=tenant.priced_wf)
    result = assert_envelope(response, 400)
    assert fields(result) == {"body"}
    assert message in result["message"]
    assert not await workflow_exists(client, tenant.execution_id(tenant.priced_wf, idem))
    assert tenant.orders() == 0


async def test_too_long_idempotency_header_is_400(http: httpx.AsyncClient, tenant: Tenant) -> None:
    response = await post_raw(http, tenant, json.dumps(body()).encode(), "k" * 256)
    assert fields(assert_envelope(response, 400)) == {"Idempotency-Key"}


async def test_oversize_body_is_413_and_starts_nothing(
    http: httpx.AsyncClient, client: Client, tenant: Tenant
) -> None:
    idem = key()
    big = json.dumps(body(requestPayload={"blob": "x" * (256 * 1024)})).encode()
    response = await post_raw(http, tenant, big, idem, wf=tenant.priced_wf)
    assert assert_envelope(response, 413)["error"] == "payload_too_large"
    assert not await workflow_exists(client, tenant.execution_id(tenant.priced_wf, idem))
    assert tenant.orders() == 0


async def test_oversize_body_without_content_length_is_413(
    http: httpx.AsyncClient, tenant: Tenant
) -> None:
    async def chunks():  # type: ignore[no-untyped-def]
        for _ in range(300):
            yield b"x" * 1024

    response = await http.post(
        f"/v1/public/workflows/{tenant.free_wf}/executions",
        content=chunks(),
        headers={**tenant.auth, "Content-Type": "application/json"},
    )
    assert_envelope(response, 413)


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "",
        "Bearer",
        "Bearer tw_not-a-real-token",
        "Basic dXNlcjpwYXNz",
        "Bearer ct_forged.token",
    ],
)
async def test_missing_or_bad_token_is_401_with_challenge(
    http: httpx.AsyncClient, client: Client, tenant: Tenant, authorization: str | None
) -> None:
    idem = key()
    headers = {"Idempotency-Key": idem}
    if authorization is not None:
        headers["Authorization"] = authorization
    response = await http.post(
        f"/v1/public/workflows/{tenant.free_wf}/executions", json=body(), headers=headers
    )
    assert assert_envelope(response, 401)["error"] == "unauthorized"
    assert response.headers["www-authenticate"] == "Bearer"
    assert not await workflow_exists(client, tenant.execution_id(tenant.free_wf, idem))


async def test_unknown_workflow_is_404(http: httpx.AsyncClient, tenant: Tenant) -> None:
    for wf in ("wf_doesnotexist", "x" * 300):
        response = await http.post(
            f"/v1/public/workflows/{wf}/executions", json=body(), headers=tenant.auth
        )
        assert assert_envelope(response, 404)["error"] == "not_found"


async def test_foreign_private_workflow_is_403_and_own_private_runs(
    http: httpx.AsyncClient, client: Client, tenant: Tenant, other_tenant: Tenant
) -> None:
    idem = key()
    response = await http.post(
        f"/v1/public/workflows/{tenant.private_wf}/executions",
        json=body(),
        headers={**other_tenant.auth, "Idempotency-Key": idem},
    )
    assert assert_envelope(response, 403)["error"] == "forbidden"
    assert not await workflow_exists(client, other_tenant.execution_id(tenant.private_wf, idem))
    own = await http.post(
        f"/v1/public/workflows/{tenant.private_wf}/executions", json=body(), headers=tenant.auth
    )
    assert own.status_code == 200, own.text


async def test_foreign_public_workflow_runs_for_any_token(
    http: httpx.AsyncClient, tenant: Tenant, other_tenant: Tenant
) -> None:
    response = await http.post(
        f"/v1/public/workflows/{tenant.free_wf}/executions",
        json=body(),
        headers=other_tenant.auth,
    )
    assert response.status_code == 200, response.text
    assert response.json()["data"]["execution"]["organizationId"] == other_tenant.org_id


async def test_disabled_workflow_is_403(http: httpx.AsyncClient, tenant: Tenant) -> None:
    from tests.helpers import GREETING

    wf = tenant.workflow({**GREETING, "enabled": False})
    response = await http.post(
        f"/v1/public/workflows/{wf}/executions", json=body(), headers=tenant.auth
    )
    assert "disabled" in assert_envelope(response, 403)["message"]


async def test_token_without_create_scope_is_403(
    http: httpx.AsyncClient, client: Client, tenant: Tenant
) -> None:
    _row, read_only = admin.create_token(
        tenant.engine, tenant.org_id, "10/second", ("executions:read",)
    )
    idem = key()
    response = await http.post(
        f"/v1/public/workflows/{tenant.free_wf}/executions",
        json=body(),
        headers={"Authorization": f"Bearer {read_only}", "Idempotency-Key": idem},
    )
    assert "executions:create" in assert_envelope(response, 403)["message"]
    assert not await workflow_exists(client, tenant.execution_id(tenant.free_wf, idem))


async def test_rate_limit_is_429_with_retry_after_and_headers(
    http: httpx.AsyncClient, client: Client, engine: Any
) -> None:
    limited = make_tenant(engine, rate_limit="3/minute")
    statuses = []
    for _ in range(3):
        response = await http.post(
            f"/v1/public/workflows/{limited.free_wf}/executions", json=body(), headers=limited.auth
        )
        statuses.append(response.status_code)
        assert response.headers["ratelimit-limit"] == "3"
    assert statuses == [200, 200, 200]
    assert response.headers["ratelimit-remaining"] == "0"
    idem = key()
    refused = await http.post(
        f"/v1/public/workflows/{limited.free_wf}/executions",
        json=body(),
        headers={**limited.auth, "Idempotency-Key": idem},
    )
    assert assert_envelope(refused, 429)["error"] == "rate_limited"
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    assert refused.headers["ratelimit-remaining"] == "0"
    assert 0 < int(refused.headers["ratelimit-reset"]) <= 60
    assert not await workflow_exists(client, limited.execution_id(limited.free_wf, idem))
    await asyncio.sleep(0.5)  # let visibility catch up before counting
    assert await count_workflows(client, f"TollwayOrganizationId = '{limited.org_id}'") == 3


async def test_sane_request_id_is_echoed_and_insane_one_replaced(
    http: httpx.AsyncClient, tenant: Tenant
) -> None:
    response = await http.post(
        "/v1/public/workflows/wf_nope/executions",
        json=body(),
        headers={**tenant.auth, "X-Request-ID": "abc-123"},
    )
    assert response.json()["requestId"] == "abc-123" == response.headers["x-request-id"]
    response = await http.post(
        "/v1/public/workflows/wf_nope/executions",
        json=body(),
        headers={**tenant.auth, "X-Request-ID": "<script>" + "x" * 300},
    )
    assert response.json()["requestId"].startswith("req_")


async def test_unknown_route_and_method_use_the_envelope(http: httpx.AsyncClient) -> None:
    response = await http.get("/v1/nothing-here")
    assert_envelope(response, 404)
    response = await http.delete("/v1/public/workflows/wf_x/executions")
    assert_envelope(response, 405)
