"""The embedded payment provider: Tollway serves its own checkout page, keeps the money it
"captures" in its own table (``local_charge``, standing in for Stripe's books) and speaks
Stripe's webhook wire format, signed with ``TOLLWAY_LOCAL_WEBHOOK_SECRET``."""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from typing import Any

import stripe
from sqlalchemy import Engine
from sqlmodel import Session

from activities.payments import ProviderSession
from tollway.tables import LocalCharge, utcnow
from workflows.models import CheckoutRequest, RefundRequest


def _derived(prefix: str, material: str) -> str:
    return f"{prefix}_{hashlib.sha256(f'{prefix}:{material}'.encode()).hexdigest()[:24]}"


class LocalPaymentProvider:
    name = "local"
    livemode = False

    def __init__(self, engine: Engine, public_base_url: str) -> None:
        self._engine = engine
        self._base_url = public_base_url.rstrip("/")

    # -- provider interface -------------------------------------------------------------------

    def create_session(
        self, request: CheckoutRequest, order_id: str, idempotency_key: str
    ) -> ProviderSession:
        # Random, never derived from the execution id: whoever holds the id must not be able
        # to open, pay or cancel its checkout. Called once per order (the ledger keeps it).
        session_id = f"cs_local_{secrets.token_urlsafe(24)}"
        return ProviderSession(session_id, f"{self._base_url}/checkout/{session_id}")

    def expire_session(self, session_id: str, idempotency_key: str) -> None:
        """Nothing to do here: the page refuses payment once the order is not pending."""

    def refund(self, request: RefundRequest) -> str:
        with Session(self._engine) as session:
            charge = session.get(LocalCharge, request.payment_reference, with_for_update=True)
            if charge is None:  # a payment our bank never saw: record the refund anyway
                charge = LocalCharge(
                    payment_reference=request.payment_reference,
                    execution_id=request.execution_id,
                    amount=request.amount,
                    currency=request.currency,
                )
            if charge.refund_id is None:
                charge.refund_id = _derived("re_local", request.idempotency_key)
                charge.refunded_at = utcnow()
                session.add(charge)
                session.commit()
            return charge.refund_id

    # -- the bank and the wire format, used by the checkout page and by tests ------------------

    def capture(self, execution_id: str, session_id: str | None, amount: int, currency: str) -> str:
        """Take a payment; returns its reference (like a Stripe PaymentIntent id)."""
        reference = f"pi_local_{secrets.token_hex(12)}"
        with Session(self._engine) as session:
            session.add(
                LocalCharge(
                    payment_reference=reference,
                    execution_id=execution_id,
                    checkout_session_id=session_id,
                    amount=amount,
                    currency=currency,
                )
            )
            session.commit()
        return reference


def checkout_event(
    event_type: str,
    *,
    execution_id: str,
    session_id: str,
    amount: int,
    currency: str,
    payment_reference: str | None,
    payment_status: str = "paid",
    event_id: str | None = None,
) -> dict[str, Any]:
    """A Stripe-format ``checkout.session.*`` event."""
    return {
        "id": event_id or f"evt_local_{secrets.token_hex(12)}",
        "object": "event",
        "type": event_type,
        "created": int(time.time()),
        "livemode": False,
        "data": {
            "object": {
                "id": session_id,
                "object": "checkout.session",
                "amount_total": amount,
                "currency": currency,
                "payment_status": payment_status,
                "payment_intent": payment_reference,
                "client_reference_id": execution_id,
                "metadata": {"executionId": execution_id},
            }
        },
    }


def sign(payload: bytes, secret: str, timestamp: int | None = None) -> str:
    """The ``Stripe-Signature`` header for ``payload``."""
    return str(
        stripe.WebhookSignature.generate_signature_header(
            payload.decode(), secret, timestamp=timestamp
        )
    )


def encode(event: dict[str, Any]) -> bytes:
    return json.dumps(event, separators=(",", ":")).encode()
