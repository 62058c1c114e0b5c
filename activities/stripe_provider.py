"""Stripe Checkout through the official ``stripe`` package.

A Checkout Session per order (``client_reference_id`` and ``metadata.executionId`` name the
execution; the PaymentIntent carries the same metadata, so ``charge.*`` events map back too),
its expiry clamped to Stripe's 30 min – 24 h window, refunds through the Refund API. Every
call carries an idempotency key derived from the execution.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import stripe
from stripe._base_address import BaseAddresses
from temporalio.exceptions import ApplicationError

from activities.payments import ProviderSession
from tollway.settings import Settings
from workflows.models import CheckoutRequest, RefundRequest

MIN_EXPIRY = timedelta(minutes=30) + timedelta(minutes=2)  # margin for clock skew
MAX_EXPIRY = timedelta(hours=24) - timedelta(minutes=5)


def stripe_client(settings: Settings) -> stripe.StripeClient:
    if settings.stripe_api_key is None:
        raise SystemExit("TOLLWAY_STRIPE_API_KEY is required with TOLLWAY_PAYMENT_PROVIDER=stripe")
    base = BaseAddresses(api=settings.stripe_api_base) if settings.stripe_api_base else None
    return stripe.StripeClient(
        settings.stripe_api_key.get_secret_value(), base_addresses=base, max_network_retries=2
    )


def clamp_expiry(expires_at: datetime, now: datetime) -> int:
    earliest, latest = now + MIN_EXPIRY, now + MAX_EXPIRY
    return int(min(max(expires_at, earliest), latest).timestamp())


# Stripe's answers that a retry cannot change (a business refusal): the activity fails at once.
_REFUSALS = (stripe.InvalidRequestError, stripe.AuthenticationError, stripe.PermissionError)


def _refused(err: stripe.StripeError) -> ApplicationError:
    return ApplicationError(
        f"Stripe refused: {err.user_message or type(err).__name__}",
        type="ProviderRefused",
        non_retryable=True,
    )


class StripePaymentProvider:
    name = "stripe"

    def __init__(
        self, client: stripe.StripeClient, public_base_url: str, livemode: bool = False
    ) -> None:
        self.livemode = livemode
        self._client = client
        self._base_url = public_base_url.rstrip("/")

    def create_session(
        self, request: CheckoutRequest, order_id: str, idempotency_key: str
    ) -> ProviderSession:
        metadata = {"executionId": request.execution_id, "orderId": order_id}
        back = f"{self._base_url}/v1/public/executions/{request.execution_id}"
        try:
            session = self._create(request, order_id, idempotency_key, back, metadata)
        except _REFUSALS as err:
            raise _refused(err) from None
        assert session.url is not None
        return ProviderSession(session.id, session.url)

    def _create(
        self,
        request: CheckoutRequest,
        order_id: str,
        idempotency_key: str,
        back: str,
        metadata: dict[str, str],
    ) -> stripe.checkout.Session:
        return self._client.v1.checkout.sessions.create(
            params={
                "mode": "payment",
                "client_reference_id": request.execution_id,
                "metadata": metadata,
                "payment_intent_data": {"metadata": metadata},
                "line_items": [
                    {
                        "quantity": 1,
                        "price_data": {
                            "currency": request.price.currency,
                            "unit_amount": request.price.amount,
                            "product_data": {"name": request.workflow_name},
                        },
                    }
                ],
                # From the request, not the clock: a retried call must send the very same
                # parameters with its idempotency key.
                "expires_at": clamp_expiry(
                    request.expires_at, request.requested_at or datetime.now(UTC)
                ),
                "success_url": back,
                "cancel_url": back,
            },
            options={"idempotency_key": idempotency_key},
        )

    def expire_session(self, session_id: str, idempotency_key: str) -> None:
        try:
            self._client.v1.checkout.sessions.expire(
                session_id, options={"idempotency_key": idempotency_key}
            )
        except stripe.InvalidRequestError:
            # Already expired or completed: a payment that completed will be refunded when
            # its event arrives for the closed execution.
            return

    def refund(self, request: RefundRequest) -> str:
        try:
            refund = self._client.v1.refunds.create(
                params={
                    "payment_intent": request.payment_reference,
                    # Only what is the same on every path that may refund this payment: one
                    # idempotency key must always come with the same parameters (the reason
                    # is kept in the ledger).
                    "metadata": {"executionId": request.execution_id},
                },
                options={"idempotency_key": request.idempotency_key},
            )
        except stripe.InvalidRequestError as err:
            if err.code == "charge_already_refunded":
                return f"already_refunded:{request.payment_reference}"
            # Kept retrying (money must go back), visible in the UI and to reconcile.
            raise
        return str(refund.id)
