"""The activity that runs one step of a definition through the step-kind registry."""

from __future__ import annotations

from temporalio import activity

from activities.steps import StepEnvironment, load_builtin_kinds, runner_for
from workflows.models import StepRequest, StepResult


class StepActivities:
    def __init__(self, env: StepEnvironment | None = None) -> None:
        load_builtin_kinds()
        self._env = env or StepEnvironment()

    @activity.defn(name="steps.run")
    async def run_step(self, request: StepRequest) -> StepResult:
        runner = runner_for(request.step)
        return StepResult(output=await runner(request.step, request.context, self._env))
