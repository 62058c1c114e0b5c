"""The Stripe provider against a local stand-in for Stripe's API: the requests we send,
idempotency keys included, and webhooks verified the way Stripe's own library does."""

from __future__ import annotations

import concurrent.futures
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
import stripe
from sqlalchemy import Engine
from temporalio.client import Client

from activities.local_provider import checkout_event, encode, sign
from activities.stripe_provider import StripePaymentProvider, clamp_expiry, stripe_client
from api.app import build_deps, create_app
from tests.conftest import WEBHOOK_SECRET, make_settings
from tests.fake_stripe import FakeStripe, serve_fake_stripe
from tests.helpers import Tenant, create, wait_status
from tests.money import assert_money_invariants, send
from tollway.settings import Settings
from worker.main import build_worker

STRIPE_SECRET = "whsec_stripe_test_0123456789abcdef"
Stack = tuple[httpx.AsyncClient, FakeStripe, Settings]


@pytest.fixture(scope="module")
def fake_stripe() -> Iterator[tuple[FakeStripe, str]]:
    with serve_fake_stripe() as served:
        yield served


@pytest.fixture
async def stripe_stack(
    client: Client,
    engine: Engine,
    database_url: str,
    temporal_address: str,
    executor: concurrent.futures.ThreadPoolExecutor,
    fake_stripe: tuple[FakeStripe, str],
) -> AsyncIterator[Stack]:
    fake, base = fake_stripe
    fake.requests.clear()
    settings = make_settings(
        database_url,
        temporal_address,
        payment_provider="stripe",
        stripe_api_key="sk_test_fake_key_0123456789",
        stripe_webhook_secret=STRIPE_SECRET,
        stripe_api_base=base,
    )
    provider = StripePaymentProvider(stripe_client(settings), settings.public_base_url)
    worker = build_worker(client, settings.task_queue, provider, engine, executor)
    app = create_app(settings, build_deps(settings, client, engine))
    async with (
        worker,
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://tollway.test"
        ) as http,
    ):
        yield http, fake, settings


def stripe_event(execution: dict[str, Any], intent: str, **kw: Any) -> dict[str, Any]:
    return checkout_event(
        kw.pop("type", "checkout.session.completed"),
        execution_id=execution["id"],
        session_id=execution["checkoutSessionId"],
        amount=500,
        currency="usd",
        payment_reference=intent,
        **kw,
    )


async def test_checkout_session_request_and_paid_webhook(
    stripe_stack: Stack, tenant: Tenant, client: Client, engine: Engine
) -> None:
    http, fake, _ = stripe_stack
    before = time.time()
    response = await create(http, tenant, tenant.priced_wf)
    assert response.status_code == 200, response.text
    execution = response.json()["data"]["execution"]
    [call] = fake.calls("/v1/checkout/sessions")
    assert call.idempotency_key == f"{execution['id']}:checkout"
    assert call.authorization == "Bearer sk_test_fake_key_0123456789"
    params = call.params
    assert params["mode"] == "payment"
    assert params["client_reference_id"] == execution["id"]
    assert params["metadata[executionId]"] == execution["id"]
    assert params["payment_intent_data[metadata][executionId]"] == execution["id"]
    assert params["line_items[0][price_data][unit_amount]"] == "500"
    assert params["line_items[0][price_data][currency]"] == "usd"
    assert params["line_items[0][quantity]"] == "1"
    # 30 minutes of payment timeout is clamped up to Stripe's minimum plus a margin.
    assert before + 30 * 60 < int(params["expires_at"]) <= time.time() + 33 * 60
    assert execution["checkoutSessionId"].startswith("cs_test_")
    assert execution["checkoutUrl"].startswith("https://checkout.stripe.test/")

    # A test-mode key: a live-mode event (or one from no mode) pays nothing.
    for livemode in (True, None):
        event = stripe_event(execution, fake.charge(f"pi_live_{livemode}", 500, "usd", "x"))
        event["livemode"] = livemode
        ignored = await send(http, event, secret=STRIPE_SECRET, path="/v1/webhooks/payments/stripe")
        assert ignored.status_code == 200 and ignored.json()["data"]["outcome"] == "ignored"
    still = await wait_status(http, execution["id"], tenant.auth, "awaiting_payment")
    assert still["paymentStatus"] == "pending"

    intent = fake.charge("pi_test_1", 500, "usd", execution["id"])
    paid = await send(
        http,
        stripe_event(execution, intent),
        secret=STRIPE_SECRET,
        path="/v1/webhooks/payments/stripe",
    )
    assert paid.status_code == 200 and paid.json()["data"]["outcome"] == "delivered"
    done = await wait_status(http, execution["id"], tenant.auth, "workflow_succeeded")
    await assert_money_invariants(client, engine, done, bank=fake)
    assert (await http.get(f"/checkout/{execution['checkoutSessionId']}")).status_code == 404
    local = await send(http, stripe_event(execution, "pi_x"), secret=WEBHOOK_SECRET)
    assert local.status_code == 404  # only the configured provider's endpoint exists


async def test_cancel_expires_the_session_and_failure_refunds_once(
    stripe_stack: Stack, tenant: Tenant, client: Client, engine: Engine
) -> None:
    http, fake, _ = stripe_stack
    execution = (await create(http, tenant, tenant.priced_wf)).json()["data"]["execution"]
    await http.post(f"/v1/public/executions/{execution['id']}/cancel", headers=tenant.auth)
    [expire] = fake.calls("/expire")
    assert expire.path == f"/v1/checkout/sessions/{execution['checkoutSessionId']}/expire"
    assert expire.idempotency_key == f"{execution['id']}:expire"

    failing = (await create(http, tenant, tenant.priced_wf, requestPayload={})).json()
    failing_execution = failing["data"]["execution"]
    intent = fake.charge("pi_test_fail", 500, "usd", failing_execution["id"])
    await send(
        http,
        stripe_event(failing_execution, intent),
        secret=STRIPE_SECRET,
        path="/v1/webhooks/payments/stripe",
    )
    done = await wait_status(http, failing_execution["id"], tenant.auth, "workflow_failed")
    assert done["paymentStatus"] == "refunded"
    [refund] = fake.calls("/v1/refunds")
    assert refund.params["payment_intent"] == "pi_test_fail"
    assert refund.idempotency_key == f"{failing_execution['id']}:refund:pi_test_fail"
    assert refund.params["metadata[executionId]"] == failing_execution["id"]
    await assert_money_invariants(client, engine, done, bank=fake)


def test_retried_calls_reuse_the_idempotency_key(
    fake_stripe: tuple[FakeStripe, str], database_url: str, temporal_address: str
) -> None:
    from workflows.models import CheckoutRequest, RefundRequest

    fake, base = fake_stripe
    fake.requests.clear()
    settings = make_settings(
        database_url, temporal_address, stripe_api_key="sk_test_k", stripe_api_base=base
    )
    provider = StripePaymentProvider(stripe_client(settings), "http://127.0.0.1:8000")
    fake.fail_next = 1  # the stripe library retries the 500 itself, same key
    request = CheckoutRequest(
        execution_id="exe_retry",
        organization_id="org",
        public_workflow_id="wf",
        workflow_version=1,
        workflow_name="W",
        price={"amount": 100, "currency": "eur"},
        expires_at=datetime.now(UTC),
        requested_at=datetime.now(UTC),
    )
    first = provider.create_session(request, "ord_1", "exe_retry:checkout")
    time.sleep(1.1)  # an activity retry comes later, with the very same parameters
    second = provider.create_session(request, "ord_1", "exe_retry:checkout")
    assert first == second
    keys = {r.idempotency_key for r in fake.calls("/v1/checkout/sessions")}
    assert keys == {"exe_retry:checkout"} and len(fake.calls("/v1/checkout/sessions")) == 3
    fake.charge("pi_r", 100, "eur", "exe_retry")
    refund = RefundRequest(
        execution_id="exe_retry",
        provider="stripe",
        payment_reference="pi_r",
        amount=100,
        currency="eur",
        reason="test",
    )
    assert provider.refund(refund) == provider.refund(refund)
    assert len(fake.intents["pi_r"].refunds) == 1
    # Another path refunding the same payment (another reason) sends the same parameters.
    other_path = refund.model_copy(update={"reason": "payment after the execution ended"})
    assert provider.refund(other_path) == provider.refund(refund)
    assert len(fake.intents["pi_r"].refunds) == 1


def test_expiry_is_clamped_to_stripes_window() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert clamp_expiry(now, now) == int(now.timestamp()) + 32 * 60
    from datetime import timedelta

    far = now + timedelta(days=3)
    assert clamp_expiry(far, now) == int((now + timedelta(hours=24, minutes=-5)).timestamp())
    inside = now + timedelta(hours=2)
    assert clamp_expiry(inside, now) == int(inside.timestamp())


def test_our_signed_events_verify_with_stripes_own_library() -> None:
    event = checkout_event(
        "checkout.session.completed",
        execution_id="exe_1",
        session_id="cs_1",
        amount=500,
        currency="usd",
        payment_reference="pi_1",
    )
    raw = encode(event)
    constructed = stripe.Webhook.construct_event(raw, sign(raw, STRIPE_SECRET), STRIPE_SECRET)
    assert constructed["id"] == event["id"]
    assert constructed["data"]["object"]["client_reference_id"] == "exe_1"
    with pytest.raises(stripe.SignatureVerificationError):
        stripe.Webhook.construct_event(raw, sign(raw, "whsec_other"), STRIPE_SECRET)
    stale = sign(raw, STRIPE_SECRET, timestamp=int(time.time()) - 301)
    with pytest.raises(stripe.SignatureVerificationError):
        stripe.Webhook.construct_event(raw, stale, STRIPE_SECRET)


def test_stand_in_refuses_what_stripe_refuses(
    fake_stripe: tuple[FakeStripe, str], database_url: str, temporal_address: str
) -> None:
    """Where Tollway relies on Stripe's refusals, the stand-in refuses too (else the money
    tests would pass against a Stripe that does not exist)."""
    fake, base = fake_stripe
    client = stripe.StripeClient("sk_test_k", base_addresses={"api": base}, max_network_retries=0)
    with pytest.raises(stripe.InvalidRequestError) as unknown:
        client.v1.refunds.create(params={"payment_intent": "pi_never_paid"})
    assert unknown.value.code == "resource_missing"
    fake.charge("pi_half", 500, "usd", "exe_half")
    client.v1.refunds.create(params={"payment_intent": "pi_half", "amount": 300})
    with pytest.raises(stripe.InvalidRequestError) as beyond:
        client.v1.refunds.create(params={"payment_intent": "pi_half", "amount": 300})
    assert beyond.value.code == "amount_too_large"
    client.v1.refunds.create(
        params={"payment_intent": "pi_half", "amount": 100}, options={"idempotency_key": "k1"}
    )
    with pytest.raises(stripe.IdempotencyError):
        client.v1.refunds.create(
            params={"payment_intent": "pi_half", "amount": 50}, options={"idempotency_key": "k1"}
        )
    assert [r["amount"] for r in fake.intents["pi_half"].refunds] == [300, 100]


async def test_money_check_detects_a_double_refund_and_a_second_charge(
    fake_stripe: tuple[FakeStripe, str], client: Client, engine: Engine
) -> None:
    """The invariant checks can fail: two refunds of one payment, or two payments held."""
    fake, _ = fake_stripe
    view = {"id": "exe_double", "status": "workflow_cancelled", "paymentStatus": "refunded"}
    fake.charge("pi_double", 500, "usd", "exe_double")
    fake._refund(1, {"payment_intent": "pi_double", "amount": "250"})
    await assert_money_invariants(client, engine, view, bank=fake)  # one (partial) refund
    fake._refund(2, {"payment_intent": "pi_double", "amount": "250"})
    with pytest.raises(AssertionError, match="refunded twice"):
        await assert_money_invariants(client, engine, view, bank=fake)
    held = {"id": "exe_held", "status": "workflow_running", "paymentStatus": "paid"}
    fake.charge("pi_held_1", 500, "usd", "exe_held")
    fake.charge("pi_held_2", 500, "usd", "exe_held")
    with pytest.raises(AssertionError, match="charged 2 times"):
        await assert_money_invariants(client, engine, held, bank=fake)
