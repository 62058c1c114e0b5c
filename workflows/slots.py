"""Per-workflow concurrency limits (``maxConcurrency``) as a FIFO semaphore workflow.

Why this shape: Temporal has no global, per-key concurrency limit (task-queue limits apply per
worker, not per published workflow), so we use its documented mutex pattern — one long-lived
workflow per published workflow (ID ``tollway-slots-<workflow id>``) that owns the slots:

- an execution asks for a slot with signal-with-start (``acquire``), waits for
  ``slot_granted`` showing ``workflow_queued``, and gives the slot back (``release``) when it
  ends, however it ends;
- requests are granted strictly in arrival order;
- a holder that ended without releasing (terminated, crashed past its retries) is found by a
  periodic check while anyone waits, and its slot is freed;
- the history stays bounded by continuing as new.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from pydantic import BaseModel

    from activities.slot_activities import SlotActivities
    from workflows.models import SlotRequest
    from workflows.slot_ids import slots_id  # noqa: F401 - re-exported for callers


class SlotState(BaseModel):
    limit: int = 1
    holders: list[str] = []
    queue: list[str] = []


LIVENESS_CHECK = timedelta(seconds=3)  # only while someone waits


@workflow.defn(name="TollwaySlots")
class SlotsWorkflow:
    @workflow.init
    def __init__(self, state: SlotState) -> None:
        self._state = state
        self._dirty = True

    @workflow.signal
    def acquire(self, request: SlotRequest) -> None:
        self._state.limit = request.limit
        if request.execution_id not in self._state.holders + self._state.queue:
            self._state.queue.append(request.execution_id)
        self._dirty = True

    @workflow.signal
    def release(self, request: SlotRequest) -> None:
        for bucket in (self._state.holders, self._state.queue):
            if request.execution_id in bucket:
                bucket.remove(request.execution_id)
        self._dirty = True

    @workflow.query
    def state(self) -> SlotState:
        return self._state

    @workflow.run
    async def run(self, state: SlotState) -> None:
        while True:
            await self._grant()
            if workflow.info().is_continue_as_new_suggested():
                await workflow.wait_condition(workflow.all_handlers_finished)
                workflow.continue_as_new(self._state)
            waiting = bool(self._state.queue)
            try:
                await workflow.wait_condition(
                    lambda: self._dirty, timeout=LIVENESS_CHECK if waiting else None
                )
            except TimeoutError:
                await self._drop_ended_holders()

    async def _grant(self) -> None:
        self._dirty = False
        while self._state.queue and len(self._state.holders) < self._state.limit:
            execution_id = self._state.queue.pop(0)
            try:
                await workflow.get_external_workflow_handle(execution_id).signal("slot_granted")
            except Exception:  # noqa: BLE001 - it ended while queued: next in line gets the slot
                continue
            self._state.holders.append(execution_id)

    async def _drop_ended_holders(self) -> None:
        if not self._state.holders:
            return
        ended = await workflow.execute_activity_method(
            SlotActivities.ended,
            list(self._state.holders),
            start_to_close_timeout=timedelta(seconds=30),
        )
        for execution_id in ended:
            if execution_id in self._state.holders:
                self._state.holders.remove(execution_id)
        self._dirty = True
