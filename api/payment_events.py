"""Inbound payment events: verify, remember, map to an execution, deliver.

Both providers speak Stripe's wire format and go through this one path: the ``local``
provider's checkout page signs its events exactly as Stripe does.

- The signature is checked on the raw body (HMAC-SHA256, constant-time comparison by the
  ``stripe`` package, 300 s tolerance both ways), against every configured secret so a
  rotation needs no downtime.
- Event ids are stored in ``payment_event``: a repeated event (also after a restart) is
  answered 200 "duplicate" and has no second effect -- but only once its first delivery was
  settled. A retry of an event not yet delivered (the first attempt failed, hung, or died
  with its process) delivers it again; the update id (= event id) makes that safe. 2xx is
  only ever answered after the execution took the event in.
- The event reaches the execution as a workflow update (id = event id). An execution that
  is already closed gets no update: a payment for it is refunded by its own workflow.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import anyio.to_thread
import stripe
import structlog
from sqlalchemy import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session
from temporalio.client import Client
from temporalio.common import WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from tollway.executions import ExecutionNotRunning, temporal_call
from tollway.ledger import OrderLedger
from tollway.tables import PaymentEvent
from workflows.execution import ExecutionWorkflow
from workflows.late_payment import (
    LatePaymentRefundWorkflow,
    RefundAnnouncementWorkflow,
    late_refund_id,
    refund_announcement_id,
)
from workflows.models import (
    ExecutionView,
    PaymentEventKind,
    PaymentNotice,
    RefundRequest,
    from_the_orders_checkout,
)
from workflows.policies import WORKFLOW_TASK_TIMEOUT

TOLERANCE_SECONDS = 300
log = structlog.get_logger("tollway.payments")

_SESSION_KINDS = {
    "checkout.session.async_payment_succeeded": PaymentEventKind.PAID,
    "checkout.session.async_payment_failed": PaymentEventKind.FAILED,
    "checkout.session.expired": PaymentEventKind.EXPIRED,
}


class InvalidSignature(Exception):
    """The event is not signed by a configured secret, or is outside the tolerance."""


def verify(
    raw: bytes, header: str | None, secrets: list[str], now: float | None = None
) -> dict[str, Any]:
    """The event, if ``header`` signs ``raw`` with one of ``secrets`` within the tolerance."""
    if not header:
        raise InvalidSignature("missing Stripe-Signature header")
    if not secrets:
        raise InvalidSignature("no webhook secret is configured for this provider")
    try:
        timestamp = int(dict(p.split("=", 1) for p in header.split(",") if "=" in p)["t"])
    except (KeyError, ValueError):
        raise InvalidSignature("malformed Stripe-Signature header") from None
    if abs((now or time.time()) - timestamp) > TOLERANCE_SECONDS:
        raise InvalidSignature("timestamp outside the tolerance")
    for secret in secrets:
        try:
            stripe.WebhookSignature.verify_header(raw, header, secret, TOLERANCE_SECONDS)
        except stripe.SignatureVerificationError:
            continue
        try:
            event = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
            raise InvalidSignature("signed body is not JSON") from None
        if not isinstance(event, dict) or not isinstance(event.get("id"), str):
            raise InvalidSignature("signed body is not an event")
        return event
    raise InvalidSignature("no signature matches")


def to_notice(event: dict[str, Any], provider: str) -> tuple[str | None, PaymentNotice | None]:
    """The execution an event is about, and what it means for it (None: not our concern)."""
    kind_name = str(event.get("type", ""))
    obj = (event.get("data") or {}).get("object") or {}
    if not isinstance(obj, dict):
        return None, None
    metadata = obj.get("metadata")
    if not isinstance(metadata, dict):
        metadata = {}
    execution_id = obj.get("client_reference_id") or metadata.get("executionId")
    if not isinstance(execution_id, str) or not execution_id:
        return None, None
    if kind_name == "checkout.session.completed":
        paid = obj.get("payment_status") == "paid"
        kind = PaymentEventKind.PAID if paid else PaymentEventKind.PROCESSING
    elif kind_name in _SESSION_KINDS:
        kind = _SESSION_KINDS[kind_name]
    elif kind_name == "charge.refunded":
        kind = PaymentEventKind.REFUNDED
    else:
        return execution_id, None
    is_charge = obj.get("object") == "charge"
    reference = obj.get("payment_intent") or (obj.get("id") if is_charge else None)
    amount = obj.get("amount") if is_charge else obj.get("amount_total")
    return execution_id, PaymentNotice(
        event_id=event["id"],
        kind=kind,
        provider=provider,
        checkout_session_id=None if is_charge else obj.get("id"),
        payment_reference=reference if isinstance(reference, str) else None,
        amount=amount if isinstance(amount, int) else None,
        currency=str(obj.get("currency") or "").lower() or None,
        livemode=event.get("livemode") if isinstance(event.get("livemode"), bool) else None,
    )


@dataclass
class PaymentEventProcessor:
    client: Client
    engine: Engine
    task_queue: str
    deadline: float
    livemode: bool = False  # the mode the configured provider's events must carry
    # Told the execution's state as the payment left it (the API's watchers pass it on).
    on_view: Callable[[ExecutionView], Awaitable[None]] | None = None

    async def process(self, provider: str, event: dict[str, Any]) -> str:
        """Handle a verified event once; returns what happened (for the response and logs)."""
        execution_id, notice = to_notice(event, provider)
        if await anyio.to_thread.run_sync(self._remember, event, provider, execution_id):
            return "duplicate"
        try:
            outcome = await self._deliver(execution_id, notice)
        except BaseException:
            await anyio.to_thread.run_sync(self._forget, event["id"])
            raise
        await anyio.to_thread.run_sync(self._settle, event["id"], outcome)
        log.info(
            "payment event",
            event_id=event["id"],
            type=event.get("type"),
            execution_id=execution_id,
            outcome=outcome,
        )
        return outcome

    async def _deliver(self, execution_id: str | None, notice: PaymentNotice | None) -> str:
        if execution_id is None:
            return "no_execution"
        if notice is None:
            return "ignored"
        handle = self.client.get_workflow_handle_for(ExecutionWorkflow.run, execution_id)
        try:
            async with temporal_call(self.deadline):
                result = await handle.execute_update(
                    ExecutionWorkflow.payment_event,
                    notice,
                    id=f"payment-{notice.event_id}",
                    rpc_timeout=timedelta(seconds=self.deadline),
                )
            if self.on_view is not None:
                await self.on_view(result.view)
            return "ignored" if result.outcome == "ignored" else "delivered"
        except ExecutionNotRunning:
            pass  # either no such execution, or it is closed

        try:
            await handle.describe()
        except RPCError as err:
            if err.status == RPCStatusCode.NOT_FOUND:
                log.warning(
                    "payment event for unknown execution",
                    execution_id=execution_id,
                    event_id=notice.event_id,
                )
                return "unknown_execution"
            raise
        return await self._after_close(execution_id, notice)

    async def _after_close(self, execution_id: str, notice: PaymentNotice) -> str:
        ledger = OrderLedger(self.engine)
        order = await anyio.to_thread.run_sync(ledger.by_execution, execution_id)
        if order is None or not from_the_orders_checkout(
            notice,
            provider=order.provider,
            session_id=order.checkout_session_id,
            livemode=self.livemode,
            kept_reference=order.payment_reference,
        ):
            log.warning(
                "payment event ignored: not from the order's checkout", event_id=notice.event_id
            )
            return "ignored"
        own = order.payment_reference == notice.payment_reference
        if notice.kind == PaymentEventKind.REFUNDED and own and notice.payment_reference:
            await anyio.to_thread.run_sync(
                ledger.record_refund,
                RefundRequest.of_notice(execution_id, notice, "refunded at the provider"),
                f"provider:{notice.event_id}",
            )
            await self._announce_refund(execution_id, notice.event_id)
            return "refund_recorded"
        if notice.kind != PaymentEventKind.PAID or not notice.payment_reference:
            return "execution_closed"
        if own:
            return "already_consumed"  # another event about the payment it ran on
        request = RefundRequest.of_notice(execution_id, notice, "payment after the execution ended")
        try:
            await self.client.start_workflow(
                LatePaymentRefundWorkflow.run,
                request,
                id=late_refund_id(request),
                task_timeout=WORKFLOW_TASK_TIMEOUT,
                task_queue=self.task_queue,
                id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE_FAILED_ONLY,
            )
        except WorkflowAlreadyStartedError:
            return "late_payment_refund_exists"
        return "late_payment_refunded"

    async def _announce_refund(self, execution_id: str, event_id: str) -> None:
        """Its ``execution.refunded`` status event, emitted by the worker (once per event:
        the workflow's ID is the event's)."""
        try:
            await self.client.start_workflow(
                RefundAnnouncementWorkflow.run,
                execution_id,
                id=refund_announcement_id(execution_id, event_id),
                task_timeout=WORKFLOW_TASK_TIMEOUT,
                task_queue=self.task_queue,
                id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE_FAILED_ONLY,
            )
        except WorkflowAlreadyStartedError:
            pass

    def _remember(self, event: dict[str, Any], provider: str, execution_id: str | None) -> bool:
        """Store the event as being processed; True when an earlier delivery of it already
        settled (a duplicate). A row still "processing" is not a duplicate: whatever happened
        to that attempt, this one delivers the event."""
        event_id = event["id"][:255]
        with Session(self.engine) as session:
            session.add(
                PaymentEvent(
                    id=event_id,
                    provider=provider,
                    type=str(event.get("type", ""))[:100],
                    execution_id=execution_id[:64] if execution_id else None,
                    outcome="processing",
                )
            )
            try:
                session.commit()
                return False
            except IntegrityError:
                session.rollback()
            row = session.get(PaymentEvent, event_id)
            return row is not None and row.outcome != "processing"

    def _forget(self, event_id: str) -> None:
        with Session(self.engine) as session:
            row = session.get(PaymentEvent, event_id[:255])
            if row is not None:
                session.delete(row)
                session.commit()

    def _settle(self, event_id: str, outcome: str) -> None:
        with Session(self.engine) as session:
            row = session.get(PaymentEvent, event_id[:255])
            if row is not None:
                row.outcome = outcome
                session.add(row)
                session.commit()
