"""Payments end to end: signed webhooks, money invariants after every event, expiry,
cancellation, refunds."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine
from sqlmodel import Session
from temporalio.client import Client

from api.app import build_deps, create_app
from tests.conftest import PREVIOUS_WEBHOOK_SECRET, Settings
from tests.helpers import (
    GREETING,
    PRICE,
    Tenant,
    create,
    current,
    eventually,
    wait_status,
)
from tests.money import (
    assert_money_invariants,
    capture,
    charges,
    completed,
    pay_via_webhook,
    send,
    steps_ran,
)
from tollway.ledger import OrderLedger
from tollway.tables import LocalCharge, PaymentEvent


async def priced(
    http: httpx.AsyncClient, tenant: Tenant, wf: str | None = None, **overrides: Any
) -> dict[str, Any]:
    response = await create(http, tenant, wf or tenant.priced_wf, **overrides)
    assert response.status_code == 200, response.text
    execution: dict[str, Any] = response.json()["data"]["execution"]
    assert execution["status"] == "awaiting_payment"
    return execution


async def test_signed_payment_runs_the_work_and_records_the_order(
    http: httpx.AsyncClient, client: Client, engine: Engine, tenant: Tenant
) -> None:
    execution = await priced(http, tenant)
    reference = await pay_via_webhook(http, engine, execution)
    done = await wait_status(http, execution["id"], tenant.auth, "workflow_succeeded")
    assert done["paymentStatus"] == "paid"
    order = OrderLedger(engine).by_execution(execution["id"])
    assert order is not None and order.status == "paid" and order.payment_reference == reference
    assert (order.amount, order.currency) == (500, "usd") and order.paid_at is not None
    await assert_money_invariants(client, engine, done)


@pytest.mark.parametrize(
    ("case", "kwargs"),
    [
        ("bad signature", {"header": "t={now},v1=" + "0" * 64}),
        # Offsets, not times: parameters are made at collection, minutes before the test runs.
        ("stale timestamp", {"timestamp": -400}),
        ("future timestamp", {"timestamp": +400}),
        ("wrong secret", {"secret": "whsec_someone_else_entirely"}),
        ("missing header", {"header": ""}),
        ("malformed header", {"header": "garbage"}),
    ],
)
async def test_unverifiable_event_is_400_and_has_no_effect(
    http: httpx.AsyncClient,
    client: Client,
    engine: Engine,
    tenant: Tenant,
    case: str,
    kwargs: dict[str, Any],
) -> None:
    execution = await priced(http, tenant)
    reference = capture(engine, execution)
    event = completed(execution, reference)
    if "timestamp" in kwargs:
        kwargs = {**kwargs, "timestamp": int(time.time()) + kwargs["timestamp"]}
    if "{now}" in kwargs.get("header", ""):
        kwargs = {**kwargs, "header": kwargs["header"].format(now=int(time.time()))}
    response = await send(http, event, **kwargs)
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "invalid_signature"
    assert response.json()["errors"][0]["field"] == "Stripe-Signature"
    await asyncio.sleep(0.3)
    still = await current(http, tenant, execution["id"])
    assert still["status"] == "awaiting_payment" and still["paymentStatus"] == "pending"
    with Session(engine) as session:
        assert session.get(PaymentEvent, event["id"]) is None
    assert not await steps_ran(client, execution["id"])


async def test_previous_secret_still_verifies_during_rotation(
    http: httpx.AsyncClient, engine: Engine, tenant: Tenant
) -> None:
    execution = await priced(http, tenant)
    event = completed(execution, capture(engine, execution))
    response = await send(http, event, secret=PREVIOUS_WEBHOOK_SECRET)
    assert response.status_code == 200
    await wait_status(http, execution["id"], tenant.auth, "workflow_succeeded")


async def test_replayed_event_has_no_second_effect_even_after_restart(
    http: httpx.AsyncClient,
    client: Client,
    engine: Engine,
    tenant: Tenant,
    settings: Settings,
) -> None:
    execution = await priced(http, tenant)
    event = completed(execution, capture(engine, execution))
    first = await send(http, event)
    assert first.json()["data"]["outcome"] == "delivered"
    again = await send(http, event)
    assert again.status_code == 200 and again.json()["data"]["outcome"] == "duplicate"
    # A fresh API process (new app, same database) still knows the event.
    restarted = create_app(settings, build_deps(settings, client, engine))
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=restarted), base_url="http://tollway.test"
    ) as fresh:
        replay = await send(fresh, event)
    assert replay.json()["data"]["outcome"] == "duplicate"
    done = await wait_status(http, execution["id"], tenant.auth, "workflow_succeeded")
    await assert_money_invariants(client, engine, done)


async def test_event_for_unknown_execution_is_200_and_logged(
    http: httpx.AsyncClient, engine: Engine
) -> None:
    ghost = {"id": "exe_doesnotexist", "checkoutSessionId": "cs_ghost"}
    response = await send(http, completed(ghost, "pi_ghost"))
    assert response.status_code == 200
    assert response.json()["data"]["outcome"] == "unknown_execution"
    unrelated = await send(
        http, {"id": "evt_x", "type": "customer.created", "data": {"object": {"id": "cus_1"}}}
    )
    assert unrelated.json()["data"]["outcome"] == "no_execution"


@pytest.mark.parametrize(("amount", "currency"), [(499, "usd"), (500, "eur"), (5000, "usd")])
async def test_wrong_amount_or_currency_runs_nothing_and_is_refunded(
    http: httpx.AsyncClient,
    client: Client,
    engine: Engine,
    tenant: Tenant,
    amount: int,
    currency: str,
) -> None:
    execution = await priced(http, tenant)
    reference = capture(engine, execution, amount, currency)
    await send(http, completed(execution, reference, amount, currency))
    done = await wait_status(http, execution["id"], tenant.auth, "workflow_failed")
    assert "does not match the order" in done["statusReason"]
    assert done["paymentStatus"] == "refunded" and done["startedAt"] is None
    assert not await steps_ran(client, execution["id"])
    [charge] = charges(engine, execution["id"])
    assert charge.refunded_at is not None
    await assert_money_invariants(client, engine, done)


async def test_two_different_payments_keep_one_and_refund_the_other(
    http: httpx.AsyncClient, client: Client, engine: Engine, tenant: Tenant
) -> None:
    execution = await priced(http, tenant)
    first, second = capture(engine, execution), capture(engine, execution)
    responses = await asyncio.gather(
        send(http, completed(execution, first)), send(http, completed(execution, second))
    )
    assert [r.status_code for r in responses] == [200, 200]
    done = await wait_status(http, execution["id"], tenant.auth, "workflow_succeeded")
    held = [c for c in charges(engine, execution["id"]) if c.refunded_at is None]
    assert len(held) == 1
    payment = OrderLedger(engine).payment(({first, second} - {held[0].payment_reference}).pop())
    assert payment is not None and payment.refund_reason == "duplicate payment"
    await assert_money_invariants(client, engine, done)


async def test_async_payment_pending_then_failed_then_succeeded(
    http: httpx.AsyncClient, client: Client, engine: Engine, tenant: Tenant
) -> None:
    execution = await priced(http, tenant)
    reference = capture(engine, execution)
    await send(http, completed(execution, reference, payment_status="unpaid"))
    waiting = await current(http, tenant, execution["id"])
    assert waiting["status"] == "awaiting_payment" and waiting["statusReason"] == (
        "payment processing"
    )
    await send(http, completed(execution, None, type="checkout.session.async_payment_failed"))
    failed = await current(http, tenant, execution["id"])
    assert failed["status"] == "awaiting_payment" and failed["paymentStatus"] == "failed"
    assert not await steps_ran(client, execution["id"])
    await send(
        http, completed(execution, reference, type="checkout.session.async_payment_succeeded")
    )
    done = await wait_status(http, execution["id"], tenant.auth, "workflow_succeeded")
    assert done["paymentStatus"] == "paid"
    await assert_money_invariants(client, engine, done)


async def test_expired_event_cancels_and_later_payment_is_refunded(
    http: httpx.AsyncClient, client: Client, engine: Engine, tenant: Tenant
) -> None:
    execution = await priced(http, tenant)
    expired = await send(
        http, completed(execution, None, type="checkout.session.expired", payment_status="unpaid")
    )
    assert expired.status_code == 200
    done = await wait_status(http, execution["id"], tenant.auth, "workflow_cancelled")
    assert (done["paymentStatus"], done["statusReason"]) == ("expired", "payment_expired")
    order = OrderLedger(engine).by_execution(execution["id"])
    assert order is not None and order.status == "expired"
    await assert_late_payment_refunded(http, client, engine, tenant, execution)


async def assert_late_payment_refunded(
    http: httpx.AsyncClient,
    client: Client,
    engine: Engine,
    tenant: Tenant,
    execution: dict[str, Any],
) -> None:
    late = capture(engine, execution)
    response = await send(http, completed(execution, late))
    assert response.json()["data"]["outcome"] in {"late_payment_refunded", "delivered"}
    refunded = await eventually(
        lambda: asyncio.sleep(0, charges(engine, execution["id"])),
        lambda rows: all(r.refunded_at is not None for r in rows),
        timeout=15,
    )
    assert all(r.refunded_at is not None for r in refunded)
    final = await current(http, tenant, execution["id"])
    assert final["status"] == "workflow_cancelled"
    assert not await steps_ran(client, execution["id"])
    await assert_money_invariants(client, engine, final)


async def test_payment_timeout_expires_the_checkout(
    http: httpx.AsyncClient, client: Client, engine: Engine, tenant: Tenant
) -> None:
    wf = tenant.workflow({**GREETING, "price": PRICE, "paymentTimeoutSeconds": 1})
    execution = await priced(http, tenant, wf)
    done = await wait_status(http, execution["id"], tenant.auth, "workflow_cancelled", 15)
    assert (done["paymentStatus"], done["statusReason"]) == ("expired", "payment_expired")
    order = OrderLedger(engine).by_execution(execution["id"])
    assert order is not None and order.status == "expired"
    await assert_late_payment_refunded(http, client, engine, tenant, execution)


async def test_cancel_while_awaiting_payment(
    http: httpx.AsyncClient,
    client: Client,
    engine: Engine,
    tenant: Tenant,
    other_tenant: Tenant,
) -> None:
    execution = await priced(http, tenant)
    url = f"/v1/public/executions/{execution['id']}/cancel"
    assert (await http.post(url, headers=other_tenant.auth)).status_code == 404
    assert (await http.post(url)).status_code == 401
    response = await http.post(url, headers=tenant.auth)
    assert response.status_code == 200, response.text
    cancelled = response.json()["data"]["execution"]
    assert cancelled["status"] == "workflow_cancelled"
    assert cancelled["paymentStatus"] == "cancelled"
    assert cancelled["statusReason"].startswith(f"cancelled by api_token {tenant.token_id}")
    again = await http.post(url, headers=tenant.auth)
    assert again.status_code == 200  # idempotent
    assert again.json()["data"]["execution"]["statusReason"] == cancelled["statusReason"]
    order = OrderLedger(engine).by_execution(execution["id"])
    assert order is not None and order.status == "cancelled"
    await assert_late_payment_refunded(http, client, engine, tenant, execution)


async def test_cancel_while_running_cancels_work_and_refunds(
    http: httpx.AsyncClient, client: Client, engine: Engine, tenant: Tenant
) -> None:
    wf = tenant.workflow(
        {
            **GREETING,
            "price": PRICE,
            "steps": [
                {"id": "wait", "kind": "delay", "seconds": 60},
                {"id": "shape", "kind": "transform", "expression": "`1`"},
            ],
        }
    )
    execution = await priced(http, tenant, wf)
    await pay_via_webhook(http, engine, execution)
    await wait_status(http, execution["id"], tenant.auth, "workflow_running")
    response = await http.post(
        f"/v1/public/executions/{execution['id']}/cancel", headers=tenant.auth
    )
    assert response.status_code == 200, response.text
    done = response.json()["data"]["execution"]
    assert done["status"] == "workflow_cancelled" and done["paymentStatus"] == "refunded"
    assert "while running" in done["statusReason"]
    await assert_money_invariants(client, engine, done)


async def test_cancel_of_ended_execution_is_409_with_its_state(
    http: httpx.AsyncClient, tenant: Tenant
) -> None:
    execution = (await create(http, tenant, tenant.free_wf)).json()["data"]["execution"]
    await wait_status(http, execution["id"], tenant.auth, "workflow_succeeded")
    response = await http.post(
        f"/v1/public/executions/{execution['id']}/cancel", headers=tenant.auth
    )
    assert response.status_code == 409
    payload = response.json()
    assert payload["error"] == "already_terminal"
    assert payload["data"]["execution"]["status"] == "workflow_succeeded"


async def test_failed_step_after_payment_is_refunded(
    http: httpx.AsyncClient, client: Client, engine: Engine, tenant: Tenant
) -> None:
    execution = await priced(http, tenant, requestPayload={"nobody": True})
    await pay_via_webhook(http, engine, execution)
    done = await wait_status(http, execution["id"], tenant.auth, "workflow_failed")
    assert done["paymentStatus"] == "refunded"
    assert done["statusReason"].startswith("step 'shape' failed")
    order = OrderLedger(engine).by_execution(execution["id"])
    assert order is not None and order.status == "refunded" and order.refunded_at is not None
    await assert_money_invariants(client, engine, done)


async def test_failed_step_keeps_payment_when_refund_on_failure_is_off(
    http: httpx.AsyncClient, client: Client, engine: Engine, tenant: Tenant
) -> None:
    wf = tenant.workflow({**GREETING, "price": PRICE, "refundOnFailure": False})
    execution = await priced(http, tenant, wf, requestPayload={})
    await pay_via_webhook(http, engine, execution)
    done = await wait_status(http, execution["id"], tenant.auth, "workflow_failed")
    assert done["paymentStatus"] == "paid"
    await assert_money_invariants(client, engine, done, refund_on_failure=False)


async def test_refund_at_the_provider_is_recorded_for_a_closed_execution(
    http: httpx.AsyncClient, client: Client, engine: Engine, tenant: Tenant
) -> None:
    wf = tenant.workflow({**GREETING, "price": PRICE, "refundOnFailure": False})
    execution = await priced(http, tenant, wf, requestPayload={})
    reference = await pay_via_webhook(http, engine, execution)
    await wait_status(http, execution["id"], tenant.auth, "workflow_failed")
    # The money goes back at the provider (a refund from its dashboard), which then says so.
    with Session(engine) as session:
        held = session.get(LocalCharge, reference)
        assert held is not None
        held.refund_id, held.refunded_at = "re_dashboard_1", datetime.now(UTC)
        session.add(held)
        session.commit()
    charge = {
        "id": "ch_1",
        "object": "charge",
        "amount": 500,
        "currency": "usd",
        "payment_intent": reference,
        "metadata": {"executionId": execution["id"]},
    }
    event = {
        "id": f"evt_refund_{reference}",
        "type": "charge.refunded",
        "livemode": False,
        "data": {"object": charge},
    }
    response = await send(http, event)
    assert response.json()["data"]["outcome"] == "refund_recorded"
    order = OrderLedger(engine).by_execution(execution["id"])
    assert order is not None and order.status == "refunded"
    # The closed execution's view (and the list) says so too, not only the ledger.
    final = await current(http, tenant, execution["id"])
    assert final["paymentStatus"] == "refunded"
    assert final["statusReason"].endswith("the payment was refunded after it ended")
    listed = await http.get(f"/v1/public/workflows/{wf}/executions", headers=tenant.auth)
    [item] = [i for i in listed.json()["data"]["executions"] if i["id"] == execution["id"]]
    assert item["paymentStatus"] == "refunded"
    await assert_money_invariants(client, engine, final, refund_on_failure=False)


async def test_webhook_for_another_provider_is_404(http: httpx.AsyncClient) -> None:
    response = await send(http, {"id": "evt_1", "type": "x"}, path="/v1/webhooks/payments/stripe")
    assert response.status_code == 404


async def test_event_sent_while_no_worker_runs_is_503_and_processed_on_retry(
    client: Client,
    engine: Engine,
    tenant: Tenant,
    database_url: str,
    temporal_address: str,
    http: httpx.AsyncClient,
) -> None:
    from tests.conftest import make_settings
    from tests.test_worker_outage import worker_process

    settings = make_settings(database_url, temporal_address, request_deadline_seconds=1.0)
    app = create_app(settings, build_deps(settings, client, engine))
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://tollway.test"
    ) as outage:
        with worker_process(settings):
            execution = await priced(outage, tenant)
        event = completed(execution, capture(engine, execution))
        refused = await send(outage, event)
        assert refused.status_code == 503
        with Session(engine) as session:
            assert session.get(PaymentEvent, event["id"]) is None  # forgotten: retry counts
        with worker_process(settings):
            # The provider retries until it gets a 2xx (a restarted worker may need a moment).
            retried = await eventually(
                lambda: send(outage, event), lambda r: r.status_code != 503, timeout=30
            )
            assert retried.status_code == 200, retried.text
            assert retried.json()["data"]["outcome"] == "delivered"
            done = await wait_status(outage, execution["id"], tenant.auth, "workflow_succeeded", 30)
    await assert_money_invariants(client, engine, done)


async def test_event_whose_delivery_never_settled_is_delivered_on_retry(
    http: httpx.AsyncClient, client: Client, engine: Engine, tenant: Tenant
) -> None:
    """A first delivery that hung or died (its row still "processing", however recent) is
    never answered as a duplicate: the retry delivers it; only a settled event is one."""
    execution = await priced(http, tenant)
    event = completed(execution, capture(engine, execution))
    with Session(engine) as session:  # what a hung or killed first attempt leaves behind
        session.add(
            PaymentEvent(
                id=event["id"],
                provider="local",
                type=event["type"],
                execution_id=execution["id"],
                outcome="processing",
            )
        )
        session.commit()
    response = await send(http, event)
    assert response.status_code == 200
    assert response.json()["data"]["outcome"] == "delivered"
    done = await wait_status(http, execution["id"], tenant.auth, "workflow_succeeded")
    assert (await send(http, event)).json()["data"]["outcome"] == "duplicate"
    with Session(engine) as session:
        row = session.get(PaymentEvent, event["id"])
        assert row is not None and row.outcome == "delivered"
    await assert_money_invariants(client, engine, done)
