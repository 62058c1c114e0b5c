"""Outbound status webhooks (Standard Webhooks) against real receivers on loopback: signed
events in the order of the execution's changes, retries with every attempt recorded, delivery
that outlives the execution, resend, and nothing sent to an address the SSRF guard refuses."""

from __future__ import annotations

import asyncio
import json
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine
from sqlmodel import Session, select
from standardwebhooks import Webhook
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.testing import ActivityEnvironment
from temporalio.worker import Worker

from activities.webhook_activities import WebhookActivities
from tests.helpers import (
    GREETING,
    PAYLOAD_KEYS,
    PRICE,
    SECRETS_KEY,
    Tenant,
    create,
    current,
    eventually,
    wait_status,
)
from tests.money import capture, charges, completed, pay_via_webhook, send
from tests.processes import run_tollway
from tests.servers import serve
from tollway.settings import Settings
from tollway.status_webhooks import WebhookStore
from tollway.tables import LocalCharge, WebhookDelivery
from workflows.models import EmitRequest, ExecutionView, WebhookEvent


@dataclass
class Receiver:
    """Records every request; answers 500 to the first ``failures`` attempts of each event."""

    failures: int = 0
    received: list[tuple[dict[str, str], str]] = field(default_factory=list)
    _tries: dict[str, int] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def app(self) -> Starlette:
        async def hook(request: Request) -> JSONResponse:
            body = (await request.body()).decode()
            headers = {k.lower(): v for k, v in request.headers.items()}
            with self._lock:
                self.received.append((headers, body))
                tries = self._tries[headers["webhook-id"]] = (
                    self._tries.get(headers["webhook-id"], 0) + 1
                )
            if tries <= self.failures:
                return JSONResponse({"error": "not now"}, status_code=500)
            return JSONResponse({"ok": True})

        return Starlette(routes=[Route("/hook", hook, methods=["POST"])])

    def events(self, secret: str) -> dict[str, dict[str, Any]]:
        """Each event once (by id), verified with the standardwebhooks library."""
        verified: dict[str, dict[str, Any]] = {}
        for headers, body in self.received:
            verified[headers["webhook-id"]] = Webhook(secret).verify(body, headers)
        return verified


@pytest.fixture
def receiver() -> Iterator[tuple[Receiver, str]]:
    made = Receiver()
    with serve(made.app()) as base:
        yield made, f"{base}/hook"


Admin = Callable[..., Any]


@pytest.fixture
def admin(database_url: str, temporal_address: str, settings: Settings) -> Admin:
    """``tollway admin webhook ...`` as an operator runs it (JSON out), against the suite's
    database and Temporal (a resend starts a delivery on the session worker's queue)."""

    def run(*args: str) -> Any:
        done = run_tollway(
            "admin",
            "webhook",
            *args,
            env={
                **os.environ,
                "DATABASE_URL": database_url,
                "TEMPORAL_ADDRESS": temporal_address,
                "TOLLWAY_TASK_QUEUE": settings.task_queue,
                "TOLLWAY_SECRETS_KEY": SECRETS_KEY,
                "TOLLWAY_PAYLOAD_KEYS": PAYLOAD_KEYS,
                "TOLLWAY_WEBHOOK_RETRY_INITIAL_SECONDS": "0.2",
            },
        )  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
        return json.loads(done.stdout)

    return run


def deliveries(admin: Admin, endpoint: str) -> list[dict[str, Any]]:
    return admin("deliveries", "--endpoint", endpoint, "--json")  # type: ignore[no-any-return]


async def test_events_arrive_signed_in_order_and_every_attempt_is_recorded(
    http: httpx.AsyncClient, tenant: Tenant, engine: Engine, receiver: tuple[Receiver, str],
    admin: Admin,
) -> None:  # fmt: skip
    hooks, url = receiver
    made = admin("create", "--org", tenant.org_id, "--url", url, "--json")
    assert set(made) == {"id", "secret"} and made["secret"].startswith("whsec_")
    listed = admin("list", "--org", tenant.org_id, "--json")
    assert [e["id"] for e in listed] == [made["id"]] and "secret" not in json.dumps(listed)

    data = (await create(http, tenant, tenant.priced_wf)).json()["data"]
    execution = data["execution"]
    await pay_via_webhook(http, engine, execution)
    await wait_status(http, execution["id"], tenant.auth, "workflow_succeeded")
    expected = [
        "execution.created",
        "execution.payment_confirmed",
        "execution.running",
        "execution.succeeded",
    ]
    await eventually(
        lambda: asyncio.sleep(0, len(hooks.events(made["secret"]))),
        lambda n: n >= len(expected),
    )
    events = hooks.events(made["secret"])  # verification raises on a bad signature
    ordered = sorted(events.items())  # ids are numbered in the order of the changes
    assert [e["type"] for _, e in ordered] == expected
    stamps = [datetime.fromisoformat(e["timestamp"]) for _, e in ordered]
    assert stamps == sorted(stamps)
    for _, event in ordered:
        assert event["data"]["execution"]["id"] == execution["id"]
        assert event["data"]["execution"]["requestPayload"] == {"name": "Ada"}  # the full view
    assert ordered[-1][1]["data"]["execution"]["status"] == "workflow_succeeded"
    for headers, _ in hooks.received:
        assert headers["webhook-signature"].startswith("v1,")
        assert abs(int(headers["webhook-timestamp"]) - datetime.now(UTC).timestamp()) < 60
    # A forged or altered event does not verify.
    headers, body = hooks.received[0]
    with pytest.raises(Exception, match="(?i)signature"):
        Webhook("whsec_" + "A" * 32).verify(body, headers)

    # An attempt is recorded once the receiver has answered: the last may lag its arrival.
    recorded = await eventually(
        lambda: asyncio.to_thread(deliveries, admin, made["id"]),
        lambda rows: all(d["status"] != "pending" for d in rows),
    )
    assert sorted(d["type"] for d in recorded) == sorted(expected)
    for delivery in recorded:
        assert delivery["status"] == "succeeded"
        assert [a["statusCode"] for a in delivery["attempts"]] == [200]


async def test_a_receiver_that_fails_twice_gets_the_event_on_the_third_attempt_after_close(
    http: httpx.AsyncClient, tenant: Tenant, client: Client, receiver: tuple[Receiver, str],
    admin: Admin,
) -> None:  # fmt: skip
    hooks, url = receiver
    hooks.failures = 2
    made = admin(
        "create", "--org", tenant.org_id, "--url", url,
        "--event", "execution.succeeded", "--json",
    )  # fmt: skip
    execution = (await create(http, tenant, tenant.free_wf)).json()["data"]["execution"]
    handle = client.get_workflow_handle(execution["id"])
    await handle.result()
    assert (await handle.describe()).status == WorkflowExecutionStatus.COMPLETED
    # The execution has closed; its last event is still being delivered, as its own work.
    recorded = await eventually(
        lambda: asyncio.to_thread(deliveries, admin, made["id"]),
        lambda rows: bool(rows) and rows[0]["status"] == "succeeded",
        timeout=30,
    )
    [delivery] = recorded  # only the type asked for
    assert delivery["type"] == "execution.succeeded"
    assert [a["statusCode"] for a in delivery["attempts"]] == [500, 500, 200]
    assert [a["attempt"] for a in delivery["attempts"]] == [1, 2, 3]
    ids = {headers["webhook-id"] for headers, _ in hooks.received}
    assert ids == {delivery["eventId"]}  # the same id on every attempt: receivers dedupe
    assert len(hooks.received) == 3
    assert len(hooks.events(made["secret"])) == 1

    # Resend: the same event (same id and body) again, as a new delivery.
    again = admin("resend", delivery["id"], "--json")
    assert again["eventId"] == delivery["eventId"]
    await eventually(lambda: asyncio.sleep(0, len(hooks.received)), lambda n: n == 4)
    assert hooks.received[-1][1] == hooks.received[-2][1]
    rows = {d["id"]: d for d in deliveries(admin, made["id"])}
    assert rows[again["id"]]["resendOf"] == delivery["id"]


async def test_nothing_is_sent_to_a_refused_address(
    http: httpx.AsyncClient, tenant: Tenant, admin: Admin
) -> None:
    refused = Receiver()
    # 127.0.0.2 is loopback but outside the allow-list (only 127.0.0.1 is allowed here).
    with serve(refused.app(), host="127.0.0.2") as base:
        made = admin("create", "--org", tenant.org_id, "--url", f"{base}/hook",
                     "--event", "execution.succeeded", "--json")  # fmt: skip
        execution = (await create(http, tenant, tenant.free_wf)).json()["data"]["execution"]
        await wait_status(http, execution["id"], tenant.auth, "workflow_succeeded")
        recorded = await eventually(
            lambda: asyncio.to_thread(deliveries, admin, made["id"]),
            lambda rows: bool(rows) and rows[0]["status"] == "failed",
        )
    [delivery] = recorded
    [attempt] = delivery["attempts"]  # refused for good: not retried
    assert attempt["statusCode"] is None and "address refused" in attempt["error"]
    assert refused.received == []


async def test_the_same_event_emitted_twice_is_delivered_once(
    tenant: Tenant, engine: Engine, client: Client, settings: Settings, worker: Worker,
    receiver: tuple[Receiver, str],
) -> None:  # fmt: skip
    hooks, url = receiver
    store = WebhookStore(engine, SECRETS_KEY)
    endpoint, secret = store.create(tenant.org_id, url, [])
    now = datetime.now(UTC)
    view = ExecutionView.model_validate(
        {
            "id": "exe_emitted_twice", "workflowId": tenant.free_wf, "workflowVersion": 1,
            "organizationId": tenant.org_id, "initiatedById": "tok", "initiatedByType": "api_token",
            "sourceSystem": "crm", "sourceEntityType": "contact", "sourceEntityId": None,
            "externalRef": None, "idempotencyKey": "k", "requestPayload": None,
            "clientSafeMetadata": None, "responsePayload": None, "status": "workflow_running",
            "statusReason": None, "paymentStatus": "not_required", "orderId": None,
            "checkoutSessionId": None, "checkoutUrl": None, "runId": "r", "createdAt": now,
            "updatedAt": now, "startedAt": now, "finishedAt": None,
        }
    )  # fmt: skip
    event = WebhookEvent(
        event_id="msg_exe_emitted_twice_0001", type="execution.running", occurred_at=now, view=view
    )
    acts = WebhookActivities(client, settings.task_queue, store, httpx.AsyncClient(), 0.2)
    request = EmitRequest(organization_id=tenant.org_id, events=[event])
    env = ActivityEnvironment()
    assert await env.run(acts.emit, request) == 1
    assert await env.run(acts.emit, request) == 0  # a retried emit, a replay: no second one
    await eventually(lambda: asyncio.sleep(0, len(hooks.received)), lambda n: n >= 1)
    await asyncio.sleep(0.5)
    assert len(hooks.received) == 1
    assert [d.event_id for d in store.deliveries(endpoint.id)] == [event.event_id]
    assert Webhook(secret).verify(hooks.received[0][1], hooks.received[0][0])["type"] == (
        "execution.running"
    )


async def test_an_organization_without_endpoints_pays_nothing_for_webhooks(
    http: httpx.AsyncClient, tenant: Tenant, client: Client
) -> None:
    execution = (await create(http, tenant, tenant.free_wf)).json()["data"]["execution"]
    await client.get_workflow_handle(execution["id"]).result()
    history = await client.get_workflow_handle(execution["id"]).fetch_history()
    markers = [
        e.marker_recorded_event_attributes.marker_name
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_MARKER_RECORDED
    ]
    assert "core_local_activity" not in markers  # no emit ran: no endpoint, no event


def refund_event(execution: dict[str, Any], reference: str, n: int) -> dict[str, Any]:
    """The provider's ``charge.refunded`` for the execution's payment (event ``n``)."""
    charge = {
        "id": "ch_1", "object": "charge", "amount": 500, "currency": "usd",
        "payment_intent": reference, "metadata": {"executionId": execution["id"]},
    }  # fmt: skip
    return {
        "id": f"evt_refund_{n}_{reference}",
        "type": "charge.refunded",
        "livemode": False,
        "data": {"object": charge},
    }


async def refunded_events(
    hooks: Receiver, secret: str, execution_id: str, settle: float = 1.0
) -> list[tuple[str, dict[str, Any]]]:
    """Once an ``execution.refunded`` arrived (and ``settle`` s more for any second one):
    every event received, verified, by id."""
    await eventually(
        lambda: asyncio.sleep(0, hooks.events(secret)),
        lambda events: any(e["type"] == "execution.refunded" for e in events.values()),
        timeout=20,
    )
    await asyncio.sleep(settle)
    events = hooks.events(secret)
    assert all(e["data"]["execution"]["id"] == execution_id for e in events.values())
    return sorted(events.items())


async def test_a_refund_at_the_provider_after_close_is_announced_once(
    http: httpx.AsyncClient, tenant: Tenant, engine: Engine, receiver: tuple[Receiver, str]
) -> None:
    hooks, url = receiver
    _endpoint, secret = WebhookStore(engine, SECRETS_KEY).create(tenant.org_id, url, [])
    wf = tenant.workflow({**GREETING, "price": PRICE, "refundOnFailure": False})
    execution = (await create(http, tenant, wf, requestPayload={})).json()["data"]["execution"]
    reference = await pay_via_webhook(http, engine, execution)
    failed = await wait_status(http, execution["id"], tenant.auth, "workflow_failed")
    assert failed["paymentStatus"] == "paid"  # kept: the workflow announces no refund
    with Session(engine) as session:  # refunded from the provider's dashboard
        held = session.get(LocalCharge, reference)
        assert held is not None
        held.refund_id, held.refunded_at = "re_dashboard_1", datetime.now(UTC)
        session.add(held)
        session.commit()
    # Told twice, in two events (as a provider may): announced once.
    for n in (1, 2):
        answer = await send(http, refund_event(execution, reference, n))
        assert answer.json()["data"]["outcome"] == "refund_recorded"
    events = await refunded_events(hooks, secret, execution["id"])
    eid = execution["id"]
    assert [(i, e["type"]) for i, e in events] == [
        (f"msg_{eid}_0001", "execution.created"),
        (f"msg_{eid}_0002", "execution.payment_confirmed"),
        (f"msg_{eid}_0003", "execution.running"),
        (f"msg_{eid}_0004", "execution.failed"),
        (f"msg_{eid}_refunded", "execution.refunded"),  # after the workflow's own, sorted
    ]
    announced = events[-1][1]["data"]["execution"]
    assert announced["status"] == "workflow_failed" and announced["paymentStatus"] == "refunded"
    assert announced["statusReason"].endswith("the payment was refunded after it ended")
    assert announced == await current(http, tenant, eid)  # what the view says
    assert len([h for h, _ in hooks.received if h["webhook-id"] == f"msg_{eid}_refunded"]) == 1


async def test_a_late_payment_refunded_after_close_is_announced(
    http: httpx.AsyncClient, tenant: Tenant, engine: Engine, receiver: tuple[Receiver, str]
) -> None:
    hooks, url = receiver
    _endpoint, secret = WebhookStore(engine, SECRETS_KEY).create(tenant.org_id, url, [])
    execution = (await create(http, tenant, tenant.priced_wf)).json()["data"]["execution"]
    cancel = f"/v1/public/executions/{execution['id']}/cancel"
    assert (await http.post(cancel, headers=tenant.auth)).status_code == 200
    late = capture(engine, execution)  # the payer paid anyway, after the cancel
    answer = await send(http, completed(execution, late))
    assert answer.json()["data"]["outcome"] == "late_payment_refunded"
    events = await refunded_events(hooks, secret, execution["id"])
    eid = execution["id"]
    assert [(i, e["type"]) for i, e in events] == [
        (f"msg_{eid}_0001", "execution.created"),
        (f"msg_{eid}_0002", "execution.cancelled"),
        (f"msg_{eid}_refunded", "execution.refunded"),
    ]
    announced = events[-1][1]["data"]["execution"]
    assert (announced["status"], announced["paymentStatus"]) == ("workflow_cancelled", "refunded")
    assert all(c.refunded_at is not None for c in charges(engine, eid))  # the money went back
    assert announced == await current(http, tenant, eid)


async def test_a_refund_after_close_emits_nothing_without_endpoints(
    http: httpx.AsyncClient, tenant: Tenant, engine: Engine, client: Client
) -> None:
    execution = (await create(http, tenant, tenant.priced_wf)).json()["data"]["execution"]
    cancel = f"/v1/public/executions/{execution['id']}/cancel"
    assert (await http.post(cancel, headers=tenant.auth)).status_code == 200
    late = capture(engine, execution)
    await send(http, completed(execution, late))
    refund = client.get_workflow_handle(f"{execution['id']}-refund-{late}")
    await refund.result()
    with Session(engine) as session:
        made = session.exec(
            select(WebhookDelivery).where(WebhookDelivery.execution_id == execution["id"])
        ).all()
    assert made == []
