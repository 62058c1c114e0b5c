"""Functions the test worker registers for ``python`` steps."""

from __future__ import annotations

from typing import Any


def double(value: Any) -> dict[str, Any]:
    return {"doubled": value * 2}


async def explode(value: Any) -> None:
    raise ValueError(f"cannot handle {value!r}")
