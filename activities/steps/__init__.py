"""The step-kind registry: one module per kind, each registering a runner for its model.

A runner takes the validated step, the execution context, the worker's environment and the
workflow's organization id, and returns the step's JSON output. Runners raise
``temporalio.exceptions.ApplicationError`` with ``non_retryable=True`` for errors a retry
cannot fix.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx

from tollway.definitions import StepBase
from tollway.org_secrets import ResolvedSecret


class SecretResolver(Protocol):
    def resolve(self, organization_id: str, name: str) -> ResolvedSecret | None: ...


@dataclass(frozen=True)
class StepEnvironment:
    """What runners may use besides the step and the context: built once by the worker."""

    http: httpx.AsyncClient | None = None
    secrets: SecretResolver | None = None
    python: Mapping[str, Callable[[Any], Any]] = field(default_factory=dict)


StepRunner = Callable[[Any, dict[str, Any], StepEnvironment, str], Awaitable[Any]]

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


def load_builtin_kinds() -> None:
    """Import the built-in kinds so they register themselves."""
    from activities.steps import http, python_step, transform  # noqa: F401


def load_python_functions(spec: str) -> dict[str, Callable[[Any], Any]]:
    """``name=package.module:function,...`` -> callables, imported once at worker start."""
    import importlib

    functions: dict[str, Callable[[Any], Any]] = {}
    for entry in filter(None, (e.strip() for e in spec.split(","))):
        name, _, target = entry.partition("=")
        module_name, _, attr = target.partition(":")
        if not (name and module_name and attr):
            raise ValueError(
                f"TOLLWAY_PYTHON_ACTIVITIES entry {entry!r} must be name=module:function"
            )
        function = getattr(importlib.import_module(module_name), attr)
        if not callable(function):
            raise ValueError(f"{target} is not callable")
        functions[name.strip()] = function
    return functions
