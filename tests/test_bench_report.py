"""What `make bench` prints of a run's rounds, from made-up rounds (no stack is started)."""

from __future__ import annotations

import subprocess
import sys
from types import SimpleNamespace
from typing import cast

import pytest

from bench.run import Stack, idle_cost, idle_cost_line, round_ratios


def test_each_rounds_ratio_in_order_and_their_range() -> None:
    rounds = {
        "raw": [(200.0, [0.1]), (100.0, [0.1]), (250.0, [0.1])],
        "http": [(190.0, [0.1]), (110.0, [0.1]), (200.0, [0.1])],
    }
    assert round_ratios(rounds, "http", "raw") == "per round 0.95 1.10 0.80 (range 0.80-1.10)"
    assert round_ratios(rounds, "raw", "http") == "per round 1.05 0.91 1.25 (range 0.91-1.25)"


def test_sides_with_different_round_counts_are_refused() -> None:
    with pytest.raises(ValueError):
        round_ratios({"raw": [(1.0, []), (2.0, [])], "http": [(1.0, [])]}, "http", "raw")


async def test_the_idle_line_says_not_measured_without_schedstat() -> None:
    """A process with no /proc/<pid>/schedstat (here: no such process) is not measured, and
    nothing is sent to it."""
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    stack = cast(Stack, SimpleNamespace(api=SimpleNamespace(pid=gone.pid), caller=None))
    cost = await idle_cost(stack)
    assert cost is None
    assert idle_cost_line(cost) == (
        "waking from idle on this machine: not measured (no /proc/<pid>/schedstat)"
    )
