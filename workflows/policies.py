"""Shared constants and helpers of the execution workflow (no workflow state)."""

from __future__ import annotations

from datetime import datetime, timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError, TimeoutError

with workflow.unsafe.imports_passed_through():
    from workflows.models import (
        ExecutionInput,
        ExecutionState,
        PaymentStatus,
        Status,
    )

CALL_TIMEOUT = timedelta(seconds=30)  # a provider call (Stripe retries inside it)
# Calls to Tollway's own database only: milliseconds each, so an attempt cut short by a dying
# worker is retried after seconds rather than half a minute.
LEDGER_TIMEOUT = timedelta(seconds=5)
# A workflow task held by a worker that dies is handed to another worker only after this
# (Temporal's default is 10 s, as long as the API's request deadline: every crash would cost
# callers a 503). Short, but far above what a task takes here (milliseconds).
WORKFLOW_TASK_TIMEOUT = timedelta(seconds=3)
# The same for tasks queued to a dead worker's sticky queue (the SDK's default is 10 s).
STICKY_SCHEDULE_TO_START = timedelta(seconds=3)
# Opening a checkout retries through outages of Tollway's database or the provider (capped
# backoff, for up to CHECKOUT_DEADLINE); a provider that refuses it (a business error) ends
# the execution at once.
CHECKOUT_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    maximum_interval=timedelta(minutes=1),
    non_retryable_error_types=["ProviderRefused"],
)
CHECKOUT_DEADLINE = timedelta(hours=2)
# Money must move eventually: refunds, ledger writes and slot bookkeeping retry until they
# succeed (no attempt limit, capped backoff), visible to operators in the Temporal UI as a
# retrying activity -- and listed by `tollway admin reconcile` -- if a provider keeps refusing.
MONEY_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1), maximum_interval=timedelta(minutes=10)
)


def initial_statuses(inp: ExecutionInput) -> tuple[Status, PaymentStatus]:
    if inp.definition.price is not None:
        return Status.AWAITING_PAYMENT, PaymentStatus.PENDING
    return Status.QUEUED, PaymentStatus.NOT_REQUIRED


def initial_state(inp: ExecutionInput, created_at: datetime, run_id: str) -> ExecutionState:
    """The state an execution has before its workflow has done anything."""
    status, payment_status = initial_statuses(inp)
    return ExecutionState(
        status=status,
        paymentStatus=payment_status,
        createdAt=created_at,
        updatedAt=created_at,
        runId=run_id,
    )


def failure_message(err: BaseException) -> str:
    """The innermost human-readable reason of an activity failure."""
    cause: BaseException | None = err
    while isinstance(cause, ActivityError) and cause.cause is not None:
        cause = cause.cause
    if isinstance(cause, TimeoutError):
        kind = cause.type.name.lower().replace("_", "-") if cause.type else "timeout"
        return f"timed out ({kind})"
    if isinstance(cause, ApplicationError):
        return cause.message
    return str(cause)
