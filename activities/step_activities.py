"""The activity that runs one step of a definition through the step-kind registry.

It heartbeats while the step runs, so a worker that dies mid-step is noticed within the
heartbeat timeout (seconds), not at the end of the step's start-to-close timeout; the retry
then runs on another worker. Side effects that a retry repeats are made safe by the step's
``Idempotency-Key`` (``http``) and by ``execution.attempt`` in the expression context.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.steps import StepEnvironment, load_builtin_kinds, runner_for
from activities.steps.expressions import json_size
from workflows.models import StepRequest, StepResult
from workflows.step_context import CONTEXT_MAX_BYTES, STEP_OUTPUT_MAX_BYTES

HEARTBEAT_EVERY = timedelta(seconds=1)


async def _heartbeat_until_cancelled() -> None:
    while True:
        activity.heartbeat()
        await asyncio.sleep(HEARTBEAT_EVERY.total_seconds())


class StepActivities:
    def __init__(self, env: StepEnvironment | None = None) -> None:
        load_builtin_kinds()
        self._env = env or StepEnvironment()

    @activity.defn(name="steps.run")
    async def run_step(self, request: StepRequest) -> StepResult:
        runner = runner_for(request.step)
        identity: dict[str, Any] = dict(request.context.get("execution") or {})
        identity["attempt"] = activity.info().attempt
        context = {**request.context, "execution": identity}
        beating = asyncio.create_task(_heartbeat_until_cancelled())
        try:
            output = await runner(request.step, context, self._env, request.organization_id)
        except Exception as err:
            activity.metric_meter().create_counter(
                "tollway_step_failures", "Failed step attempts, by step kind and error type."
            ).add(1, {"kind": request.step.kind, "error": getattr(err, "type", None) or "error"})
            raise
        finally:
            beating.cancel()
        budget = request.output_budget
        if budget is not None and json_size(output, budget) > budget:
            # Refused here, before it enters history: Temporal would refuse a payload over its
            # limit and leave the execution stuck.
            raise ApplicationError(
                f"its output is over the {budget} bytes left in the execution's budget "
                f"(a step may return {STEP_OUTPUT_MAX_BYTES}, an execution hold "
                f"{CONTEXT_MAX_BYTES} in all)",
                type="OutputBudget",
                non_retryable=True,
            )
        return StepResult(output=output)
