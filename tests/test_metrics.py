"""The API's Prometheus metrics, scraped the way Prometheus does."""

from __future__ import annotations

from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import Engine
from temporalio.client import Client
from temporalio.worker import Worker

from tests.conftest import make_settings
from tests.helpers import GREETING, Tenant, api_client, create, key
from tests.money import pay_via_webhook, send
from tests.processes import api_process
from tollway.settings import Settings


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


async def test_metrics_count_requests_creates_errors_and_webhooks(
    client: Client, engine: Engine, settings: Settings, tenant: Tenant, worker: Worker
) -> None:
    async with api_client(settings, client, engine) as http:  # a fresh app: fresh counters
        idem = key()
        assert (await create(http, tenant, tenant.free_wf, idempotencyKey=idem)).status_code == 200
        assert (await create(http, tenant, tenant.free_wf, idempotencyKey=idem)).status_code == 200
        assert (await create(http, tenant, "wf_missing")).status_code == 404
        bad = await send(http, {"id": "evt_m", "type": "x"}, header="t=1,v1=00")
        assert bad.status_code == 400
        scraped = await http.get("/metrics")
    assert scraped.status_code == 200
    assert scraped.headers["content-type"].startswith("text/plain")
    got = samples(scraped.text)
    route = "/v1/public/workflows/{id}/executions"
    assert (
        got[
            (
                "tollway_http_requests_total",
                (("method", "POST"), ("route", route), ("status", "200")),
            )
        ]
        == 2
    )
    assert (
        got[
            (
                "tollway_http_requests_total",
                (("method", "POST"), ("route", route), ("status", "404")),
            )
        ]
        == 1
    )
    assert got[("tollway_creates_total", (("outcome", "created"),))] == 1
    assert got[("tollway_creates_total", (("outcome", "replayed"),))] == 1
    assert got[("tollway_client_errors_total", (("reason", "not_found"),))] == 1
    assert got[("tollway_client_errors_total", (("reason", "invalid_signature"),))] == 1
    assert (
        got[
            (
                "tollway_payment_webhooks_total",
                (("outcome", "invalid_signature"), ("provider", "local")),
            )
        ]
        == 1
    )
    assert got[("tollway_sse_streams_open", ())] == 0
    count = ("tollway_http_request_duration_seconds_count", (("method", "POST"), ("route", route)))
    assert got[count] == 3


async def test_readyz_names_each_dependency(
    client: Client, engine: Engine, settings: Settings
) -> None:
    from tollway.db import make_engine

    async with api_client(settings, client, engine) as http:
        ready = await http.get("/readyz")
        assert ready.status_code == 200
        assert ready.json()["checks"] == {"database": "ok", "temporal": "ok"}
        assert (await http.get("/healthz")).text == "ok"
    dead = make_engine("postgresql://postgres@127.0.0.1:1/none")
    async with api_client(settings, client, dead) as http:
        down = await http.get("/readyz")
    assert down.status_code == 503 and down.headers["retry-after"]
    assert down.json()["message"] == "unavailable: database"
    assert down.json()["checks"]["temporal"] == "ok"
    assert down.json()["checks"]["database"].startswith("unavailable")


async def test_the_api_counts_its_calls_to_temporal_one_per_create_replay_view_and_payment(
    database_url: str, temporal_address: str, settings: Settings, tenant: Tenant,
    engine: Engine, worker: Worker, client: Client,
) -> None:  # fmt: skip
    """A real ``tollway api`` (its Temporal client carries the counting interceptor)."""
    config = make_settings(database_url, temporal_address, task_queue=settings.task_queue)
    with api_process(config) as api:
        async with httpx.AsyncClient(base_url=api.base, timeout=30) as http:

            async def calls() -> dict[str, float]:
                got = samples((await http.get("/metrics")).text)
                return {
                    dict(labels)["call"]: value
                    for (name, labels), value in got.items()
                    if name == "tollway_temporal_calls_total"
                }

            async def delta(action: Any) -> dict[str, float]:
                before = await calls()
                await action()
                after = await calls()
                return {k: v - before.get(k, 0) for k, v in after.items() if v != before.get(k, 0)}

            async def create_free() -> None:
                response = await create(http, tenant, tenant.free_wf)
                assert response.status_code == 200, response.text

            # Free: one start, answered without waiting for the workflow's first task.
            assert await delta(create_free) == {"start_workflow": 1}
            # Free with a concurrency limit: answered once its workflow took its place in the
            # queue (update-with-start), so the queue keeps the order of the creates.
            limited = tenant.workflow({**GREETING, "maxConcurrency": 1})

            async def create_limited() -> None:
                response = await create(http, tenant, limited)
                assert response.status_code == 200, response.text

            assert await delta(create_limited) == {"start_update_with_start_workflow": 1}

            idem = key()
            made: dict[str, Any] = {}

            async def create_priced() -> None:
                response = await create(http, tenant, tenant.priced_wf, idempotencyKey=idem)
                assert response.status_code == 200, response.text
                made.update(response.json()["data"]["execution"])

            assert await delta(create_priced) == {"start_update_with_start_workflow": 1}
            # A replay: the server answers the first create's stored outcome (deduplicated by
            # update id, so replays add nothing to history), then one query for the current
            # state.
            assert await delta(create_priced) == {
                "start_update_with_start_workflow": 1,
                "query_workflow": 1,
            }

            async def read() -> None:
                response = await http.get(
                    f"/v1/public/executions/{made['id']}", headers=tenant.auth
                )
                assert response.status_code == 200

            assert await delta(read) == {"query_workflow": 1}

            async def pay() -> None:
                await pay_via_webhook(http, engine, made)

            assert await delta(pay) == {"start_workflow_update": 1}
            await client.get_workflow_handle(made["id"]).result()  # not through this API
            # Closed: the first view learns it from the query's rejection and reads the
            # records (describe; the start input is the one this API started it with);
            # later views are one describe.
            assert await delta(read) == {"query_workflow": 1, "describe_workflow": 1}
            assert await delta(read) == {"describe_workflow": 1}
