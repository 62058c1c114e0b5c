"""The worker's operations port, scraped from a real worker process: the SDK's runtime
metrics with Tollway's own beside them, and health that names each dependency."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import Engine
from temporalio.client import Client

from tests.conftest import make_settings
from tests.helpers import Tenant, api_client, create, wait_status
from tests.money import pay_via_webhook
from tests.test_devstack import free_port
from tests.test_worker_outage import worker_process


def totals(text: str) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    found: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = tuple(sorted((k, v) for k, v in sample.labels.items() if k != "service_name"))
            found.setdefault(sample.name, {})[labels] = sample.value
    return found


async def test_worker_exports_sdk_and_tollway_metrics_and_health(
    client: Client, engine: Engine, tenant: Tenant, database_url: str, temporal_address: str
) -> None:
    settings = make_settings(database_url, temporal_address)
    port = free_port()
    async with api_client(settings, client, engine, timeout=30) as http:
        with worker_process(settings, metrics_port=port):
            ok = (await create(http, tenant, tenant.free_wf)).json()["data"]["execution"]
            bad = (await create(http, tenant, tenant.free_wf, requestPayload={})).json()
            paid = (await create(http, tenant, tenant.priced_wf)).json()["data"]["execution"]
            refunded = (await create(http, tenant, tenant.priced_wf, requestPayload={})).json()
            await pay_via_webhook(http, engine, paid)
            await pay_via_webhook(http, engine, refunded["data"]["execution"])
            for eid, status in (
                (ok["id"], "workflow_succeeded"),
                (bad["data"]["execution"]["id"], "workflow_failed"),
                (paid["id"], "workflow_succeeded"),
                (refunded["data"]["execution"]["id"], "workflow_failed"),
            ):
                await wait_status(http, eid, tenant.auth, status, 30)
            base = f"http://127.0.0.1:{port}"
            async with httpx.AsyncClient(timeout=10) as ops:
                scraped = await ops.get(f"{base}/metrics")
                health = await ops.get(f"{base}/healthz")
                ready = await ops.get(f"{base}/readyz")
    assert scraped.status_code == 200
    got = totals(scraped.text)
    assert any(name.startswith("temporal_") for name in got)  # the SDK's runtime metrics
    ended = got["tollway_executions_ended_total"]
    by_status: dict[str, float] = {}
    for labels, value in ended.items():
        status = dict(labels)["status"]
        by_status[status] = by_status.get(status, 0) + value
    assert by_status == {"workflow_succeeded": 2, "workflow_failed": 2}
    assert sum(got["tollway_payments_confirmed_total"].values()) == 2
    assert sum(got["tollway_refunds_total"].values()) == 1
    failures = got["tollway_step_failures_total"]
    assert {dict(labels)["kind"] for labels in failures} == {"transform"}
    assert sum(failures.values()) == 2
    assert health.status_code == 200 and health.text == "ok"
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"database": "ok", "temporal": "ok"}
