"""Settling a closed execution's payment by hand: ``tollway admin executions refund``.

For what no workflow code could do -- an execution terminated in Temporal (terminate runs no
code, so nothing refunded it). The refund goes through the provider with the same
execution-derived idempotency key the workflow would use, so a second call, or a refund the
workflow already made, is a no-op; the ledger records it.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Engine
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.service import RPCError, RPCStatusCode

from activities.payments import PaymentProvider
from tollway.ledger import OrderLedger
from tollway.payment_models import RefundRequest


class SettleError(ValueError):
    """The refund cannot be made as asked; the message says why."""


@dataclass(frozen=True)
class Settled:
    execution_id: str
    payment_reference: str
    refund_reference: str
    already: bool


async def refund_execution(
    engine: Engine, client: Client, provider: PaymentProvider, execution_id: str, reason: str
) -> Settled:
    if not reason.strip():
        raise SettleError("--reason must say why the payment is refunded")
    ledger = OrderLedger(engine)
    order = ledger.by_execution(execution_id)
    if order is None or order.payment_reference is None:
        raise SettleError(f"execution {execution_id!r} has no paid order")
    if order.provider != provider.name:
        raise SettleError(
            f"the order was paid through {order.provider!r}, not the configured {provider.name!r}"
        )
    if order.refund_reference is not None:
        return Settled(execution_id, order.payment_reference, order.refund_reference, True)
    try:
        desc = await client.get_workflow_handle(execution_id).describe()
    except RPCError as err:
        if err.status != RPCStatusCode.NOT_FOUND:
            raise
    else:
        if desc.status == WorkflowExecutionStatus.RUNNING:
            raise SettleError(
                f"execution {execution_id!r} is still open: cancel it (its own refund follows)"
            )
    request = RefundRequest(
        execution_id=execution_id,
        provider=order.provider,
        payment_reference=order.payment_reference,
        amount=order.amount,
        currency=order.currency,
        reason=reason.strip(),
    )
    refund_reference = provider.refund(request)
    ledger.record_refund(request, refund_reference)
    return Settled(execution_id, order.payment_reference, refund_reference, False)
