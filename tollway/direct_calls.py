"""The two calls on the hot paths, made on Temporal's workflow service directly instead of
through the SDK client's helpers, which do work here nobody reads (measured in
docs/bench.md, "Speed"):

- ``describe`` for a closed execution's view: the SDK decodes every search attribute of the
  execution twice (typed and untyped, ~17 JSON payloads each) to build a description the
  view reads four fields and one memo entry of: ~0.25 ms of CPU of the call's ~0.85.
- ``start`` for a free create: the SDK encodes the search attributes, the summary and the
  details afresh on every start; most of them are the same for every execution of a
  workflow, so they are encoded once and copied in (~0.25 ms of the start's ~1.15).

Both are counted like the SDK's calls (``tollway_temporal_calls``), and fail as the SDK's
do: an ``RPCError``, and ``WorkflowAlreadyStartedError`` for a start whose ID is taken. No
other client interceptor sees them: one that adds headers (tracing) would have to be applied
here too.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from temporalio.api.common.v1 import Payload, SearchAttributes, WorkflowExecution
from temporalio.api.errordetails.v1 import WorkflowExecutionAlreadyStartedFailure
from temporalio.api.sdk.v1 import UserMetadata
from temporalio.api.workflowservice.v1 import (
    DescribeWorkflowExecutionRequest,
    StartWorkflowExecutionRequest,
)
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.common import SearchAttributeKey, SearchAttributePair, WorkflowIDReusePolicy
from temporalio.converter import encode_typed_search_attribute_value
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from tollway.lru import Lru
from tollway.temporal_calls import counter_of


@dataclass(frozen=True)
class Described:
    """What a view needs of a description: how the run stands and its recorded memo."""

    status: WorkflowExecutionStatus | None
    run_id: str
    start_time: datetime
    close_time: datetime | None
    memo: Mapping[str, Payload]


@dataclass(frozen=True)
class StartShape:
    """What a start shares with every other start of the same workflow for the same caller
    and source: encoded once (see :class:`DirectCalls`)."""

    workflow_type: str
    task_queue: str
    task_timeout: timedelta
    id_reuse_policy: WorkflowIDReusePolicy
    search_attributes: tuple[SearchAttributePair[str], ...]
    summary: str
    details: str


class DirectCalls:
    def __init__(self, client: Client, shapes: int = 1000) -> None:
        self._client = client
        self._count = counter_of(client)
        self._templates: Lru[StartShape, StartWorkflowExecutionRequest] = Lru(shapes)

    async def describe(self, workflow_id: str) -> Described:
        self._count("describe_workflow")
        response = await self._client.workflow_service.describe_workflow_execution(
            DescribeWorkflowExecutionRequest(
                namespace=self._client.namespace,
                execution=WorkflowExecution(workflow_id=workflow_id),
            ),
            retry=True,
        )
        info = response.workflow_execution_info
        return Described(
            status=WorkflowExecutionStatus(info.status) if info.status else None,
            run_id=info.execution.run_id,
            start_time=info.start_time.ToDatetime(tzinfo=UTC),
            close_time=info.close_time.ToDatetime(tzinfo=UTC)
            if info.HasField("close_time")
            else None,
            memo=info.memo.fields,
        )

    async def start(
        self,
        shape: StartShape,
        workflow_id: str,
        args: Sequence[object],
        search_attributes: Sequence[SearchAttributePair[str]] = (),
    ) -> str:
        """Start the workflow; ``search_attributes`` are this start's own, beside the shape's.
        Answers the run ID."""
        request = StartWorkflowExecutionRequest()
        request.CopyFrom(await self.template(shape))
        request.workflow_id = workflow_id
        request.request_id = str(uuid.uuid4())
        request.input.payloads.extend(await self._client.data_converter.encode(args))
        _encode_attributes(search_attributes, request.search_attributes)
        self._count("start_workflow")
        try:
            response = await self._client.workflow_service.start_workflow_execution(
                request, retry=True
            )
        except RPCError as err:
            details = WorkflowExecutionAlreadyStartedFailure()
            if (
                err.status == RPCStatusCode.ALREADY_EXISTS
                and err.grpc_status.details
                and err.grpc_status.details[0].Unpack(details)
            ):
                raise WorkflowAlreadyStartedError(
                    workflow_id, shape.workflow_type, run_id=details.run_id
                ) from None
            raise
        return response.run_id

    async def template(self, shape: StartShape) -> StartWorkflowExecutionRequest:
        """The shared part of the shape's starts (kept; copy it before changing it)."""
        template = self._templates.get(shape)
        if template is not None:
            return template
        template = StartWorkflowExecutionRequest(
            namespace=self._client.namespace,
            identity=self._client.identity,
            workflow_id_reuse_policy=int(shape.id_reuse_policy),  # type: ignore[arg-type]
        )
        template.workflow_type.name = shape.workflow_type
        template.task_queue.name = shape.task_queue
        template.workflow_task_timeout.FromTimedelta(shape.task_timeout)
        _encode_attributes(shape.search_attributes, template.search_attributes)
        # Encrypted once and shared by the shape's starts: the same ciphertext for the same
        # text tells a reader of Temporal's database only that the texts are equal, which the
        # plain search attributes (organization, workflow, source) say already.
        summary, details = await self._client.data_converter.encode([shape.summary, shape.details])
        template.user_metadata.CopyFrom(UserMetadata(summary=summary, details=details))
        self._templates.put(shape, template)
        return template


def _encode_attributes(pairs: Sequence[SearchAttributePair[str]], into: SearchAttributes) -> None:
    for pair in pairs:
        key: SearchAttributeKey[str] = pair.key
        into.indexed_fields[key.name].CopyFrom(encode_typed_search_attribute_value(key, pair.value))
