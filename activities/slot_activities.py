"""Activities behind the concurrency-slot workflow: asking for a slot (signal-with-start)
and finding holders that ended without giving theirs back."""

from __future__ import annotations

from temporalio import activity
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.service import RPCError, RPCStatusCode

from workflows.models import SlotRequest
from workflows.policies import WORKFLOW_TASK_TIMEOUT


class SlotActivities:
    def __init__(self, client: Client, task_queue: str) -> None:
        self._client = client
        self._task_queue = task_queue

    @activity.defn(name="slots.request")
    async def request(self, request: SlotRequest) -> None:
        from workflows.slot_ids import slots_id
        from workflows.slots import SlotState, SlotsWorkflow

        await self._client.start_workflow(
            SlotsWorkflow.run,
            SlotState(limit=request.limit),
            id=slots_id(request.public_workflow_id),
            task_timeout=WORKFLOW_TASK_TIMEOUT,
            task_queue=self._task_queue,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            start_signal="acquire",
            start_signal_args=[request],
        )

    @activity.defn(name="slots.ended")
    async def ended(self, execution_ids: list[str]) -> list[str]:
        gone: list[str] = []
        for execution_id in execution_ids:
            try:
                desc = await self._client.get_workflow_handle(execution_id).describe()
            except RPCError as err:
                if err.status == RPCStatusCode.NOT_FOUND:
                    gone.append(execution_id)
                    continue
                raise
            if desc.status != WorkflowExecutionStatus.RUNNING:
                gone.append(execution_id)
        return gone
