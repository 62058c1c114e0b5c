"""The execution view: who may read what."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from api.client_tokens import issue
from tests.helpers import Tenant, create, key, view, wait_status
from tollway.settings import Settings

HIDDEN = {"requestPayload", "initiatedById", "initiatedByType", "organizationId"}


async def test_other_organization_gets_404_and_its_own_execution(
    http: httpx.AsyncClient, tenant: Tenant, other_tenant: Tenant
) -> None:
    idem = key()
    mine = (await create(http, tenant, tenant.free_wf, idempotencyKey=idem)).json()
    eid = mine["data"]["execution"]["id"]
    foreign = await view(http, eid, other_tenant.auth)
    assert foreign.status_code == 404
    assert foreign.json()["error"] == "not_found"
    theirs = await create(http, other_tenant, tenant.free_wf, idempotencyKey=idem)
    assert theirs.json()["data"]["execution"]["id"] != eid
    assert "idempotent-replayed" not in theirs.headers


async def test_client_token_sees_client_safe_view_only(
    http: httpx.AsyncClient, tenant: Tenant
) -> None:
    data = (await create(http, tenant, tenant.free_wf, clientSafeMetadata={"a": 1})).json()["data"]
    eid = data["execution"]["id"]
    bearer = {"Authorization": f"Bearer {data['clientToken']}"}
    done = await wait_status(http, eid, bearer, "workflow_succeeded")
    assert not HIDDEN & set(done)
    assert done["clientSafeMetadata"] == {"a": 1}
    assert done["responsePayload"] == {"greeting": "hello Ada"}

    by_query = await http.get(
        f"/v1/public/executions/{eid}", params={"client_token": data["clientToken"]}
    )
    assert by_query.status_code == 200
    assert not HIDDEN & set(by_query.json()["data"]["execution"])
    # Client-token reads are rate-limited per execution, and say so.
    assert int(by_query.headers["ratelimit-limit"]) > 0


async def test_client_token_opens_nothing_else(http: httpx.AsyncClient, tenant: Tenant) -> None:
    first = (await create(http, tenant, tenant.free_wf)).json()["data"]
    second = (await create(http, tenant, tenant.free_wf)).json()["data"]
    bearer = {"Authorization": f"Bearer {first['clientToken']}"}
    other = await view(http, second["execution"]["id"], bearer)
    assert other.status_code == 404
    # Nor does it act as an API token.
    refused = await http.post(
        f"/v1/public/workflows/{tenant.free_wf}/executions",
        json={"sourceSystem": "a", "sourceEntityType": "b"},
        headers=bearer,
    )
    assert refused.status_code == 401


async def test_forged_and_expired_client_tokens_are_401(
    http: httpx.AsyncClient, tenant: Tenant, settings: Settings
) -> None:
    data = (await create(http, tenant, tenant.free_wf)).json()["data"]
    eid = data["execution"]["id"]
    secret = settings.client_token_secret.get_secret_value()
    forged = issue("another-secret-entirely", eid, 3600)
    expired = issue(secret, eid, 60, now=time.time() - 3600)
    tampered = data["clientToken"][:-2] + ("AA" if not data["clientToken"].endswith("AA") else "BB")
    for token in (forged, expired, tampered, "ct_", "ct_abc.def"):
        response = await view(http, eid, {"Authorization": f"Bearer {token}"})
        assert response.status_code == 401, token


async def test_view_of_unknown_execution_is_404(http: httpx.AsyncClient, tenant: Tenant) -> None:
    response = await view(http, "exe_doesnotexist", tenant.auth)
    assert response.status_code == 404


async def test_view_requires_a_token(http: httpx.AsyncClient, tenant: Tenant) -> None:
    data = (await create(http, tenant, tenant.free_wf)).json()["data"]
    response = await http.get(f"/v1/public/executions/{data['execution']['id']}")
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"


async def test_a_fault_is_a_500_logged_with_its_request_id(
    client: Any,
    settings: Settings,
    engine: Any,
    tenant: Tenant,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from api.app import build_deps, create_app

    deps = build_deps(settings, client, engine)

    async def broken(execution_id: str) -> None:
        raise RuntimeError("database on fire")

    deps.service.view = broken  # type: ignore[method-assign,assignment]
    app = create_app(settings, deps)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app, raise_app_exceptions=False),
        base_url="http://tollway.test",
    ) as http:
        response = await http.get(
            "/v1/public/executions/exe_x", headers={**tenant.auth, "X-Request-ID": "fault-42"}
        )
    assert response.status_code == 500
    body = response.json()
    assert body["requestId"] == "fault-42" and body["error"] == "internal"
    assert response.headers.get_list("x-request-id") == ["fault-42"]
    assert "database on fire" not in response.text  # no internals leak to the caller
    logged = capsys.readouterr()
    assert "fault-42" in logged.out + logged.err and "database on fire" in logged.out + logged.err
