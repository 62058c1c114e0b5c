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
from tests.money import send
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
    stripe_stack: Stack, tenant: Tenant
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

    paid = await send(
        http,
        stripe_event(execution, "pi_test_1"),
        secret=STRIPE_SECRET,
        path="/v1/webhooks/payments/stripe",
    )
    assert paid.status_code == 200 and paid.json()["data"]["outcome"] == "delivered"
    await wait_status(http, execution["id"], tenant.auth, "workflow_succeeded")
    local = await send(http, stripe_event(execution, "pi_x"), secret=WEBHOOK_SECRET)
    assert local.status_code == 404  # only the configured provider's endpoint exists


async def test_cancel_expires_the_session_and_failure_refunds_once(
    stripe_stack: Stack, tenant: Tenant
) -> None:
    http, fake, _ = stripe_stack
    execution = (await create(http, tenant, tenant.priced_wf)).json()["data"]["execution"]
    await http.post(f"/v1/public/executions/{execution['id']}/cancel", headers=tenant.auth)
    [expire] = fake.calls("/expire")
    assert expire.path == f"/v1/checkout/sessions/{execution['checkoutSessionId']}/expire"
    assert expire.idempotency_key == f"{execution['id']}:expire"

    failing = (await create(http, tenant, tenant.priced_wf, requestPayload={})).json()
    failing_execution = failing["data"]["execution"]
    await send(
        http,
        stripe_event(failing_execution, "pi_test_fail"),
        secret=STRIPE_SECRET,
        path="/v1/webhooks/payments/stripe",
    )
    done = await wait_status(http, failing_execution["id"], tenant.auth, "workflow_failed")
    assert done["paymentStatus"] == "refunded"
    [refund] = fake.calls("/v1/refunds")
    assert refund.params["payment_intent"] == "pi_test_fail"
    assert refund.idempotency_key == f"{failing_execution['id']}:refund:pi_test_fail"
    assert refund.params["metadata[executionId]"] == failing_execution["id"]


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
    )
    first = provider.create_session(request, "ord_1", "exe_retry:checkout")
    second = provider.create_session(request, "ord_1", "exe_retry:checkout")  # activity retry
    assert first == second
    keys = {r.idempotency_key for r in fake.calls("/v1/checkout/sessions")}
    assert keys == {"exe_retry:checkout"} and len(fake.calls("/v1/checkout/sessions")) == 3
    refund = RefundRequest(
        execution_id="exe_retry",
        provider="stripe",
        payment_reference="pi_r",
        amount=100,
        currency="eur",
        reason="test",
    )
    assert provider.refund(refund) == provider.refund(refund)
    assert len(fake.refunded) >= 1 and list(fake.refunded).count("pi_r") == 1


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
