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

from activities.steps import StepEnvironment, load_builtin_kinds, runner_for
from workflows.models import StepRequest, StepResult

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
            return StepResult(
                output=await runner(request.step, context, self._env, request.organization_id)
            )
        finally:
            beating.cancel()
