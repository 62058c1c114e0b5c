"""The activity that runs one step of a definition through the step-kind registry."""

from __future__ import annotations

from temporalio import activity

from activities.steps import load_builtin_kinds, runner_for
from workflows.models import StepRequest, StepResult


class StepActivities:
    def __init__(self) -> None:
        load_builtin_kinds()

    @activity.defn(name="steps.run")
    async def run_step(self, request: StepRequest) -> StepResult:
        runner = runner_for(request.step)
        return StepResult(output=await runner(request.step, request.context))
