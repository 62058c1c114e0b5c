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
import hmac
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from activities.callback_tokens import new_callback_tokens
    from activities.webhook_activities import WebhookActivities
    from tollway.definitions import WaitForCallbackStep
    from workflows.models import (
        AttachInput,
        AttachResult,
        CallbackAddress,
        CallbackInput,
        CallbackTokensRequest,
        CancelInput,
        EmitRequest,
        ExecutionInput,
        ExecutionView,
        PaymentEventResult,
        PaymentNotice,
        Status,
        WebhookEvent,
    )
    from workflows.policies import CALL_TIMEOUT, initial_state
    from workflows.refusals import Refusal
    from workflows.work_phase import WorkPhase


CALLBACK_TOKENS_PATCH = "callback-tokens-from-activity"
# Temporal cancellation runs Tollway's cancellation; failures fail the Temporal workflow.
OPERATOR_PATCH = "temporal-status-is-the-outcome"
OPERATOR = "an operator in Temporal"
EXECUTION_WORKFLOW = "TollwayExecution"  # the workflow type name in Temporal


@workflow.defn(name=EXECUTION_WORKFLOW)
class ExecutionWorkflow(WorkPhase):
    @workflow.init
    def __init__(self, inp: ExecutionInput) -> None:
        self._input = inp
        self._state = initial_state(inp, inp.created_at or workflow.now(), workflow.info().run_id)
        self._checkout_settled = inp.definition.price is None
        self._payment: PaymentNotice | None = None
        self._inbox: list[PaymentNotice] = []
        self._seen_events: set[str] = set()
        self._handled: set[str] = set()
        self._cancel: CancelInput | None = None
        self._outcomes: dict[str, str] = {}
        self._operator_cancelled = False
        self._callbacks: dict[str, CallbackAddress] = {}  # issued at the start of run
        self._slot_requested = False
        self._slot_granted = False
        self._callback_bodies: dict[str, Any] = {}
        self._closed_callbacks: set[str] = set()
        self._outbox: list[WebhookEvent] = []
        self._notifier: asyncio.Task[None] | None = None
        self._notices_closed = False

    # -- handlers ---------------------------------------------------------------------------

    @workflow.query
    def view(self) -> ExecutionView:
        return self._view()

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
                type=Refusal.IDEMPOTENCY_KEY_REUSED,
            )

    @workflow.update
    async def payment_event(self, notice: PaymentNotice) -> PaymentEventResult:
        """A verified provider event. An update, not a signal: the webhook learns that the
        execution took the event in (or gets an error and the provider retries), so a payment
        can never land in a workflow that is already closing and be lost."""
        if notice.event_id not in self._seen_events:  # membership only: deterministic
            self._seen_events.add(notice.event_id)
            self._inbox.append(notice)
        await workflow.wait_condition(lambda: notice.event_id in self._handled)
        return PaymentEventResult(
            outcome=self._outcomes.get(notice.event_id, "applied"), view=self.view()
        )

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
            raise ApplicationError("no such callback", type=Refusal.UNKNOWN_CALLBACK)
        if not hmac.compare_digest(expected.token.encode(), inp.token.encode()):
            raise ApplicationError("wrong callback token", type=Refusal.BAD_CALLBACK_TOKEN)
        if (
            inp.step_id in self._callback_bodies
            or inp.step_id in self._closed_callbacks
            or self._state.status.terminal
        ):
            raise ApplicationError(
                "this callback is no longer awaited", type=Refusal.CALLBACK_CLOSED
            )

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
                f"execution already ended: {self._state.status.value}",
                type=Refusal.ALREADY_TERMINAL,
            )

    # -- main -------------------------------------------------------------------------------

    async def _issue_callback_tokens(self) -> None:
        """Tokens for the ``wait_for_callback`` steps. Never from ``workflow.uuid4()``: it is
        seeded from the run id, which callers and payers can see, so anything derived from it
        can be recomputed by them. They come from an activity (the OS's CSPRNG)."""
        inp = self._input
        steps = [s.id for s in inp.definition.steps if isinstance(s, WaitForCallbackStep)]
        if not steps:
            return
        if workflow.patched(CALLBACK_TOKENS_PATCH):
            issued = await workflow.execute_local_activity(
                new_callback_tokens,
                CallbackTokensRequest(step_ids=steps),
                start_to_close_timeout=CALL_TIMEOUT,
            )
            tokens = issued.tokens
        else:  # histories recorded before the patch (replay only): their guessable tokens
            tokens = {step: f"cb_{workflow.uuid4().hex}{workflow.uuid4().hex}" for step in steps}
        base = inp.public_base_url.rstrip("/")
        self._callbacks = {
            step: CallbackAddress(
                url=f"{base}/v1/public/executions/{inp.execution_id}/callbacks/{step}",
                token=tokens[step],
            )
            for step in steps
        }

    @workflow.run
    async def run(self, inp: ExecutionInput) -> ExecutionView:
        # Inputs recorded before status webhooks have no ``notify``: nothing changes for them.
        self._notifying = inp.notify
        self._record()
        if self._notifying:
            self._notifier = asyncio.create_task(self._notify())
        if not workflow.patched(OPERATOR_PATCH):  # histories recorded before it (replay)
            await self._lifecycle()
            return self.view()
        lifecycle = asyncio.create_task(self._lifecycle())
        while True:
            try:
                await asyncio.shield(lifecycle)
                break
            except asyncio.CancelledError:
                if lifecycle.done():
                    if lifecycle.cancelled():
                        raise  # evicted from the worker's cache: every task was cancelled
                    break  # it had just ended on its own
                # A cancellation requested in Temporal (UI, CLI, handle.cancel()) cancels
                # only this task: it is a Tollway cancellation, and the lifecycle, still
                # running, expires the checkout, cancels the work and refunds, exactly as
                # POST .../cancel does.
                self._operator_cancelled = True
                if self._cancel is None:
                    self._cancel = CancelInput(by=OPERATOR)
        view = self.view()
        workflow.metric_meter().create_counter(
            "tollway_executions_ended", "Executions that reached a terminal status."
        ).add(1, {"status": view.status.value, "payment_status": view.paymentStatus.value})
        # Temporal's own status says how it ended: the UI's filters and Temporal's metrics
        # then count exactly Tollway's failures and the cancellations Temporal asked for.
        if self._operator_cancelled and self._cancel and self._cancel.by == OPERATOR:
            if view.status == Status.CANCELLED:
                raise asyncio.CancelledError(view.statusReason)
        if view.status == Status.FAILED:
            raise ApplicationError(
                view.statusReason or "the execution failed",
                view,
                type="ExecutionFailed",
                non_retryable=True,
            )
        return view

    async def _lifecycle(self) -> None:
        await self._live()
        if self._notifier is not None:  # every event emitted before the workflow closes
            self._notices_closed = True
            await self._notifier

    async def _notify(self) -> None:
        """Emit queued status events as they come (a local activity: no task round trip);
        the deliveries themselves are workflows of their own."""
        while True:
            await workflow.wait_condition(lambda: bool(self._outbox) or self._notices_closed)
            if not self._outbox:
                return
            batch, self._outbox = self._outbox, []
            try:
                await workflow.execute_local_activity_method(
                    WebhookActivities.emit,
                    EmitRequest(organization_id=self._input.organization_id, events=batch),
                    summary=f"status webhooks: {', '.join(e.type for e in batch)}",
                    start_to_close_timeout=CALL_TIMEOUT,
                    retry_policy=RetryPolicy(maximum_interval=timedelta(seconds=10)),
                )
            except ActivityError as err:  # the execution itself goes on regardless
                workflow.logger.warning("status webhooks not emitted: %s", err)

    async def _live(self) -> None:
        inp = self._input
        await self._issue_callback_tokens()
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
                return
