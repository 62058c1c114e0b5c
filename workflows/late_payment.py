"""Money that moves after an execution closed. A payment that arrived for an execution
already closed (Stripe retries webhooks for days) is refunded by its own workflow, started by
the webhook with an ID derived from the payment, so however often the event is delivered, the
payment is refunded once. A refund that makes a closed execution refunded (that one, or one
the provider reports) is announced as its ``execution.refunded`` status event, which the
execution's own workflow, already closed, cannot emit."""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from activities.payments import PaymentActivities
    from activities.webhook_activities import WebhookActivities
    from workflows.models import RefundRequest, RefundResult
    from workflows.policies import CALL_TIMEOUT, MONEY_RETRY

ANNOUNCE_PATCH = "announce-late-refund"
ANNOUNCE_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_attempts=10)


def late_refund_id(request: RefundRequest) -> str:
    return f"{request.execution_id}-refund-{request.payment_reference}"


def refund_announcement_id(execution_id: str, event_id: str) -> str:
    return f"{execution_id}-refunded-{event_id}"


async def announce_refund(execution_id: str) -> None:
    """Emit ``execution.refunded`` if the ledger now makes the execution refunded. A failure
    is logged, not raised: the money has moved either way, and the view says so."""
    try:
        await workflow.execute_activity_method(
            WebhookActivities.announce_refund,
            execution_id,
            summary="announce the refund",
            start_to_close_timeout=CALL_TIMEOUT,
            retry_policy=ANNOUNCE_RETRY,
        )
    except ActivityError as err:
        workflow.logger.warning("execution.refunded not emitted: %s", err)


@workflow.defn(name="TollwayLatePaymentRefund")
class LatePaymentRefundWorkflow:
    @workflow.run
    async def run(self, request: RefundRequest) -> RefundResult:
        result = await workflow.execute_activity_method(
            PaymentActivities.refund_payment,
            request,
            summary="refund a late payment",
            start_to_close_timeout=CALL_TIMEOUT,
            retry_policy=MONEY_RETRY,
        )
        if workflow.patched(ANNOUNCE_PATCH):
            await announce_refund(request.execution_id)
        return result


@workflow.defn(name="TollwayRefundAnnouncement")
class RefundAnnouncementWorkflow:
    """Started by the payment webhook when the provider reports a refund of a closed
    execution's payment (recorded in the ledger by the webhook itself)."""

    @workflow.run
    async def run(self, execution_id: str) -> None:
        await announce_refund(execution_id)
