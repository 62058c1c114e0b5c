"""The order ledger: every money transition of an execution, in Tollway's own database, so
finance can reconcile without reading Temporal. Written by payment activities (and, for late
payments, by the refund workflow's activities); read by the checkout page and webhooks."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Engine, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from tollway.payment_models import CheckoutRequest, ConfirmPaymentRequest, RefundRequest
from tollway.tables import Order, Payment, utcnow


def order_id_for(execution_id: str) -> str:
    return f"ord_{hashlib.sha256(f'ord:{execution_id}'.encode()).hexdigest()[:24]}"


@dataclass(frozen=True)
class Settlement:
    """What the ledger knows of an execution's money after it closed: whether the payment it
    kept was refunded (e.g. at the provider), and how many payments it never kept (late
    ones, after expiry or cancellation) were refunded."""

    order_refunded: bool
    late_refunds: int


class OrderLedger:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def ensure_order(self, request: CheckoutRequest, provider: str) -> Order:
        """The execution's order, created once however often this is retried."""
        with Session(self._engine) as session:
            existing = session.get(Order, order_id_for(request.execution_id))
            if existing is not None:
                return existing
            order = Order(
                id=order_id_for(request.execution_id),
                execution_id=request.execution_id,
                organization_id=request.organization_id,
                workflow_id=request.public_workflow_id,
                workflow_version=request.workflow_version,
                workflow_name=request.workflow_name,
                amount=request.price.amount,
                currency=request.price.currency,
                provider=provider,
                expires_at=request.expires_at,
            )
            session.add(order)
            try:
                session.commit()
            except IntegrityError:  # a concurrent attempt stored it first
                session.rollback()
                return session.exec(
                    select(Order).where(Order.execution_id == request.execution_id)
                ).one()
            session.refresh(order)
            return order

    def attach_session(self, order_id: str, session_id: str, url: str) -> Order:
        """Attach the checkout session; the first one attached wins (a compare-and-set, so
        concurrent attempts all return the same session)."""
        with Session(self._engine) as session:
            session.execute(
                update(Order)
                .where(col(Order.id) == order_id, col(Order.checkout_session_id).is_(None))
                .values(checkout_session_id=session_id, checkout_url=url, updated_at=utcnow())
            )
            session.commit()
            order = session.get(Order, order_id)
            assert order is not None
            return order

    def by_execution(self, execution_id: str) -> Order | None:
        with Session(self._engine) as session:
            return session.get(Order, order_id_for(execution_id))

    def by_session(self, checkout_session_id: str) -> Order | None:
        with Session(self._engine) as session:
            return session.exec(
                select(Order).where(Order.checkout_session_id == checkout_session_id)
            ).first()

    def close(self, execution_id: str, outcome: str) -> None:
        """An unpaid order ends (expired or cancelled); a paid one is never overwritten."""
        with Session(self._engine) as session:
            order = session.get(Order, order_id_for(execution_id))
            if order is not None and order.status in {"pending", "failed"}:
                order.status, order.closed_at = outcome, utcnow()
                order.updated_at = utcnow()
                session.add(order)
                session.commit()

    def mark_failed_attempt(self, execution_id: str) -> None:
        with Session(self._engine) as session:
            order = session.get(Order, order_id_for(execution_id))
            if order is not None and order.status == "pending":
                order.status, order.updated_at = "failed", utcnow()
                session.add(order)
                session.commit()

    def record_payment(
        self, request: ConfirmPaymentRequest | RefundRequest, consumed: bool
    ) -> None:
        """Record a payment received; ``consumed`` when it pays for the order."""
        now = utcnow()
        with Session(self._engine) as session:
            order = session.get(Order, order_id_for(request.execution_id))
            if session.get(Payment, request.payment_reference) is None:
                session.add(
                    Payment(
                        payment_reference=request.payment_reference,
                        order_id=order.id if order else None,
                        execution_id=request.execution_id,
                        provider=request.provider,
                        amount=request.amount,
                        currency=request.currency,
                        received_at=now,
                    )
                )
            if consumed and order is not None and order.payment_reference is None:
                order.status, order.payment_reference = "paid", request.payment_reference
                order.paid_at = order.updated_at = now
                session.add(order)
            try:
                session.commit()
            except IntegrityError:
                session.rollback()  # recorded concurrently: same facts

    def record_refund(
        self, request: RefundRequest, refund_reference: str, at: datetime | None = None
    ) -> None:
        self.record_payment(request, consumed=False)
        now = at or utcnow()
        with Session(self._engine) as session:
            payment = session.get(Payment, request.payment_reference)
            assert payment is not None
            if payment.refunded_at is None:
                payment.refund_reference, payment.refunded_at = refund_reference, now
                payment.refund_reason = request.reason[:500]
                session.add(payment)
            order = session.get(Order, order_id_for(request.execution_id))
            if order is not None and order.payment_reference == request.payment_reference:
                if order.refunded_at is None:
                    order.status, order.refund_reference = "refunded", refund_reference
                    order.refunded_at = order.updated_at = now
                    session.add(order)
            session.commit()

    def payment(self, payment_reference: str) -> Payment | None:
        with Session(self._engine) as session:
            return session.get(Payment, payment_reference)

    def settlements(self, execution_ids: Iterable[str]) -> dict[str, Settlement]:
        ids = list(dict.fromkeys(execution_ids))
        if not ids:
            return {}
        with Session(self._engine) as session:
            orders = {
                o.execution_id: o
                for o in session.exec(select(Order).where(col(Order.execution_id).in_(ids)))
            }
            refunded = session.exec(
                select(Payment).where(
                    col(Payment.execution_id).in_(ids), col(Payment.refunded_at).is_not(None)
                )
            ).all()
        late: dict[str, int] = {}
        for payment in refunded:
            order = orders.get(payment.execution_id)
            if order is None or order.payment_reference != payment.payment_reference:
                late[payment.execution_id] = late.get(payment.execution_id, 0) + 1
        return {
            eid: Settlement(
                order_refunded=order.refunded_at is not None, late_refunds=late.get(eid, 0)
            )
            for eid, order in orders.items()
        }
