"""``python``: call a function an operator registered on the worker by dotted path
(``TOLLWAY_PYTHON_ACTIVITIES=name=package.module:function``), with ``input`` evaluated over
the context. Its JSON-serialisable return value is the step's output. It runs inside the
step activity, so it gets the step's timeout and retry policy."""

from __future__ import annotations

import inspect
from typing import Any

import anyio.to_thread
from temporalio.exceptions import ApplicationError

from activities.steps import StepEnvironment, register
from activities.steps.expressions import evaluate_off_loop
from tollway.definitions import PythonStep


@register("python")
async def run_python(
    step: PythonStep, context: dict[str, Any], env: StepEnvironment, organization_id: str = ""
) -> Any:
    function = env.python.get(step.activity)
    if function is None:
        raise ApplicationError(
            f"no python activity {step.activity!r} is registered on the worker",
            type="UnknownActivity",
            non_retryable=True,
        )
    argument = await evaluate_off_loop(step.input, context) if step.input is not None else None
    if inspect.iscoroutinefunction(function):
        return await function(argument)
    return await anyio.to_thread.run_sync(function, argument)
