"""One status webhook delivery, as durable Temporal work of its own: it outlives the execution
that emitted it, and retries with exponential backoff for more than a day."""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from activities.webhook_activities import ATTEMPT_TIMEOUT, WebhookActivities
    from workflows.models import DeliveryInput

#: Attempts go on for 26 hours (backoff x2 up to one attempt an hour), then the delivery fails.
DELIVERY_DEADLINE = timedelta(hours=26)


@workflow.defn(name="TollwayWebhookDelivery")
class WebhookDeliveryWorkflow:
    @workflow.run
    async def run(self, inp: DeliveryInput) -> str:
        try:
            await workflow.execute_activity_method(
                WebhookActivities.deliver,
                inp,
                summary="deliver a status webhook",
                start_to_close_timeout=timedelta(seconds=ATTEMPT_TIMEOUT + 5),
                schedule_to_close_timeout=DELIVERY_DEADLINE,
                retry_policy=RetryPolicy(
                    initial_interval=timedelta(seconds=inp.retry_initial_seconds),
                    backoff_coefficient=2.0,
                    maximum_interval=timedelta(hours=1),
                    non_retryable_error_types=["AddressRefused", "EndpointGone", "DeliveryGone"],
                ),
            )
        except ActivityError:
            await workflow.execute_activity_method(
                WebhookActivities.give_up,
                inp,
                summary="record the delivery as failed",
                start_to_close_timeout=timedelta(seconds=30),
            )
            return "failed"
        return "succeeded"
