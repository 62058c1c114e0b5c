"""The workflow definition format (see CONTRACT "Workflow definitions").

A definition is validated once, when an operator stores a version; the validated model is
copied into each execution's input, so an execution keeps the version it started with.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import jmespath
from jmespath.exceptions import JMESPathError
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    model_validator,
)


def _compiles(expression: str) -> str:
    try:
        jmespath.compile(expression)
    except JMESPathError as exc:
        raise ValueError(f"invalid JMESPath expression: {exc}") from exc
    return expression


Expression = Annotated[str, Field(min_length=1, max_length=10_000), AfterValidator(_compiles)]
StepId = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Price(_Model):
    amount: int = Field(gt=0, le=99_999_999, description="Amount in minor units (cents).")
    currency: Annotated[str, Field(pattern=r"^[a-z]{3}$")]


class RetryPolicy(_Model):
    maxAttempts: int = Field(default=3, ge=1, le=100)
    initialIntervalSeconds: float = Field(default=1.0, gt=0, le=3600)
    backoff: float = Field(default=2.0, ge=1.0, le=10.0)
    nonRetryableErrors: list[str] = Field(
        default_factory=list,
        description="Error types that end the step at once, e.g. HTTPStatus or Timeout.",
    )


class StepBase(_Model):
    id: StepId
    when: Expression | None = None
    timeout: float = Field(default=60.0, gt=0, le=24 * 3600, description="Seconds per attempt.")
    retry: RetryPolicy = RetryPolicy()


class TransformStep(StepBase):
    kind: Literal["transform"]
    expression: Expression


class ExprRef(_Model):
    expr: Expression


class SecretRef(_Model):
    """The name of a secret of the workflow's organization (``tollway admin secret set``);
    its value never enters history."""

    secret: Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")]


def _value_kind(value: Any) -> str:
    """The tag of a header/URL value, from raw input (validation) or a model (serialization)."""
    if isinstance(value, SecretRef) or (isinstance(value, dict) and "secret" in value):
        return "secret-ref"
    if isinstance(value, ExprRef | dict):
        return "expr-ref"
    return "text"


# Tagged unions, so a bad value gets one error about what it was meant to be.
UrlValue = Annotated[
    Annotated[Annotated[str, Field(min_length=1, max_length=4000)], Tag("text")]
    | Annotated[ExprRef, Tag("expr-ref")],
    Discriminator(_value_kind),
]
HeaderValue = Annotated[
    Annotated[Annotated[str, Field(max_length=8000)], Tag("text")]
    | Annotated[ExprRef, Tag("expr-ref")]
    | Annotated[SecretRef, Tag("secret-ref")],
    Discriminator(_value_kind),
]
VALUE_TAGS = frozenset({"text", "expr-ref", "secret-ref"})


class HttpStep(StepBase):
    kind: Literal["http"]
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"] = "GET"
    url: UrlValue = Field(description="A URL (with optional {{ expression }} parts) or {expr}.")
    headers: dict[str, HeaderValue] = Field(default_factory=dict)
    body: Expression | None = None
    timeoutSeconds: float = Field(default=10.0, gt=0, le=300)
    maxResponseBytes: int = Field(default=1024 * 1024, gt=0, le=10 * 1024 * 1024)


class WaitForCallbackStep(StepBase):
    kind: Literal["wait_for_callback"]
    timeoutSeconds: float = Field(default=24 * 3600, gt=0, le=30 * 24 * 3600)


class PythonStep(StepBase):
    kind: Literal["python"]
    activity: Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_.]{0,127}$")]
    input: Expression | None = None


class DelayStep(StepBase):
    """A durable Temporal timer: survives worker restarts, costs nothing while it waits."""

    kind: Literal["delay"]
    seconds: float = Field(gt=0, le=365 * 24 * 3600)


Step = Annotated[
    TransformStep | HttpStep | DelayStep | WaitForCallbackStep | PythonStep,
    Field(discriminator="kind"),
]
STEP_KINDS = frozenset({"transform", "http", "delay", "wait_for_callback", "python"})


class WorkflowDefinition(_Model):
    name: str = Field(min_length=1, max_length=200)
    access: Literal["public_execute", "private"] = "private"
    enabled: bool = True
    price: Price | None = None
    paymentTimeoutSeconds: int = Field(default=1800, ge=1, le=7 * 24 * 3600)
    refundOnFailure: bool = True
    maxConcurrency: int | None = Field(default=None, ge=1, le=10_000)
    steps: list[Step] = Field(min_length=1, max_length=100)
    output: Expression | None = None

    @model_validator(mode="after")
    def _unique_step_ids(self) -> WorkflowDefinition:
        seen: set[str] = set()
        for step in self.steps:
            if step.id in seen:
                raise ValueError(f"duplicate step id {step.id!r}")
            seen.add(step.id)
        return self


class DefinitionError(ValueError):
    """A definition failed validation; ``errors`` are ``(path, message)`` pairs."""

    def __init__(self, errors: list[tuple[str, str]]) -> None:
        self.errors = errors
        super().__init__("; ".join(f"{path}: {message}" for path, message in errors))


def error_path(loc: tuple[int | str, ...]) -> str:
    """``("steps", 0, "transform", "expression")`` -> ``steps[0].expression``."""
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif part in STEP_KINDS | VALUE_TAGS:
            continue  # a union tag pydantic inserts, not a field
        else:
            path += f".{part}" if path else str(part)
    return path or "(root)"


def parse_definition(document: Any) -> WorkflowDefinition:
    try:
        return WorkflowDefinition.model_validate(document)
    except ValidationError as exc:
        raise DefinitionError(
            [(error_path(tuple(e["loc"])), e["msg"]) for e in exc.errors()]
        ) from exc
