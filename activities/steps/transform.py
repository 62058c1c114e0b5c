"""``transform``: evaluate a JMESPath expression over the execution context."""

from __future__ import annotations

from typing import Any

import jmespath
from jmespath.exceptions import JMESPathError
from temporalio.exceptions import ApplicationError

from activities.steps import StepEnvironment, register
from tollway.definitions import TransformStep


def evaluate(expression: str, context: dict[str, Any]) -> Any:
    try:
        return jmespath.search(expression, context)
    except JMESPathError as exc:
        # Deterministic: the same expression over the same context fails the same way.
        raise ApplicationError(
            f"transform error: {exc}", type="TransformError", non_retryable=True
        ) from None


@register("transform")
async def run_transform(step: TransformStep, context: dict[str, Any], env: StepEnvironment) -> Any:
    return evaluate(step.expression, context)
