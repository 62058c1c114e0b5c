"""Refund of a payment that arrived for an execution already closed (Stripe retries webhooks
for days). Started by the webhook with an ID derived from the payment, so however often the
event is delivered, the payment is refunded once."""

from __future__ import annotations

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from activities.payments import PaymentActivities
    from workflows.models import RefundRequest, RefundResult
    from workflows.policies import CALL_TIMEOUT, MONEY_RETRY


def late_refund_id(request: RefundRequest) -> str:
    return f"{request.execution_id}-refund-{request.payment_reference}"


@workflow.defn(name="TollwayLatePaymentRefund")
class LatePaymentRefundWorkflow:
    @workflow.run
    async def run(self, request: RefundRequest) -> RefundResult:
        return await workflow.execute_activity_method(
            PaymentActivities.refund_payment,
            request,
            summary="refund a late payment",
            start_to_close_timeout=CALL_TIMEOUT,
            retry_policy=MONEY_RETRY,
        )
