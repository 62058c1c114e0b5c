"""Reconciliation: the order ledger, the payment provider and Temporal must tell one story.

``tollway admin reconcile`` lists every discrepancy it finds among the orders and payments of
a recent window (keep it within the namespace retention: older executions are gone from
Temporal by design):

- ``paid_not_settled``: a paid order whose execution ended neither succeeded nor refunded
  (failed with ``refundOnFailure: false`` keeps the money by definition and is not listed);
- ``refund_pending``: a refund still not done after the threshold -- a payment the execution
  did not keep (duplicate, late, mismatched) with no refund recorded, or a refund activity
  that keeps retrying;
- ``payment_without_order``: money received for an execution that has no order;
- ``execution_missing``: an order that is not final whose execution does not exist;
- ``refund_not_at_provider`` / ``refund_not_in_ledger``: the ledger and the provider disagree
  about a refund.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

import anyio.to_thread
from sqlalchemy import Engine
from sqlmodel import Session, col, select
from temporalio.client import Client, WorkflowExecutionDescription, WorkflowExecutionStatus
from temporalio.service import RPCError, RPCStatusCode

from tollway.definitions import WorkflowDefinition
from tollway.tables import LocalCharge, Order, Payment, WorkflowVersion, utcnow
from workflows.models import ExecutionState, Status

FINAL_ORDER_STATUSES = frozenset({"refunded", "expired", "cancelled"})


@dataclass(frozen=True)
class Discrepancy:
    kind: str
    executionId: str
    detail: str
    orderId: str | None = None
    paymentReference: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


@dataclass
class Report:
    discrepancies: list[Discrepancy]
    checked: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "discrepancies": [d.as_dict() for d in self.discrepancies],
            "checked": self.checked,
        }


class ProviderBook(Protocol):
    """What the provider itself says about a payment (None: it does not know it)."""

    name: str

    def refunded(self, payment_reference: str) -> bool | None: ...

    def orphan_charges(self, since: datetime) -> list[tuple[str, str]]:
        """(execution id, payment reference) of money taken for executions with no order."""
        ...


class LocalBook:
    """The local provider's own bank table."""

    name = "local"

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def refunded(self, payment_reference: str) -> bool | None:
        with Session(self._engine) as session:
            charge = session.get(LocalCharge, payment_reference)
        return None if charge is None else charge.refund_id is not None

    def orphan_charges(self, since: datetime) -> list[tuple[str, str]]:
        with Session(self._engine) as session:
            rows = session.exec(
                select(LocalCharge).where(col(LocalCharge.captured_at) >= since)
            ).all()
            ordered = set(
                session.exec(
                    select(Order.execution_id).where(
                        col(Order.execution_id).in_({r.execution_id for r in rows})
                    )
                ).all()
            )
        return [
            (r.execution_id, r.payment_reference) for r in rows if r.execution_id not in ordered
        ]


class StripeBook:
    """Stripe's refunds of a PaymentIntent, through the official client."""

    name = "stripe"

    def __init__(self, client: Any) -> None:
        self._client = client

    def refunded(self, payment_reference: str) -> bool | None:
        import stripe

        try:
            refunds = self._client.v1.refunds.list(params={"payment_intent": payment_reference})
        except stripe.InvalidRequestError:
            return None
        return any(r.status in {"succeeded", "pending"} for r in refunds.data)

    def orphan_charges(self, since: datetime) -> list[tuple[str, str]]:
        return []  # Stripe payments are only ever made through sessions we created


def _aware(value: datetime | None) -> datetime | None:
    if value is not None and value.tzinfo is None:  # SQLite returns naive UTC
        return value.replace(tzinfo=utcnow().tzinfo)
    return value


class Reconciler:
    def __init__(
        self,
        engine: Engine,
        client: Client,
        book: ProviderBook,
        refund_threshold: timedelta = timedelta(minutes=15),
        now: Callable[[], datetime] = utcnow,
    ) -> None:
        self._engine = engine
        self._client = client
        self._book = book
        self._threshold = refund_threshold
        self._now = now

    async def run(self, since: timedelta) -> Report:
        start = self._now() - since
        orders, payments, definitions = await anyio.to_thread.run_sync(self._load, start)
        found: list[Discrepancy] = []
        checked = 0
        by_execution = {o.execution_id: o for o in orders}
        for order in orders:
            checked += 1
            found += await self._check_order(order, definitions.get(order.id))
        for payment in payments:
            checked += 1
            found += await anyio.to_thread.run_sync(
                self._check_payment, payment, by_execution.get(payment.execution_id)
            )
        orphans = await anyio.to_thread.run_sync(self._book.orphan_charges, start)
        for execution_id, reference in orphans:
            checked += 1
            found.append(
                Discrepancy(
                    "payment_without_order",
                    execution_id,
                    f"{self._book.name} holds a payment for an execution with no order",
                    paymentReference=reference,
                )
            )
        found += await self._stuck_late_refunds()
        return Report(found, checked)

    def _load(
        self, start: datetime
    ) -> tuple[list[Order], list[Payment], dict[str, WorkflowDefinition]]:
        with Session(self._engine) as session:
            orders = list(session.exec(select(Order).where(col(Order.created_at) >= start)))
            payments = list(session.exec(select(Payment).where(col(Payment.received_at) >= start)))
            definitions = {}
            for order in orders:
                version = session.exec(
                    select(WorkflowVersion).where(
                        WorkflowVersion.workflow_id == order.workflow_id,
                        WorkflowVersion.version == order.workflow_version,
                    )
                ).first()
                if version is not None:
                    definitions[order.id] = WorkflowDefinition.model_validate(version.definition)
        return orders, payments, definitions

    async def _describe(self, workflow_id: str) -> WorkflowExecutionDescription | None:
        try:
            return await self._client.get_workflow_handle(workflow_id).describe()
        except RPCError as err:
            if err.status == RPCStatusCode.NOT_FOUND:
                return None
            raise

    async def _check_order(
        self, order: Order, definition: WorkflowDefinition | None
    ) -> list[Discrepancy]:
        desc = await self._describe(order.execution_id)
        eid, oid = order.execution_id, order.id
        if desc is None:
            if order.status in FINAL_ORDER_STATUSES:
                return []
            return [
                Discrepancy(
                    "execution_missing",
                    eid,
                    f"order is {order.status} but its execution does not exist",
                    orderId=oid,
                )
            ]
        if order.status != "paid":
            return []
        if desc.status == WorkflowExecutionStatus.RUNNING:
            return self._stuck_refunds(desc, eid)
        state = await desc.memo_value("state", None, type_hint=ExecutionState)
        status = state.status if state is not None else None
        # The recorded state says how it ended when the workflow ran to its end (completed,
        # failed or cancelled in Temporal); terminated or timed out, it never got to say.
        if status == Status.SUCCEEDED:
            return []
        keeps = definition is not None and not definition.refundOnFailure
        if status == Status.FAILED and keeps:
            return []
        how = desc.status.name.lower() if desc.status else "closed"
        recorded = status.value if status else "no recorded state"
        return [
            Discrepancy(
                "paid_not_settled",
                eid,
                f"execution {how} ({recorded}) and its payment was not refunded",
                orderId=oid,
                paymentReference=order.payment_reference,
            )
        ]

    def _stuck_refunds(self, desc: WorkflowExecutionDescription, eid: str) -> list[Discrepancy]:
        out = []
        for pending in desc.raw_description.pending_activities:
            if pending.activity_type.name != "payments.refund":
                continue
            scheduled = pending.scheduled_time.ToDatetime().replace(tzinfo=utcnow().tzinfo)
            if pending.attempt > 1 and self._now() - scheduled > self._threshold:
                failure = pending.last_failure.message or "no failure recorded"
                out.append(
                    Discrepancy(
                        "refund_pending",
                        eid,
                        f"refund retrying (attempt {pending.attempt}): {failure}",
                    )
                )
        return out

    async def _stuck_late_refunds(self) -> list[Discrepancy]:
        query = "WorkflowType = 'TollwayLatePaymentRefund' AND ExecutionStatus = 'Running'"
        out: list[Discrepancy] = []
        async for execution in self._client.list_workflows(query):
            desc = await self._describe(execution.id)
            if desc is not None:
                out += self._stuck_refunds(desc, execution.id.split("-refund-")[0])
        return out

    def _check_payment(self, payment: Payment, order: Order | None) -> list[Discrepancy]:
        eid, ref = payment.execution_id, payment.payment_reference
        if order is None or payment.order_id is None:
            with Session(self._engine) as session:
                order = (
                    order or session.exec(select(Order).where(Order.execution_id == eid)).first()
                )
            if order is None:
                return [
                    Discrepancy(
                        "payment_without_order",
                        eid,
                        "the ledger holds a payment for an execution with no order",
                        paymentReference=ref,
                    )
                ]
        out: list[Discrepancy] = []
        received = _aware(payment.received_at)
        kept = order.payment_reference == ref
        if not kept and payment.refunded_at is None and received is not None:
            if self._now() - received > self._threshold:
                out.append(
                    Discrepancy(
                        "refund_pending",
                        eid,
                        "a payment the execution did not keep has not been refunded",
                        orderId=order.id,
                        paymentReference=ref,
                    )
                )
        if payment.provider == self._book.name:
            at_provider = self._book.refunded(ref)
            in_ledger = payment.refunded_at is not None
            if at_provider is False and in_ledger:
                out.append(
                    Discrepancy(
                        "refund_not_at_provider",
                        eid,
                        f"the ledger records a refund that {self._book.name} does not have",
                        orderId=order.id,
                        paymentReference=ref,
                    )
                )
            elif at_provider is True and not in_ledger:
                out.append(
                    Discrepancy(
                        "refund_not_in_ledger",
                        eid,
                        f"{self._book.name} refunded a payment the ledger does not record",
                        orderId=order.id,
                        paymentReference=ref,
                    )
                )
        return out
