"""The OpenAPI document against the running service: schemathesis generates valid and invalid
requests for every operation and sends them to a real ``tollway api`` process with a real
``tollway worker`` on the suite's Temporal dev server. No 5xx, every answer conforms to the
document (status, content type, headers, body), invalid data is refused."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from sqlalchemy import Engine

from api.bodies import MAX_KEY_LENGTH, has_control
from api.docs_page import CSP
from api.openapi import openapi_document
from tests.conftest import make_settings
from tests.helpers import body, key, make_tenant
from tests.processes import api_process, worker_process

SCHEMA = schemathesis.openapi.from_dict(openapi_document())
SCHEMA.config.generation.update(
    modes=[schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE],
    max_examples=30,
    deterministic=True,  # the same cases on every run: CI judges the code, not the dice
)
SEEN: dict[str, set[int]] = {}  # operation label -> statuses answered
PENDING = "Bearer tw_token-of-the-served-tenant"  # replaced by the real one in each case


@SCHEMA.auth()
class ApiToken:
    """Requests carry the tenant's real API token (cases are partly generated at collection,
    before the tenant exists: a stand-in, swapped in the test); schemathesis's own checks also
    send each request without it and with a wrong one."""

    def get(self, case: schemathesis.Case, context: schemathesis.AuthContext) -> str:
        return PENDING

    def set(self, case: schemathesis.Case, data: str, context: schemathesis.AuthContext) -> None:
        case.headers = {**(case.headers or {}), "Authorization": data}


@dataclass(frozen=True)
class Served:
    base: str
    token: str
    workflow_id: str
    execution_id: str


@pytest.fixture(scope="module")
def served(engine: Engine, database_url: str, temporal_address: str) -> Iterator[Served]:
    tenant = make_tenant(engine, rate_limit="100000/second")
    config = make_settings(
        database_url, temporal_address, sse_max_seconds=1.0, sse_keepalive_seconds=0.5
    )
    with worker_process(config), api_process(config) as api:
        base = api.base
        created = httpx.post(
            f"{base}/v1/public/workflows/{tenant.priced_wf}/executions",
            json=body(idempotencyKey=key()),
            headers={"Authorization": f"Bearer {tenant.token}"},
            timeout=30,
        )
        assert created.status_code == 200, created.text
        execution_id = created.json()["data"]["execution"]["id"]
        yield Served(base, tenant.token, tenant.free_wf, execution_id)


def test_the_served_document_is_the_one_tested_and_the_docs_page_renders_it(
    served: Served,
) -> None:
    assert httpx.get(f"{served.base}/openapi.json").json() == openapi_document()
    page = httpx.get(f"{served.base}/docs")
    assert page.status_code == 200 and page.headers["content-security-policy"] == CSP
    assert "<script" not in page.text and not re.search(r"""(src|href)=["']?https?:""", page.text)
    for path, item in openapi_document()["paths"].items():
        assert path in page.text
        for method, op in item.items():
            if method != "parameters":
                assert f'id="{op["operationId"]}"' in page.text


def _valid_key(value: object) -> bool:
    return isinstance(value, str) and 1 <= len(value) <= MAX_KEY_LENGTH and not has_control(value)


@SCHEMA.parametrize()
@settings(deadline=None, suppress_health_check=list(HealthCheck))
def test_every_operation_conforms_to_the_document(case: schemathesis.Case, served: Served) -> None:
    if case.headers and case.headers.get("Authorization") == PENDING:
        case.headers["Authorization"] = f"Bearer {served.token}"
    meta = case.meta
    assert meta is not None
    negative = {str(getattr(where, "value", where)) for where, info in meta.components.items()
                if not info.mode.is_positive}  # fmt: skip
    if "path" not in negative:
        # Requests reach real resources, not only the 404s random ids get, so each check
        # judges what the route does with its input.
        params = case.path_parameters or {}
        if "id" in params:
            params["id"] = served.workflow_id
        if "executionId" in params:
            params["executionId"] = served.execution_id
    if meta.generation.mode.is_positive and case.query:
        case.query.pop("cursor", None)  # only ever one the API returned; a random one is a 400
        if {"createdAfter", "createdBefore"} <= set(case.query):  # a range, in its order
            after, before = sorted((case.query["createdAfter"], case.query["createdBefore"]))
            if after == before:
                del case.query["createdBefore"]
            else:
                case.query["createdAfter"], case.query["createdBefore"] = after, before
    # A fresh key for each case wherever the key itself is valid: the same key with another
    # body is a 400 by design (the document cannot say which keys the server has seen), which
    # would hide what the case is about; body and header must agree.
    fresh = key()
    if isinstance(case.body, dict) and _valid_key(case.body.get("idempotencyKey")):
        case.body["idempotencyKey"] = fresh
    if case.headers and _valid_key(case.headers.get("Idempotency-Key")):
        case.headers["Idempotency-Key"] = fresh
    response = case.call_and_validate(base_url=served.base, timeout=30)
    SEEN.setdefault(case.operation.label, set()).add(response.status_code)


def test_every_operation_was_answered_with_success_and_with_refusals() -> None:
    """The run above reached real resources (a 2xx) and was refused (a 4xx) on every
    operation that has inputs to get wrong, so the checks judged both kinds of answer."""
    assert set(SEEN) == {result.ok().label for result in SCHEMA.get_all_operations()}
    secret = {  # success needs a secret the generator cannot know; other tests cover it
        "POST /v1/public/executions/{executionId}/callbacks/{stepId}",  # the step's token
        "POST /v1/webhooks/payments/{provider}",  # the provider's signature
    }
    for label, statuses in SEEN.items():
        assert label in secret or any(200 <= s < 300 for s in statuses), (label, statuses)
        if "{" in label:
            assert any(400 <= s < 500 for s in statuses), (label, statuses)
