"""Payload models that cross Temporal: workflow input, update/signal/query types, activity I/O.

Field names of :class:`ExecutionView` are the public contract's (camelCase), because the view
*is* the seed's ``execution`` object. Every payload is one typed model, so fields can be added
later without breaking running histories.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict

from tollway.definitions import Step, WorkflowDefinition
from tollway.payment_models import (
    CheckoutRequest as CheckoutRequest,
)
from tollway.payment_models import (
    CheckoutSession as CheckoutSession,
)
from tollway.payment_models import (
    CloseCheckoutRequest as CloseCheckoutRequest,
)
from tollway.payment_models import (
    ConfirmPaymentRequest as ConfirmPaymentRequest,
)
from tollway.payment_models import (
    PaymentEventKind as PaymentEventKind,
)
from tollway.payment_models import (
    PaymentNotice as PaymentNotice,
)
from tollway.payment_models import (
    RefundRequest as RefundRequest,
)
from tollway.payment_models import (
    RefundResult as RefundResult,
)
from tollway.payment_models import (
    from_the_orders_checkout as from_the_orders_checkout,
)


class Status(StrEnum):
    AWAITING_PAYMENT = "awaiting_payment"
    PAYMENT_CONFIRMED = "payment_confirmed"
    QUEUED = "workflow_queued"
    RUNNING = "workflow_running"
    WAITING = "workflow_waiting"
    SUCCEEDED = "workflow_succeeded"
    FAILED = "workflow_failed"
    CANCELLED = "workflow_cancelled"

    @property
    def terminal(self) -> bool:
        return self in {Status.SUCCEEDED, Status.FAILED, Status.CANCELLED}


class PaymentStatus(StrEnum):
    NOT_REQUIRED = "not_required"
    PENDING = "pending"
    PAID = "paid"
    FAILED = "failed"
    EXPIRED = "expired"
    REFUNDED = "refunded"
    CANCELLED = "cancelled"


class _Payload(BaseModel):
    model_config = ConfigDict(extra="ignore")


class ExecutionRequest(_Payload):
    """The caller's validated create body (idempotency key resolved)."""

    sourceSystem: str
    sourceEntityType: str
    sourceEntityId: str | None = None
    externalRef: str | None = None
    idempotencyKey: str
    requestPayload: dict[str, Any] | None = None
    clientSafeMetadata: dict[str, Any] | None = None


class ExecutionInput(_Payload):
    execution_id: str
    organization_id: str
    initiated_by_id: str
    initiated_by_type: str
    public_workflow_id: str
    workflow_version: int
    definition: WorkflowDefinition
    request: ExecutionRequest
    fingerprint: str
    public_base_url: str = ""  # where callbacks reach the API
    notify: bool = False  # the organization has status webhook endpoints: emit events
    # When the API accepted the create (the view's createdAt, the same in the create's answer
    # and in every later view); None in inputs recorded before it: the first task's time.
    created_at: datetime | None = None


class ExecutionState(_Payload):
    """What changes over an execution's life; recorded in the workflow's memo at each change."""

    status: Status
    paymentStatus: PaymentStatus
    statusReason: str | None = None
    # The same reason in words safe for the payer (no URLs, addresses, upstream bodies, who).
    clientStatusReason: str | None = None
    createdAt: datetime
    updatedAt: datetime
    startedAt: datetime | None = None
    finishedAt: datetime | None = None
    runId: str
    orderId: str | None = None
    checkoutSessionId: str | None = None
    checkoutUrl: str | None = None
    responsePayload: dict[str, Any] | None = None
    callbacks: dict[str, CallbackAddress] | None = None  # set while a step waits
    cancelledBy: str | None = None  # who asked for the cancellation that ended it


class CallbackAddress(_Payload):
    url: str
    token: str


class CallbackTokensRequest(_Payload):
    step_ids: list[str]


class CallbackTokensResult(_Payload):
    tokens: dict[str, str]


class CallbackInput(_Payload):
    step_id: str
    token: str
    body: Any = None


class ExecutionView(_Payload):
    """The seed's ``execution`` object (plus ``checkoutUrl`` and the pinned version)."""

    id: str
    workflowId: str
    workflowVersion: int
    organizationId: str
    initiatedById: str
    initiatedByType: str
    sourceSystem: str
    sourceEntityType: str
    sourceEntityId: str | None
    externalRef: str | None
    idempotencyKey: str
    requestPayload: dict[str, Any] | None
    clientSafeMetadata: dict[str, Any] | None
    responsePayload: dict[str, Any] | None
    status: Status
    statusReason: str | None
    paymentStatus: PaymentStatus
    orderId: str | None
    checkoutSessionId: str | None
    checkoutUrl: str | None
    runId: str
    createdAt: datetime
    updatedAt: datetime
    startedAt: datetime | None
    finishedAt: datetime | None
    callbacks: dict[str, CallbackAddress] | None = None
    clientStatusReason: str | None = None  # internal: the client view's statusReason
    cancelledBy: str | None = None  # internal: a cancel request ended it (who asked)

    @classmethod
    def build(cls, inp: ExecutionInput, state: ExecutionState) -> ExecutionView:
        req = inp.request
        return cls(
            id=inp.execution_id,
            workflowId=inp.public_workflow_id,
            workflowVersion=inp.workflow_version,
            organizationId=inp.organization_id,
            initiatedById=inp.initiated_by_id,
            initiatedByType=inp.initiated_by_type,
            sourceSystem=req.sourceSystem,
            sourceEntityType=req.sourceEntityType,
            sourceEntityId=req.sourceEntityId,
            externalRef=req.externalRef,
            idempotencyKey=req.idempotencyKey,
            requestPayload=req.requestPayload,
            clientSafeMetadata=req.clientSafeMetadata,
            responsePayload=state.responsePayload,
            status=state.status,
            statusReason=state.statusReason,
            paymentStatus=state.paymentStatus,
            orderId=state.orderId,
            checkoutSessionId=state.checkoutSessionId,
            checkoutUrl=state.checkoutUrl,
            runId=state.runId,
            createdAt=state.createdAt,
            updatedAt=state.updatedAt,
            startedAt=state.startedAt,
            finishedAt=state.finishedAt,
            callbacks=state.callbacks,
            clientStatusReason=state.clientStatusReason,
            cancelledBy=state.cancelledBy,
        )


def settlement_note(
    status: Status, payment_status: PaymentStatus, order_refunded: bool, late_refunds: int
) -> str | None:
    """What the ledger learnt of a closed execution's money after it closed (a closed
    workflow cannot record it on itself), in words; None when nothing changes."""
    if not status.terminal:
        return None
    if payment_status == PaymentStatus.PAID and order_refunded:
        return "the payment was refunded after it ended"
    if payment_status in _UNKEPT and late_refunds:
        return "a payment that arrived after it ended was refunded"
    return None


def with_note(reason: str | None, note: str) -> str:
    return f"{reason}; {note}" if reason else note


def settled(view: ExecutionView, order_refunded: bool, late_refunds: int) -> ExecutionView:
    """``view`` with the ledger's settlement applied: ``paymentStatus`` becomes refunded."""
    note = settlement_note(view.status, view.paymentStatus, order_refunded, late_refunds)
    if note is None:
        return view
    return view.model_copy(
        update={
            "paymentStatus": PaymentStatus.REFUNDED,
            "statusReason": with_note(view.statusReason, note),
            "clientStatusReason": with_note(view.clientStatusReason, note),
        }
    )


_UNKEPT = frozenset(
    {PaymentStatus.PENDING, PaymentStatus.FAILED, PaymentStatus.EXPIRED, PaymentStatus.CANCELLED}
)


class AttachInput(_Payload):
    """Sent with every create. ``nonce`` is fresh per HTTP request: a result carrying another
    request's nonce is the stored outcome of an earlier create, i.e. a replay."""

    fingerprint: str
    nonce: str


class AttachResult(_Payload):
    view: ExecutionView
    nonce: str


class PaymentEventResult(_Payload):
    """What the execution did with a payment event: ``applied`` (it changed or confirmed
    something), ``refunded`` (a payment it could not keep was given back) or ``ignored``
    (another provider, checkout session or mode than the order's: no effect)."""

    outcome: str
    view: ExecutionView


class CancelInput(_Payload):
    by: str


class SlotRequest(_Payload):
    public_workflow_id: str
    execution_id: str
    limit: int


class StepRequest(_Payload):
    step: Step
    context: dict[str, Any]
    organization_id: str = ""  # whose secrets the step may use
    output_budget: int | None = None  # bytes its output may take (None: histories before it)


class StepResult(_Payload):
    output: Any = None


class WebhookEvent(_Payload):
    """A status event of an execution, numbered in the order of its changes."""

    event_id: str
    type: str
    occurred_at: datetime
    view: ExecutionView


class EmitRequest(_Payload):
    organization_id: str
    events: list[WebhookEvent]


class DeliveryInput(_Payload):
    delivery_id: str
    retry_initial_seconds: float = 5.0
