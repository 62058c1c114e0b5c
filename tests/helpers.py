"""Test helpers: tenants with tokens and workflows, request builders, polling."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx
from sqlalchemy import Engine
from sqlmodel import Session, func, select
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.service import RPCError, RPCStatusCode

from tollway import admin
from tollway.codec import with_codec
from tollway.definitions import parse_definition
from tollway.ids import execution_id
from tollway.settings import Settings
from tollway.tables import Order

T = TypeVar("T")

GREETING: dict[str, Any] = {
    "name": "Greeting",
    "access": "public_execute",
    "steps": [
        {
            "id": "shape",
            "kind": "transform",
            "expression": "{greeting: join(' ', ['hello', request.name])}",
        }
    ],
    "output": "steps.shape",
}
PRICE = {"amount": 500, "currency": "usd"}
PARTNER_SECRET = "partner-secret-value-7f3a9c"
WEBHOOK_SECRET = "whsec_test_current_0123456789"
PREVIOUS_WEBHOOK_SECRET = "whsec_test_previous_0123456789"
CLIENT_TOKEN_SECRET = "client-token-secret-for-tests-0123456789"
SECRETS_KEY = "dGVzdHMtb25seS1mZXJuZXQta2V5LTMyLWJ5dGVzISE="  # Fernet: 32 bytes, base64
PAYLOAD_KEYS = "test1:dGVzdHMtb25seS1wYXlsb2FkLWtleS0zMi1ieXRlcyE="  # AES-256: 32 bytes
CONVERTER = with_codec(pydantic_data_converter, PAYLOAD_KEYS)


@dataclass
class Tenant:
    org_id: str
    token_id: str
    token: str
    free_wf: str
    priced_wf: str
    private_wf: str
    engine: Engine

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def execution_id(self, workflow_id: str, key: str) -> str:
        return execution_id(self.org_id, workflow_id, key)

    def workflow(self, definition: dict[str, Any]) -> str:
        return admin.create_workflow(self.engine, self.org_id, parse_definition(definition)).id

    def secret(self, name: str, value: str, *hosts: str) -> None:
        from tollway.org_secrets import SecretStore

        SecretStore(self.engine, SECRETS_KEY).set(self.org_id, name, value, list(hosts))

    def orders(self) -> int:
        with Session(self.engine) as session:
            query = select(func.count()).select_from(Order)
            return int(session.exec(query.where(Order.organization_id == self.org_id)).one())


def make_tenant(engine: Engine, rate_limit: str = "1000/second") -> Tenant:
    org = admin.create_organization(engine, f"Org {uuid.uuid4().hex[:6]}")
    row, token = admin.create_token(engine, org.id, rate_limit)
    free = admin.create_workflow(engine, org.id, parse_definition(GREETING)).id
    priced = admin.create_workflow(
        engine, org.id, parse_definition({**GREETING, "price": PRICE})
    ).id
    private = admin.create_workflow(
        engine, org.id, parse_definition({**GREETING, "access": "private"})
    ).id
    return Tenant(org.id, row.id, token, free, priced, private, engine)


def body(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "sourceSystem": "crm",
        "sourceEntityType": "contact",
        "requestPayload": {"name": "Ada"},
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def key() -> str:
    return f"key-{uuid.uuid4().hex}"


async def create(
    http: httpx.AsyncClient,
    tenant: Tenant,
    workflow_id: str,
    headers: dict[str, str] | None = None,
    **overrides: Any,
) -> httpx.Response:
    return await http.post(
        f"/v1/public/workflows/{workflow_id}/executions",
        json=body(**overrides),
        headers={**tenant.auth, **(headers or {})},
    )


@asynccontextmanager
async def api_client(
    settings: Settings, client: Client, engine: Engine, timeout: float = 5.0, metrics: bool = False
) -> AsyncIterator[httpx.AsyncClient]:
    """The API app with these settings, driven in the test's event loop; ``metrics``: its
    dependencies count into the app's /metrics, as in a served app."""
    from api.app import build_deps, create_app
    from api.metrics import Metrics

    counted = Metrics() if metrics else None
    app = create_app(settings, build_deps(settings, client, engine, counted))
    if counted is not None:
        app.state.metrics = counted
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://tollway.test", timeout=timeout
    ) as http:
        yield http


async def eventually(
    probe: Callable[[], Awaitable[T]], ok: Callable[[T], bool], timeout: float = 15.0
) -> T:
    """Poll until ``ok(value)``; returns the last value (the caller asserts on it)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = await probe()
        if ok(value) or asyncio.get_running_loop().time() > deadline:
            return value
        await asyncio.sleep(0.05)


async def view(http: httpx.AsyncClient, execution_id: str, auth: dict[str, str]) -> httpx.Response:
    return await http.get(f"/v1/public/executions/{execution_id}", headers=auth)


async def current(http: httpx.AsyncClient, tenant: Tenant, execution_id: str) -> dict[str, Any]:
    """The execution as its organization reads it now (asserting the read succeeds)."""
    response = await view(http, execution_id, tenant.auth)
    assert response.status_code == 200, response.text
    execution: dict[str, Any] = response.json()["data"]["execution"]
    return execution


async def wait_status(
    http: httpx.AsyncClient,
    execution_id: str,
    auth: dict[str, str],
    status: str,
    timeout: float = 15.0,
) -> dict[str, Any]:
    response = await eventually(
        lambda: view(http, execution_id, auth),
        lambda r: r.status_code == 200 and r.json()["data"]["execution"]["status"] == status,
        timeout,
    )
    assert response.status_code == 200, response.text
    execution: dict[str, Any] = response.json()["data"]["execution"]
    assert execution["status"] == status, execution
    return execution


async def workflow_exists(client: Client, workflow_id: str) -> bool:
    try:
        await client.get_workflow_handle(workflow_id).describe()
    except RPCError as err:
        if err.status == RPCStatusCode.NOT_FOUND:
            return False
        raise
    return True


async def count_workflows(client: Client, query: str) -> int:
    return (await client.count_workflows(query)).count
