"""``transform``: evaluate a JMESPath expression over the execution context (within the
budget of :mod:`activities.steps.expressions`)."""

from __future__ import annotations

from typing import Any

from activities.steps import StepEnvironment, register
from activities.steps.expressions import evaluate, evaluate_off_loop
from tollway.definitions import TransformStep

__all__ = ["evaluate", "run_transform"]


@register("transform")
async def run_transform(
    step: TransformStep, context: dict[str, Any], env: StepEnvironment, organization_id: str = ""
) -> Any:
    return await evaluate_off_loop(step.expression, context)
