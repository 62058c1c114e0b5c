"""The local payment provider's own bank and wire format: the money it "captures" and
refunds (``local_charge``, standing in for Stripe's books) and Stripe-format events signed
with ``TOLLWAY_LOCAL_WEBHOOK_SECRET``. Shared by the provider's activities
(``activities.local_provider``) and the API's local checkout page."""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from typing import Any

import stripe
from sqlalchemy import Engine
from sqlmodel import Session

from tollway.payment_models import RefundRequest
from tollway.tables import LocalCharge, utcnow


def _derived(prefix: str, material: str) -> str:
    return f"{prefix}_{hashlib.sha256(f'{prefix}:{material}'.encode()).hexdigest()[:24]}"


class LocalBank:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine

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

    def refund(self, request: RefundRequest) -> str:
        """Give a payment back, once per payment however often it is asked."""
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
