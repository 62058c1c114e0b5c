"""The embedded payment provider: orders and checkout sessions in Tollway's own database,
its checkout page served by Tollway itself."""

from __future__ import annotations

import hashlib

from sqlalchemy import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select

from tollway.tables import Order
from workflows.models import CheckoutRequest, CheckoutSession


def _derived(prefix: str, execution_id: str) -> str:
    return f"{prefix}_{hashlib.sha256(f'{prefix}:{execution_id}'.encode()).hexdigest()[:24]}"


class LocalPaymentProvider:
    name = "local"

    def __init__(self, engine: Engine, public_base_url: str) -> None:
        self._engine = engine
        self._base_url = public_base_url.rstrip("/")

    def _session_of(self, order: Order) -> CheckoutSession:
        assert order.checkout_session_id and order.checkout_url
        return CheckoutSession(
            order_id=order.id,
            checkout_session_id=order.checkout_session_id,
            checkout_url=order.checkout_url,
        )

    def create_checkout(self, request: CheckoutRequest) -> CheckoutSession:
        with Session(self._engine) as session:
            existing = session.exec(
                select(Order).where(Order.execution_id == request.execution_id)
            ).first()
            if existing is not None:
                return self._session_of(existing)
            session_id = _derived("cs_local", request.execution_id)
            order = Order(
                id=_derived("ord", request.execution_id),
                execution_id=request.execution_id,
                organization_id=request.organization_id,
                workflow_id=request.public_workflow_id,
                workflow_version=request.workflow_version,
                amount=request.price.amount,
                currency=request.price.currency,
                provider=self.name,
                checkout_session_id=session_id,
                checkout_url=f"{self._base_url}/checkout/{session_id}",
                expires_at=request.expires_at,
            )
            session.add(order)
            try:
                session.commit()
            except IntegrityError:
                # A concurrent attempt won the race: return what it stored.
                session.rollback()
                winner = session.exec(
                    select(Order).where(Order.execution_id == request.execution_id)
                ).one()
                return self._session_of(winner)
            session.refresh(order)
            return self._session_of(order)
