"""Payment payloads: what the workflow, the payment activities, the order ledger and the
webhook exchange about money. They live here, beside the ledger, so that the ledger (and the
settling code) need not import ``workflows`` (``workflows.models`` re-exports them)."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict

from tollway.definitions import Price


class _Payload(BaseModel):
    model_config = ConfigDict(extra="ignore")


class PaymentEventKind(StrEnum):
    PAID = "paid"
    PROCESSING = "processing"  # checkout completed, payment not settled yet (async methods)
    FAILED = "failed"
    EXPIRED = "expired"
    REFUNDED = "refunded"


class PaymentNotice(_Payload):
    """A verified provider event, mapped to what it means for the execution (the signal)."""

    event_id: str
    kind: PaymentEventKind
    provider: str
    checkout_session_id: str | None = None
    payment_reference: str | None = None
    amount: int | None = None
    currency: str | None = None
    livemode: bool | None = None


def from_the_orders_checkout(
    notice: PaymentNotice,
    *,
    provider: str,
    session_id: str | None,
    livemode: bool | None,
    kept_reference: str | None,
) -> bool:
    """Whether ``notice`` may change an execution: it comes from the provider the order was
    opened with, in that provider's mode (None: not checked), for the checkout session the
    order opened -- or, for charge events, which carry no session, it is about the payment the
    execution kept. The one rule for open executions (the workflow) and closed ones (the
    webhook, from the ledger)."""
    if notice.provider != provider:
        return False
    if livemode is not None and notice.livemode is not livemode:
        return False
    if notice.checkout_session_id is not None:
        return notice.checkout_session_id == session_id
    return (
        notice.kind == PaymentEventKind.REFUNDED
        and notice.payment_reference is not None
        and notice.payment_reference == kept_reference
    )


class CheckoutRequest(_Payload):
    execution_id: str
    organization_id: str
    public_workflow_id: str
    workflow_version: int
    workflow_name: str
    price: Price
    expires_at: datetime
    requested_at: datetime | None = None  # workflow time of the request (None: older histories)


class CheckoutSession(_Payload):
    order_id: str
    checkout_session_id: str
    checkout_url: str
    # Only events of this provider (and, for Stripe, this mode) can pay the order. None in
    # histories recorded before these checks existed.
    provider: str | None = None
    livemode: bool | None = None


class CloseCheckoutRequest(_Payload):
    execution_id: str
    checkout_session_id: str
    outcome: str  # the order's final status: "expired" or "cancelled"


class ConfirmPaymentRequest(_Payload):
    execution_id: str
    provider: str
    payment_reference: str
    amount: int
    currency: str


class RefundRequest(_Payload):
    execution_id: str
    provider: str
    payment_reference: str
    amount: int
    currency: str
    reason: str

    @classmethod
    def of_notice(cls, execution_id: str, notice: PaymentNotice, reason: str) -> RefundRequest:
        """A full refund of the payment a provider event reported."""
        assert notice.payment_reference
        return cls(
            execution_id=execution_id,
            provider=notice.provider,
            payment_reference=notice.payment_reference,
            amount=notice.amount or 0,
            currency=(notice.currency or "").lower(),
            reason=reason,
        )

    @property
    def idempotency_key(self) -> str:
        """One refund per payment, whatever is retried."""
        return f"{self.execution_id}:refund:{self.payment_reference}"


class RefundResult(_Payload):
    refund_reference: str
