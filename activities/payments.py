"""The payments seam: one provider interface, one activity class that calls it.

The worker builds the provider once (``TOLLWAY_PAYMENT_PROVIDER``) and injects it with the
order ledger; tests inject their own. Every provider call carries an idempotency key derived
from the execution, so an activity retry never creates a second session or a second refund.
Every money transition is mirrored in the ledger.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from temporalio import activity

from tollway.ledger import OrderLedger
from tollway.outage import OutageLog
from workflows.models import (
    CheckoutRequest,
    CheckoutSession,
    CloseCheckoutRequest,
    ConfirmPaymentRequest,
    RefundRequest,
    RefundResult,
)


@dataclass(frozen=True)
class ProviderSession:
    session_id: str
    url: str


class PaymentProvider(Protocol):
    name: str
    livemode: bool  # the mode its events must carry (Stripe: live or test key)

    def create_session(
        self, request: CheckoutRequest, order_id: str, idempotency_key: str
    ) -> ProviderSession:
        """Open a checkout session for the order (the same one again for the same key)."""
        ...

    def expire_session(self, session_id: str, idempotency_key: str) -> None:
        """Stop the session taking payment; already expired or completed is not an error."""
        ...

    def refund(self, request: RefundRequest) -> str:
        """Refund one payment in full (keyed by ``request.idempotency_key``); the refund id."""
        ...


def _count(name: str, description: str, request: ConfirmPaymentRequest | RefundRequest) -> None:
    """A worker metric (exported with the SDK's on the worker's metrics port)."""
    activity.metric_meter().create_counter(name, description).add(
        1, {"provider": request.provider, "currency": request.currency}
    )


class PaymentActivities:
    def __init__(self, provider: PaymentProvider, ledger: OrderLedger) -> None:
        self._provider = provider
        self._ledger = ledger
        self._database = OutageLog("database")

    @activity.defn(name="payments.open_checkout")
    def open_checkout(self, request: CheckoutRequest) -> CheckoutSession:
        with self._database.watch():
            order = self._ledger.ensure_order(request, self._provider.name)
            if order.checkout_session_id is None or order.checkout_url is None:
                session = self._provider.create_session(
                    request, order.id, f"{request.execution_id}:checkout"
                )
                order = self._ledger.attach_session(order.id, session.session_id, session.url)
            assert order.checkout_session_id and order.checkout_url
            return CheckoutSession(
                order_id=order.id,
                checkout_session_id=order.checkout_session_id,
                checkout_url=order.checkout_url,
                provider=order.provider,
                livemode=self._provider.livemode,
            )

    @activity.defn(name="payments.close_checkout")
    def close_checkout(self, request: CloseCheckoutRequest) -> None:
        with self._database.watch():
            self._provider.expire_session(
                request.checkout_session_id, f"{request.execution_id}:expire"
            )
            self._ledger.close(request.execution_id, request.outcome)

    @activity.defn(name="payments.record_failed_attempt")
    def record_failed_attempt(self, execution_id: str) -> None:
        with self._database.watch():
            self._ledger.mark_failed_attempt(execution_id)

    @activity.defn(name="payments.confirm")
    def confirm_payment(self, request: ConfirmPaymentRequest) -> None:
        with self._database.watch():
            self._ledger.record_payment(request, consumed=True)
        _count("tollway_payments_confirmed", "Payments accepted for an execution.", request)

    @activity.defn(name="payments.refund")
    def refund_payment(self, request: RefundRequest) -> RefundResult:
        if activity.info().attempt > 1:
            _count("tollway_refund_retries", "Refund attempts after the first.", request)
        with self._database.watch():
            refund_reference = self._provider.refund(request)
            self._ledger.record_refund(request, refund_reference)
        _count("tollway_refunds", "Payments refunded.", request)
        return RefundResult(refund_reference=refund_reference)
