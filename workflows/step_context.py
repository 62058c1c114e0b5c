"""What a step's activity is sent, and how much the execution may hold.

Budgets (documented in the README):
- a step's output: at most ``STEP_OUTPUT_MAX_BYTES`` of JSON;
- the execution's context (request payload, metadata and every step output so far): at most
  ``CONTEXT_MAX_BYTES``, comfortably under Temporal's 2 MiB payload limit, so no activity
  input or result can ever be refused by Temporal and leave the execution stuck.
A step whose output would pass either budget fails with a reason that says so (and a paid
execution is refunded), before the output enters history.

Each activity gets only the parts of the context its expressions refer to: a step that does
not read the earlier steps' outputs is not sent them. The rule over-approximates (any field of
the right name anywhere counts), so it never drops something an expression could read.

Pure and deterministic: runs in workflow code.
"""

from __future__ import annotations

import json
import re
from typing import Any

import jmespath

from tollway.definitions import ExprRef, HttpStep, PythonStep, Step, TransformStep

STEP_OUTPUT_MAX_BYTES = 1024 * 1024
CONTEXT_MAX_BYTES = 3 * 512 * 1024  # 1.5 MiB
TEMPLATE = re.compile(r"\{\{\s*(.+?)\s*\}\}")


def size_of(value: Any) -> int:
    return len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode())


def expressions_of(step: Step) -> list[str]:
    if isinstance(step, TransformStep):
        return [step.expression]
    if isinstance(step, PythonStep):
        return [step.input] if step.input else []
    if isinstance(step, HttpStep):
        found = [step.body] if step.body else []
        values = [step.url, *step.headers.values()]
        for value in values:
            if isinstance(value, ExprRef):
                found.append(value.expr)
            elif isinstance(value, str):
                found.extend(TEMPLATE.findall(value))
        return found
    return []


def _references(node: dict[str, Any], fields: set[str], step_ids: set[str]) -> bool:
    """Collect field names; returns True when ``steps`` is used as a whole somewhere."""
    children = node.get("children") or []
    whole = False
    if (
        node.get("type") == "subexpression"
        and len(children) >= 2
        and children[0].get("type") == "field"
        and children[0].get("value") == "steps"
        and children[1].get("type") == "field"
    ):
        step_ids.add(str(children[1]["value"]))
        fields.add("steps")
        children = children[1:]
    elif node.get("type") == "field":
        fields.add(str(node.get("value")))
        whole = node.get("value") == "steps"
    for child in children:
        if isinstance(child, dict):
            whole = _references(child, fields, step_ids) or whole
    return whole


def needed_context(step: Step, context: dict[str, Any]) -> dict[str, Any]:
    """The part of ``context`` the step's expressions can read (``execution`` always)."""
    fields: set[str] = set()
    step_ids: set[str] = set()
    whole_steps = False
    for expression in expressions_of(step):
        tree: dict[str, Any] = jmespath.compile(expression).parsed  # type: ignore[assignment]
        whole_steps = _references(tree, fields, step_ids) or whole_steps
    trimmed = {k: v for k, v in context.items() if k in fields or k == "execution"}
    if "steps" in trimmed and not whole_steps:
        trimmed["steps"] = {k: v for k, v in context["steps"].items() if k in step_ids}
    return trimmed


def output_budget(context: dict[str, Any]) -> int:
    """How many bytes the next step's output may take."""
    return max(0, min(STEP_OUTPUT_MAX_BYTES, CONTEXT_MAX_BYTES - size_of(context)))
