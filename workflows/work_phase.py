"""The work phase: a concurrency slot when the workflow is limited, then the steps."""

from __future__ import annotations

import asyncio
import builtins
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from activities.slot_activities import SlotActivities
    from activities.step_activities import StepActivities
    from tollway.definitions import DelayStep, Step, TransformStep, WaitForCallbackStep
    from workflows.models import (
        SlotRequest,
        Status,
        StepRequest,
    )
    from workflows.payment_phase import PaymentPhase
    from workflows.policies import LEDGER_TIMEOUT, MONEY_RETRY, failure_message
    from workflows.slot_ids import slots_id
    from workflows.step_context import needed_context, output_budget, size_of


STEP_HEARTBEAT_TIMEOUT = timedelta(seconds=5)


class StepFailed(Exception):
    """A step ended in failure inside workflow code (a timer or a wait, not an activity)."""


class WorkPhase(PaymentPhase):
    async def _run_work(self) -> None:
        if self._state.status != Status.QUEUED:
            self._set(status=Status.QUEUED)
        # No try/finally: a workflow evicted from the cache is closed outside its event loop.
        if await self._acquire_slot():
            await self._run_steps_until_cancelled()
        else:
            assert self._cancel is not None
            await self._refund_own(f"cancelled by {self._cancel.by}")
            self._end_cancelled("while queued")
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
            summary="ask for a concurrency slot",
            start_to_close_timeout=LEDGER_TIMEOUT,
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
            self._end_cancelled("while running")
            return
        if failure is None:
            return
        reason, client_reason = failure
        if self._input.definition.refundOnFailure:
            await self._refund_own(reason)
        self._end(Status.FAILED, reason, client_reason)

    async def _run_steps(self) -> tuple[str, str] | None:
        """Run every step; returns why it failed (for the organization, and in words safe
        for the payer), or None after recording success."""
        definition = self._input.definition
        definition_id = self._input.public_workflow_id
        request = self._input.request
        context: dict[str, Any] = {
            "request": request.requestPayload or {},
            "metadata": request.clientSafeMetadata or {},
            "steps": {},
            "callbacks": {k: v.model_dump() for k, v in self._callbacks.items()},
            # ``attempt`` is added by the activity: it is the attempt of each step's activity.
            "execution": {"id": self._input.execution_id, "workflowId": definition_id},
        }
        self._set(status=Status.RUNNING, startedAt=workflow.now())
        for step in definition.steps:
            self._current_step = step.id
            self._show_details()
            try:
                if step.when is not None and not await self._evaluate(step.when, context, step):
                    context["steps"][step.id] = None
                    continue
                context["steps"][step.id] = await self._execute(step, context)
            except ActivityError as err:
                return (
                    f"step '{step.id}' failed: {failure_message(err)}",
                    f"step '{step.id}' failed",
                )
            except StepFailed as err:
                return f"step '{step.id}' failed: {err}", f"step '{step.id}' failed"
        try:
            output = (
                await self._evaluate(definition.output, context)
                if definition.output is not None
                else context["steps"]
            )
        except ActivityError as err:
            return (
                f"output could not be built: {failure_message(err)}",
                "the output could not be built",
            )
        self._end(
            Status.SUCCEEDED,
            None,
            None,
            responsePayload=output if isinstance(output, dict) else {"value": output},
        )
        return None

    async def _execute(self, step: Step, context: dict[str, Any]) -> Any:
        if isinstance(step, DelayStep):  # a timer, not an activity
            await workflow.sleep(timedelta(seconds=step.seconds))
            return {"sleptSeconds": step.seconds}
        if isinstance(step, WaitForCallbackStep):
            return await self._wait_for_callback(step, context)
        result = await workflow.execute_activity_method(
            StepActivities.run_step,
            StepRequest(
                step=step,
                context=needed_context(step, context),
                organization_id=self._input.organization_id,
                output_budget=output_budget(context),
            ),
            summary=f"step {step.id} ({step.kind})",
            start_to_close_timeout=timedelta(seconds=step.timeout),
            # A worker that dies mid-step is noticed in seconds (the activity heartbeats).
            heartbeat_timeout=STEP_HEARTBEAT_TIMEOUT,
            retry_policy=RetryPolicy(
                maximum_attempts=step.retry.maxAttempts,
                initial_interval=timedelta(seconds=step.retry.initialIntervalSeconds),
                backoff_coefficient=step.retry.backoff,
                non_retryable_error_types=step.retry.nonRetryableErrors or None,
            ),
        )
        return result.output

    async def _wait_for_callback(self, step: WaitForCallbackStep, context: dict[str, Any]) -> Any:
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
        body = self._callback_bodies[step.id]
        budget = output_budget(context)
        if size_of(body) > budget:
            raise StepFailed(f"callback body exceeds the {budget} bytes left in the budget")
        return body

    async def _evaluate(
        self, expression: str, context: dict[str, Any], of: Step | None = None
    ) -> Any:
        step = TransformStep(
            id=f"{of.id}_when" if of else "output", kind="transform", expression=expression
        )
        return await self._execute(step, context)
