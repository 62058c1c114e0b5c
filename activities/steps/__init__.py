"""The step-kind registry: one module per kind, each registering a runner for its model.

A runner takes the validated step and the execution context and returns the step's JSON
output. Runners raise ``temporalio.exceptions.ApplicationError`` with ``non_retryable=True``
for errors a retry cannot fix.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from tollway.definitions import StepBase

StepRunner = Callable[[Any, dict[str, Any]], Awaitable[Any]]

_RUNNERS: dict[str, StepRunner] = {}


def register(kind: str) -> Callable[[StepRunner], StepRunner]:
    def decorator(runner: StepRunner) -> StepRunner:
        if kind in _RUNNERS:
            raise RuntimeError(f"step kind {kind!r} registered twice")
        _RUNNERS[kind] = runner
        return runner

    return decorator


def runner_for(step: StepBase) -> StepRunner:
    kind = getattr(step, "kind", None)
    try:
        return _RUNNERS[str(kind)]
    except KeyError:
        raise LookupError(f"no runner registered for step kind {kind!r}") from None


def registered_kinds() -> frozenset[str]:
    return frozenset(_RUNNERS)


def load_builtin_kinds() -> None:
    """Import the built-in kinds so they register themselves."""
    from activities.steps import transform  # noqa: F401
