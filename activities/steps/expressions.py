"""JMESPath evaluation with a budget: time, work and the size of what it builds.

An expression comes from a published definition and runs over a caller's payload, so one
must not be able to stall a worker or fill its memory. Evaluation runs in a worker thread
(never on the activity event loop, where it would block heartbeats and every other step),
through an interpreter that counts every node it visits and stops at a deadline; every
string or list it builds is capped, and the result's JSON size is measured without
serialising it (structures shared by reference are counted as often as JSON would repeat
them, so ``[@, @]`` nested thirty times is refused rather than expanded).

Failures are final (``ApplicationError``, non-retryable): the same expression over the same
context fails the same way.
"""

from __future__ import annotations

import json
import time
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import anyio.to_thread
import jmespath
from jmespath import functions
from jmespath.exceptions import JMESPathError
from jmespath.parser import ParsedResult
from jmespath.visitor import Options, TreeInterpreter

if TYPE_CHECKING:
    from jmespath.visitor import _TreeNode
from temporalio.exceptions import ApplicationError

TIME_LIMIT_SECONDS = 1.0
MAX_RESULT_BYTES = 1024 * 1024  # the budget of one step's output (see the README)
MAX_ITEMS = 100_000  # elements of any one list or object an expression builds


class ExpressionBudgetExceeded(Exception):
    """The expression ran too long or built too much."""


class _GuardedFunctions(functions.Functions):
    """The built-in functions whose single call could build far more than its inputs (a
    ``join`` of many long strings, ``to_string`` of a structure shared many times over) check
    the size first."""

    def __init__(self, max_chars: int) -> None:
        super().__init__()
        self._max_chars = max_chars

    @functions.signature({"types": ["string"]}, {"types": ["array-string"]})
    def _func_join(self, separator: str, array: list[str]) -> str:
        total = sum(map(len, array)) + len(separator) * max(0, len(array) - 1)
        if total > self._max_chars:
            raise ExpressionBudgetExceeded(f"built a string over {self._max_chars} characters")
        return separator.join(array)

    @functions.signature({"types": []})
    def _func_to_string(self, arg: Any) -> str:
        if isinstance(arg, str):
            return arg
        if json_size(arg, self._max_chars) > self._max_chars:
            raise ExpressionBudgetExceeded(f"built a string over {self._max_chars} characters")
        return json.dumps(arg, separators=(",", ":"), default=str)


class _BudgetInterpreter(TreeInterpreter):
    def __init__(self, deadline: float, max_chars: int) -> None:
        super().__init__(Options(custom_functions=_GuardedFunctions(max_chars)))
        self._deadline = deadline
        self._max_chars = max_chars
        self._visits = 0

    def visit(self, node: _TreeNode, *args: Any, **kwargs: Any) -> Any:
        self._visits += 1
        if self._visits % 128 == 0 and time.monotonic() > self._deadline:
            raise ExpressionBudgetExceeded(f"ran longer than {TIME_LIMIT_SECONDS:g} s")
        result = super().visit(node, *args, **kwargs)
        if isinstance(result, str) and len(result) > self._max_chars:
            raise ExpressionBudgetExceeded(f"built a string over {self._max_chars} characters")
        if isinstance(result, list | dict) and len(result) > MAX_ITEMS:
            raise ExpressionBudgetExceeded(f"built a collection of over {MAX_ITEMS} items")
        return result


def json_size(value: Any, limit: int) -> int:
    """The length of ``value`` as JSON, counted without building it; stops past ``limit``."""
    sizes: dict[int, int] = {}

    def size(item: Any) -> int:
        if isinstance(item, dict | list):
            known = sizes.get(id(item))
            if known is not None:
                return known
            total = 2
            children = item.items() if isinstance(item, dict) else ((None, v) for v in item)
            for key, child in children:
                total += size(child) + 1 + (len(json.dumps(key)) + 1 if key is not None else 0)
                if total > limit:
                    break
            sizes[id(item)] = total
            return total
        if isinstance(item, str):
            return len(item) + 2
        return len(json.dumps(item))

    return size(value)


@lru_cache(maxsize=1024)
def _compiled(expression: str) -> ParsedResult:
    return jmespath.compile(expression)


def evaluate(expression: str, context: dict[str, Any], limit: int = MAX_RESULT_BYTES) -> Any:
    """Evaluate now, in this thread, within the budget."""
    try:
        parsed = _compiled(expression)
        interpreter = _BudgetInterpreter(time.monotonic() + TIME_LIMIT_SECONDS, limit)
        result = interpreter.visit(parsed.parsed, context)
        if json_size(result, limit) > limit:
            raise ExpressionBudgetExceeded(f"built a result over {limit} bytes")
    except JMESPathError as exc:
        raise ApplicationError(
            f"transform error: {exc}", type="TransformError", non_retryable=True
        ) from None
    except ExpressionBudgetExceeded as exc:
        raise ApplicationError(
            f"expression stopped: it {exc}", type="ExpressionBudget", non_retryable=True
        ) from None
    except RecursionError:
        raise ApplicationError(
            "expression stopped: it nests too deeply", type="ExpressionBudget", non_retryable=True
        ) from None
    return result


async def evaluate_off_loop(
    expression: str, context: dict[str, Any], limit: int = MAX_RESULT_BYTES
) -> Any:
    """:func:`evaluate` in a worker thread, so the event loop keeps serving."""
    return await anyio.to_thread.run_sync(evaluate, expression, context, limit)
