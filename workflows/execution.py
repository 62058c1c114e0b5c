"""The execution workflow: take payment (when priced), then run the definition's steps.

Money rules, enforced here (see CONTRACT "Lifecycle" and "Payments"):
- no step runs before a payment of the order's exact amount and currency is confirmed;
- one payment is kept per execution: a duplicate, mismatched or late payment is refunded;
- a paid execution ends succeeded, or refunded (failure unless ``refundOnFailure`` is false,
  cancellation always).

Deterministic by construction: time from ``workflow.now()``, every side effect in an activity,
and all state a handler needs is set in ``@workflow.init`` (the create update is delivered in
the same task as the start, before ``run`` has begun).
"""

from __future__ import annotations

import asyncio
import builtins
import hmac
from datetime import datetime, timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError, TimeoutError

with workflow.unsafe.imports_passed_through():
    from activities.payments import PaymentActivities
    from activities.slot_activities import SlotActivities
    from activities.step_activities import StepActivities
    from tollway.definitions import DelayStep, Step, TransformStep, WaitForCallbackStep
    from workflows import search_attributes as sa
    from workflows.models import (
        AttachInput,
        AttachResult,
        CallbackAddress,
        CallbackInput,
        CancelInput,
        CheckoutRequest,
        CloseCheckoutRequest,
        ConfirmPaymentRequest,
        ExecutionInput,
        ExecutionState,
        ExecutionView,
        PaymentEventKind,
        PaymentNotice,
        PaymentStatus,
        RefundRequest,
        SlotRequest,
        Status,
        StepRequest,
    )
    from workflows.slot_ids import slots_id

CALL_TIMEOUT = timedelta(seconds=30)
CHECKOUT_RETRY = RetryPolicy(maximum_attempts=5, initial_interval=timedelta(seconds=1))
# Money must move eventually: refunds and ledger writes retry until they succeed, visible to
# operators in the Temporal UI as a retrying activity if a provider keeps refusing.
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


class StepFailed(Exception):
    """A step ended in failure inside workflow code (a timer or a wait, not an activity)."""


@workflow.defn(name="TollwayExecution")
class ExecutionWorkflow:
    @workflow.init
    def __init__(self, inp: ExecutionInput) -> None:
        self._input = inp
        self._state = initial_state(inp, workflow.now(), workflow.info().run_id)
        self._checkout_settled = inp.definition.price is None
        self._payment: PaymentNotice | None = None
        self._inbox: list[PaymentNotice] = []
        self._seen_events: set[str] = set()
        self._handled: set[str] = set()
        self._cancel: CancelInput | None = None
        # Callback tokens come from the workflow's deterministic randomness: the same on replay.
        base = inp.public_base_url.rstrip("/")
        self._callbacks = {
            step.id: CallbackAddress(
                url=f"{base}/v1/public/executions/{inp.execution_id}/callbacks/{step.id}",
                token=f"cb_{workflow.uuid4().hex}{workflow.uuid4().hex}",
            )
            for step in inp.definition.steps
            if isinstance(step, WaitForCallbackStep)
        }
        self._slot_requested = False
        self._slot_granted = False
        self._callback_bodies: dict[str, Any] = {}
        self._closed_callbacks: set[str] = set()

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

    @workflow.update
    async def payment_event(self, notice: PaymentNotice) -> ExecutionView:
        """A verified provider event. An update, not a signal: the webhook learns that the
        execution took the event in (or gets an error and the provider retries), so a payment
        can never land in a workflow that is already closing and be lost."""
        if notice.event_id not in self._seen_events:  # membership only: deterministic
            self._seen_events.add(notice.event_id)
            self._inbox.append(notice)
        await workflow.wait_condition(lambda: notice.event_id in self._handled)
        return self.view()

    @workflow.signal
    def slot_granted(self) -> None:
        self._slot_granted = True

    @workflow.update
    def callback(self, inp: CallbackInput) -> ExecutionView:
        self._callback_bodies[inp.step_id] = inp.body
        return self.view()

    @callback.validator
    def _validate_callback(self, inp: CallbackInput) -> None:
        expected = self._callbacks.get(inp.step_id)
        if expected is None:
            raise ApplicationError("no such callback", type="UnknownCallback")
        if not hmac.compare_digest(expected.token.encode(), inp.token.encode()):
            raise ApplicationError("wrong callback token", type="BadCallbackToken")
        if (
            inp.step_id in self._callback_bodies
            or inp.step_id in self._closed_callbacks
            or self._state.status.terminal
        ):
            raise ApplicationError("this callback is no longer awaited", type="CallbackClosed")

    @workflow.update
    async def cancel(self, inp: CancelInput) -> ExecutionView:
        if self._cancel is None:
            self._cancel = inp
        await workflow.wait_condition(lambda: self._state.status.terminal)
        return self.view()

    @cancel.validator
    def _validate_cancel(self, inp: CancelInput) -> None:
        if self._state.status.terminal:
            raise ApplicationError(
                f"execution already ended: {self._state.status.value}", type="AlreadyTerminal"
            )

    # -- main -------------------------------------------------------------------------------

    @workflow.run
    async def run(self, inp: ExecutionInput) -> ExecutionView:
        self._record()
        try:
            if inp.definition.price is None or await self._collect_payment():
                await self._run_work()
        finally:
            self._checkout_settled = True
        # Payments that arrive while the execution ends are refunded before it closes.
        while True:
            await self._drain_inbox()
            await workflow.wait_condition(
                lambda: bool(self._inbox) or workflow.all_handlers_finished()
            )
            if not self._inbox:
                return self.view()

    # -- payment ----------------------------------------------------------------------------

    async def _collect_payment(self) -> bool:
        price = self._input.definition.price
        assert price is not None
        deadline = workflow.now() + timedelta(seconds=self._input.definition.paymentTimeoutSeconds)
        try:
            checkout = await workflow.execute_activity_method(
                PaymentActivities.open_checkout,
                CheckoutRequest(
                    execution_id=self._input.execution_id,
                    organization_id=self._input.organization_id,
                    public_workflow_id=self._input.public_workflow_id,
                    workflow_version=self._input.workflow_version,
                    workflow_name=self._input.definition.name,
                    price=price,
                    expires_at=deadline,
                ),
                start_to_close_timeout=CALL_TIMEOUT,
                retry_policy=CHECKOUT_RETRY,
            )
        except ActivityError as err:
            self._end(
                Status.FAILED,
                f"checkout could not be created: {failure_message(err)}",
                paymentStatus=PaymentStatus.CANCELLED,
            )
            return False
        self._set(
            orderId=checkout.order_id,
            checkoutSessionId=checkout.checkout_session_id,
            checkoutUrl=checkout.checkout_url,
        )
        self._checkout_settled = True

        while self._payment is None and not self._state.status.terminal:
            remaining = deadline - workflow.now()
            if remaining <= timedelta(0):
                await self._close_checkout("expired")
                self._end(Status.CANCELLED, "payment_expired", paymentStatus=PaymentStatus.EXPIRED)
                return False
            try:
                await workflow.wait_condition(
                    lambda: bool(self._inbox) or self._cancel is not None, timeout=remaining
                )
            except builtins.TimeoutError:
                continue
            if self._cancel is not None:
                await self._close_checkout("cancelled")
                self._end(
                    Status.CANCELLED,
                    f"cancelled by {self._cancel.by} before payment",
                    paymentStatus=PaymentStatus.CANCELLED,
                )
                return False
            await self._drain_inbox()
        if self._payment is None:
            return False

        payment = self._payment
        assert payment.payment_reference and payment.amount is not None and payment.currency
        await workflow.execute_activity_method(
            PaymentActivities.confirm_payment,
            ConfirmPaymentRequest(
                execution_id=self._input.execution_id,
                provider=payment.provider,
                payment_reference=payment.payment_reference,
                amount=payment.amount,
                currency=payment.currency,
            ),
            start_to_close_timeout=CALL_TIMEOUT,
            retry_policy=MONEY_RETRY,
        )
        self._set(
            status=Status.PAYMENT_CONFIRMED, paymentStatus=PaymentStatus.PAID, statusReason=None
        )
        return True

    async def _drain_inbox(self) -> None:
        while self._inbox:
            notice = self._inbox[0]
            await self._handle(notice)
            self._inbox.pop(0)
            self._handled.add(notice.event_id)

    async def _handle(self, notice: PaymentNotice) -> None:
        awaiting = self._state.status == Status.AWAITING_PAYMENT
        if notice.kind == PaymentEventKind.PAID:
            await self._on_paid(notice)
        elif notice.kind == PaymentEventKind.PROCESSING and awaiting:
            self._set(statusReason="payment processing")
        elif notice.kind == PaymentEventKind.FAILED and awaiting:
            await workflow.execute_activity_method(
                PaymentActivities.record_failed_attempt,
                self._input.execution_id,
                start_to_close_timeout=CALL_TIMEOUT,
                retry_policy=MONEY_RETRY,
            )
            self._set(
                paymentStatus=PaymentStatus.FAILED,
                statusReason="payment failed; the checkout is still open",
            )
        elif notice.kind == PaymentEventKind.EXPIRED and awaiting:
            await self._close_checkout("expired")
            self._end(Status.CANCELLED, "payment_expired", paymentStatus=PaymentStatus.EXPIRED)
        elif notice.kind == PaymentEventKind.REFUNDED and self._is_own(notice):
            self._set(paymentStatus=PaymentStatus.REFUNDED)

    def _is_own(self, notice: PaymentNotice) -> bool:
        return (
            self._payment is not None
            and notice.payment_reference == self._payment.payment_reference
        )

    async def _on_paid(self, notice: PaymentNotice) -> None:
        if not notice.payment_reference or self._is_own(notice):
            return  # another event about the payment we already hold
        price = self._input.definition.price
        if self._payment is None and self._state.status == Status.AWAITING_PAYMENT:
            assert price is not None
            currency = (notice.currency or "").lower()
            if (notice.amount, currency) == (price.amount, price.currency):
                self._payment = notice
                return
            await self._refund(notice, "amount or currency does not match the order")
            await self._close_checkout("cancelled")
            self._end(
                Status.FAILED,
                f"payment of {notice.amount} {currency} does not match the order "
                f"({price.amount} {price.currency}); nothing was run and it was refunded",
                paymentStatus=PaymentStatus.REFUNDED,
            )
            return
        reason = (
            "duplicate payment"
            if self._payment is not None
            else f"payment after the execution ended ({self._state.status.value})"
        )
        await self._refund(notice, reason)

    async def _refund(self, notice: PaymentNotice, reason: str) -> None:
        assert notice.payment_reference
        await workflow.execute_activity_method(
            PaymentActivities.refund_payment,
            RefundRequest(
                execution_id=self._input.execution_id,
                provider=notice.provider,
                payment_reference=notice.payment_reference,
                amount=notice.amount or 0,
                currency=(notice.currency or "").lower(),
                reason=reason,
            ),
            start_to_close_timeout=CALL_TIMEOUT,
            retry_policy=MONEY_RETRY,
        )

    async def _refund_own(self, reason: str) -> None:
        if self._payment is not None and self._state.paymentStatus == PaymentStatus.PAID:
            await self._refund(self._payment, reason)
            self._set(paymentStatus=PaymentStatus.REFUNDED)

    async def _close_checkout(self, outcome: str) -> None:
        session_id = self._state.checkoutSessionId
        if session_id is None:
            return
        await workflow.execute_activity_method(
            PaymentActivities.close_checkout,
            CloseCheckoutRequest(
                execution_id=self._input.execution_id,
                checkout_session_id=session_id,
                outcome=outcome,
            ),
            start_to_close_timeout=CALL_TIMEOUT,
            retry_policy=MONEY_RETRY,
        )

    # -- work -------------------------------------------------------------------------------

    async def _run_work(self) -> None:
        if self._state.status != Status.QUEUED:
            self._set(status=Status.QUEUED)
        # No try/finally: a workflow evicted from the cache is closed outside its event loop.
        if await self._acquire_slot():
            await self._run_steps_until_cancelled()
        else:
            assert self._cancel is not None
            await self._refund_own(f"cancelled by {self._cancel.by}")
            self._end(Status.CANCELLED, f"cancelled by {self._cancel.by} while queued")
        await self._release_slot()

    def _slot_request(self) -> SlotRequest:
        limit = self._input.definition.maxConcurrency or 0
        return SlotRequest(
            public_workflow_id=self._input.public_workflow_id,
            execution_id=self._input.execution_id,
            limit=limit,
        )

    async def _acquire_slot(self) -> bool:
        """Wait, queued, for one of the workflow's ``maxConcurrency`` slots (FIFO); False
        when cancelled first."""
        if self._cancel is not None:
            return False
        if self._input.definition.maxConcurrency is None:
            return True
        self._slot_requested = True
        await workflow.execute_activity_method(
            SlotActivities.request,
            self._slot_request(),
            start_to_close_timeout=CALL_TIMEOUT,
            retry_policy=MONEY_RETRY,
        )
        while not (self._slot_granted or self._cancel is not None):
            await workflow.wait_condition(
                lambda: self._slot_granted or self._cancel is not None or bool(self._inbox)
            )
            await self._drain_inbox()
        return self._slot_granted and self._cancel is None

    async def _release_slot(self) -> None:
        if self._slot_requested:
            self._slot_requested = False
            try:
                await workflow.get_external_workflow_handle(
                    slots_id(self._input.public_workflow_id)
                ).signal("release", self._slot_request())
            except Exception:  # noqa: BLE001 - the slot keeper's liveness check frees it anyway
                workflow.logger.warning("could not release the concurrency slot")

    async def _run_steps_until_cancelled(self) -> None:
        work = asyncio.create_task(self._run_steps())
        while not work.done():
            await workflow.wait_condition(
                lambda: work.done() or self._cancel is not None or bool(self._inbox)
            )
            await self._drain_inbox()  # duplicate payments are refunded while work runs
            if self._cancel is not None and not work.done():
                work.cancel()
                break
        try:
            failure = await work
        except asyncio.CancelledError:
            assert self._cancel is not None
            await self._refund_own(f"cancelled by {self._cancel.by}")
            self._end(Status.CANCELLED, f"cancelled by {self._cancel.by} while running")
            return
        if failure is None:
            return
        if self._input.definition.refundOnFailure:
            await self._refund_own(failure)
        self._end(Status.FAILED, failure)

    async def _run_steps(self) -> str | None:
        """Run every step; returns why it failed, or None after recording success."""
        definition = self._input.definition
        request = self._input.request
        context: dict[str, Any] = {
            "request": request.requestPayload or {},
            "metadata": request.clientSafeMetadata or {},
            "steps": {},
            "callbacks": {k: v.model_dump() for k, v in self._callbacks.items()},
        }
        self._set(status=Status.RUNNING, startedAt=workflow.now())
        for step in definition.steps:
            try:
                if step.when is not None and not await self._evaluate(step.when, context, step):
                    context["steps"][step.id] = None
                    continue
                context["steps"][step.id] = await self._execute(step, context)
            except ActivityError as err:
                return f"step '{step.id}' failed: {failure_message(err)}"
            except StepFailed as err:
                return f"step '{step.id}' failed: {err}"
        try:
            output = (
                await self._evaluate(definition.output, context)
                if definition.output is not None
                else context["steps"]
            )
        except ActivityError as err:
            return f"output could not be built: {failure_message(err)}"
        self._end(
            Status.SUCCEEDED,
            None,
            responsePayload=output if isinstance(output, dict) else {"value": output},
        )
        return None

    async def _execute(self, step: Step, context: dict[str, Any]) -> Any:
        if isinstance(step, DelayStep):  # a timer, not an activity
            await workflow.sleep(timedelta(seconds=step.seconds))
            return {"sleptSeconds": step.seconds}
        if isinstance(step, WaitForCallbackStep):
            return await self._wait_for_callback(step)
        result = await workflow.execute_activity_method(
            StepActivities.run_step,
            StepRequest(step=step, context=context),
            start_to_close_timeout=timedelta(seconds=step.timeout),
            retry_policy=RetryPolicy(
                maximum_attempts=step.retry.maxAttempts,
                initial_interval=timedelta(seconds=step.retry.initialIntervalSeconds),
                backoff_coefficient=step.retry.backoff,
                non_retryable_error_types=step.retry.nonRetryableErrors or None,
            ),
        )
        return result.output

    async def _wait_for_callback(self, step: WaitForCallbackStep) -> Any:
        self._set(status=Status.WAITING, callbacks={step.id: self._callbacks[step.id]})
        try:
            await workflow.wait_condition(
                lambda: step.id in self._callback_bodies,
                timeout=timedelta(seconds=step.timeoutSeconds),
            )
            received = True
        except builtins.TimeoutError:
            received = False
        # Not in a finally: on cache eviction the coroutine is closed outside the workflow.
        self._closed_callbacks.add(step.id)
        self._set(status=Status.RUNNING, callbacks=None)
        if not received:
            raise StepFailed(f"no callback within {step.timeoutSeconds:g} s")
        return self._callback_bodies[step.id]

    async def _evaluate(
        self, expression: str, context: dict[str, Any], of: Step | None = None
    ) -> Any:
        step = TransformStep(
            id=f"{of.id}_when" if of else "output", kind="transform", expression=expression
        )
        return await self._execute(step, context)

    # -- state ------------------------------------------------------------------------------

    def _end(self, status: Status, reason: str | None, **changes: Any) -> None:
        self._set(status=status, statusReason=reason, finishedAt=workflow.now(), **changes)

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
