"""The execution workflow: wait for payment (when priced), then run the definition's steps.

Deterministic by construction: time from ``workflow.now()``, every side effect in an
activity, and all state a handler needs is set in ``@workflow.init`` (the create update is
delivered in the same task as the start, before ``run`` has begun).
"""

from __future__ import annotations

import builtins
from datetime import datetime, timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError, TimeoutError

with workflow.unsafe.imports_passed_through():
    from activities.payments import PaymentActivities
    from activities.step_activities import StepActivities
    from tollway.definitions import Step, TransformStep
    from workflows import search_attributes as sa
    from workflows.models import (
        AttachInput,
        AttachResult,
        CheckoutRequest,
        ExecutionInput,
        ExecutionState,
        ExecutionView,
        PaymentSignal,
        PaymentStatus,
        Status,
        StepRequest,
    )

CHECKOUT_RETRY = RetryPolicy(maximum_attempts=5, initial_interval=timedelta(seconds=1))


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
        return (
            f"timed out ({cause.type.name.lower().replace('_', '-') if cause.type else 'timeout'})"
        )
    if isinstance(cause, ApplicationError):
        return cause.message
    return str(cause)


@workflow.defn(name="TollwayExecution")
class ExecutionWorkflow:
    @workflow.init
    def __init__(self, inp: ExecutionInput) -> None:
        self._input = inp
        self._state = initial_state(inp, workflow.now(), workflow.info().run_id)
        self._checkout_settled = inp.definition.price is None
        self._payment: PaymentSignal | None = None

    # -- handlers ---------------------------------------------------------------------------

    @workflow.query
    def view(self) -> ExecutionView:
        return ExecutionView.build(self._input, self._state)

    @workflow.update
    async def attach(self, inp: AttachInput) -> AttachResult:
        """The create call: returns the view once the checkout (if any) exists."""
        await workflow.wait_condition(lambda: self._checkout_settled)
        return AttachResult(view=self.view(), nonce=inp.nonce)

    @attach.validator
    def _validate_attach(self, inp: AttachInput) -> None:
        if inp.fingerprint != self._input.fingerprint:
            raise ApplicationError(
                "idempotency key already used with a different request",
                type="IdempotencyKeyReused",
            )

    @workflow.signal
    def payment_received(self, signal: PaymentSignal) -> None:
        if self._payment is None:
            self._payment = signal

    # -- main -------------------------------------------------------------------------------

    @workflow.run
    async def run(self, inp: ExecutionInput) -> ExecutionView:
        self._record()
        try:
            if inp.definition.price is not None and not await self._collect_payment():
                return await self._finish()
            await self._run_steps()
        finally:
            self._checkout_settled = True
        return await self._finish()

    async def _collect_payment(self) -> bool:
        price = self._input.definition.price
        assert price is not None
        timeout = timedelta(seconds=self._input.definition.paymentTimeoutSeconds)
        try:
            checkout = await workflow.execute_activity_method(
                PaymentActivities.create_checkout,
                CheckoutRequest(
                    execution_id=self._input.execution_id,
                    organization_id=self._input.organization_id,
                    public_workflow_id=self._input.public_workflow_id,
                    workflow_version=self._input.workflow_version,
                    workflow_name=self._input.definition.name,
                    price=price,
                    expires_at=workflow.now() + timeout,
                ),
                start_to_close_timeout=timedelta(seconds=30),
                retry_policy=CHECKOUT_RETRY,
            )
        except ActivityError as err:
            self._set(
                status=Status.FAILED,
                paymentStatus=PaymentStatus.CANCELLED,
                statusReason=f"checkout could not be created: {failure_message(err)}",
                finishedAt=workflow.now(),
            )
            return False
        self._set(
            orderId=checkout.order_id,
            checkoutSessionId=checkout.checkout_session_id,
            checkoutUrl=checkout.checkout_url,
        )
        self._checkout_settled = True
        try:
            await workflow.wait_condition(lambda: self._payment is not None, timeout=timeout)
        except builtins.TimeoutError:
            self._set(
                status=Status.CANCELLED,
                paymentStatus=PaymentStatus.EXPIRED,
                statusReason="payment_expired",
                finishedAt=workflow.now(),
            )
            return False
        payment = self._payment
        assert payment is not None
        if (payment.amount, payment.currency.lower()) != (price.amount, price.currency):
            self._set(
                status=Status.FAILED,
                paymentStatus=PaymentStatus.FAILED,
                statusReason=(
                    f"payment of {payment.amount} {payment.currency} does not match the order "
                    f"({price.amount} {price.currency}); nothing was run"
                ),
                finishedAt=workflow.now(),
            )
            return False
        self._set(status=Status.PAYMENT_CONFIRMED, paymentStatus=PaymentStatus.PAID)
        self._set(status=Status.QUEUED)
        return True

    async def _run_steps(self) -> None:
        definition = self._input.definition
        request = self._input.request
        context: dict[str, Any] = {
            "request": request.requestPayload or {},
            "metadata": request.clientSafeMetadata or {},
            "steps": {},
            "callbacks": {},
        }
        self._set(status=Status.RUNNING, startedAt=workflow.now())
        for step in definition.steps:
            try:
                if step.when is not None and not await self._evaluate(step.when, context, step):
                    context["steps"][step.id] = None
                    continue
                context["steps"][step.id] = await self._execute(step, context)
            except ActivityError as err:
                self._fail(f"step '{step.id}' failed: {failure_message(err)}")
                return
        try:
            output = (
                await self._evaluate(definition.output, context)
                if definition.output is not None
                else context["steps"]
            )
        except ActivityError as err:
            self._fail(f"output could not be built: {failure_message(err)}")
            return
        self._set(
            status=Status.SUCCEEDED,
            responsePayload=output if isinstance(output, dict) else {"value": output},
            finishedAt=workflow.now(),
        )

    async def _execute(self, step: Step, context: dict[str, Any]) -> Any:
        result = await workflow.execute_activity_method(
            StepActivities.run_step,
            StepRequest(step=step, context=context),
            start_to_close_timeout=timedelta(seconds=step.timeout),
            retry_policy=RetryPolicy(
                maximum_attempts=step.retry.maxAttempts,
                initial_interval=timedelta(seconds=step.retry.initialIntervalSeconds),
                backoff_coefficient=step.retry.backoff,
            ),
        )
        return result.output

    async def _evaluate(
        self, expression: str, context: dict[str, Any], of: Step | None = None
    ) -> Any:
        step = TransformStep(
            id=f"{of.id}_when" if of else "output", kind="transform", expression=expression
        )
        return await self._execute(step, context)

    # -- state ------------------------------------------------------------------------------

    def _fail(self, reason: str) -> None:
        self._set(status=Status.FAILED, statusReason=reason, finishedAt=workflow.now())

    def _set(self, **changes: Any) -> None:
        self._state = self._state.model_copy(update={**changes, "updatedAt": workflow.now()})
        self._record()

    def _record(self) -> None:
        """Record the state on the workflow itself, so the view survives stopped workers."""
        workflow.upsert_memo({"state": self._state})
        workflow.upsert_search_attributes(
            [
                sa.STATUS.value_set(self._state.status.value),
                sa.PAYMENT_STATUS.value_set(self._state.paymentStatus.value),
            ]
        )

    async def _finish(self) -> ExecutionView:
        await workflow.wait_condition(workflow.all_handlers_finished)
        return self.view()
