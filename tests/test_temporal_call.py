"""``temporal_call``: how a Temporal call's failure becomes the service's answer. The deadline
and the statuses are exercised end to end elsewhere (a create with no worker answers 503 in
test_worker_outage); here every branch, with the SDK's own exception types."""

from __future__ import annotations

import asyncio

import pytest
from temporalio.client import RPCTimeoutOrCancelledError
from temporalio.service import RPCError, RPCStatusCode

from tollway.executions import (
    ExecutionNotRunning,
    QueryRejected,
    TemporalUnavailable,
    temporal_call,
)


def _rpc(status: RPCStatusCode) -> RPCError:
    return RPCError(f"status {status.name}", status, b"")


async def test_a_call_that_answers_in_time_passes_through() -> None:
    async with temporal_call(5.0):
        await asyncio.sleep(0)
    # and the deadline it armed does not fire later
    await asyncio.sleep(0.05)


async def test_a_passed_deadline_is_temporal_unavailable() -> None:
    with pytest.raises(TemporalUnavailable) as caught:
        async with temporal_call(0.01):
            await asyncio.sleep(1)
    assert caught.value.__suppress_context__


@pytest.mark.parametrize(
    ("raised", "expected"),
    [
        (TimeoutError(), TemporalUnavailable),
        (RPCTimeoutOrCancelledError(), TemporalUnavailable),
        (_rpc(RPCStatusCode.UNAVAILABLE), TemporalUnavailable),
        (_rpc(RPCStatusCode.DEADLINE_EXCEEDED), TemporalUnavailable),
        (_rpc(RPCStatusCode.CANCELLED), TemporalUnavailable),
        (_rpc(RPCStatusCode.NOT_FOUND), ExecutionNotRunning),
        (_rpc(RPCStatusCode.INVALID_ARGUMENT), QueryRejected),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, BaseException) else v.__name__,
)
async def test_failures_are_mapped_by_type_and_status(
    raised: BaseException, expected: type[Exception]
) -> None:
    with pytest.raises(expected) as caught:
        async with temporal_call(5.0):
            raise raised
    assert type(caught.value) is expected
    if expected is QueryRejected:
        assert str(caught.value) == "status INVALID_ARGUMENT"


@pytest.mark.parametrize(
    "raised",
    [_rpc(RPCStatusCode.PERMISSION_DENIED), _rpc(RPCStatusCode.INTERNAL), ValueError("bug")],
    ids=["PERMISSION_DENIED", "INTERNAL", "ValueError"],
)
async def test_anything_else_is_a_real_fault_and_propagates_unchanged(
    raised: BaseException,
) -> None:
    with pytest.raises(type(raised)) as caught:
        async with temporal_call(5.0):
            raise raised
    assert caught.value is raised


async def test_the_callers_own_cancellation_is_not_an_outage() -> None:
    """A request whose client went away is cancelled: that must stay a cancellation, not turn
    into a 503 for nobody (nor into TimeoutError) while the deadline has not passed."""
    started = asyncio.Event()

    async def call() -> None:
        async with temporal_call(5.0):
            started.set()
            await asyncio.sleep(10)

    task = asyncio.create_task(call())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
