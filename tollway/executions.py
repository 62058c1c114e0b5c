"""The execution service: everything the API and the operator CLI ask of Temporal, in domain
terms.

Handlers call :meth:`ExecutionService.create` and :meth:`ExecutionService.view`; Temporal
failures are mapped here, by type and status code, to the small set of domain errors below.
"""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any

import anyio.to_thread
from pydantic import BaseModel
from temporalio.api.enums.v1 import EventType
from temporalio.client import (
    Client,
    RPCTimeoutOrCancelledError,
    WithStartWorkflowOperation,
    WorkflowExecution,
    WorkflowExecutionStatus,
    WorkflowHandle,
    WorkflowHistoryEventFilterType,
    WorkflowQueryFailedError,
    WorkflowQueryRejectedError,
    WorkflowUpdateFailedError,
)
from temporalio.common import (
    QueryRejectCondition,
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDConflictPolicy,
    WorkflowIDReusePolicy,
)
from temporalio.exceptions import ApplicationError, WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from tollway.admin import WorkflowRecord
from tollway.direct_calls import Described, DirectCalls, StartShape
from tollway.ids import execution_id
from tollway.ledger import OrderLedger, Settlement
from tollway.lru import Lru
from tollway.newest_first import Position, newest_page
from tollway.outage import DATABASE_DOWN
from tollway.temporal import TemporalUnreachable
from tollway.visibility_query import quoted, quoted_instant, rfc3339
from workflows import search_attributes as sa
from workflows.execution import EXECUTION_WORKFLOW, ExecutionWorkflow
from workflows.models import (
    AttachInput,
    AttachResult,
    CallbackInput,
    CancelInput,
    ExecutionInput,
    ExecutionRequest,
    ExecutionState,
    ExecutionView,
    PaymentStatus,
    Status,
    settled,
    settlement_note,
    with_note,
)
from workflows.policies import WORKFLOW_TASK_TIMEOUT, initial_state, initial_statuses
from workflows.refusals import Refusal


class ExecutionSummary(BaseModel):
    """One item of the list: what visibility and the memo hold, without payloads."""

    id: str
    workflowId: str
    status: Status
    paymentStatus: PaymentStatus
    statusReason: str | None
    sourceSystem: str | None
    externalRef: str | None
    runId: str
    createdAt: datetime
    updatedAt: datetime
    finishedAt: datetime | None


class ServiceError(Exception):
    """The root of what the service answers instead of a result. ``api.errors`` maps each
    kind to its HTTP answer in one table; handlers only add advice where they know better."""


class IdempotencyKeyReused(ServiceError):
    """The key was used before with a different request."""


class TemporalUnavailable(ServiceError, TemporalUnreachable):
    """Temporal or the worker did not answer within the request deadline. ``advice`` tells
    the caller what to do (the handler knows: retry the cancel, reuse the key...)."""

    def __init__(self, advice: str | None = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(advice or "Temporal did not answer in time")
        self.advice = advice
        self.headers = headers or {}

    def advise(self, advice: str, headers: dict[str, str] | None = None) -> TemporalUnavailable:
        return TemporalUnavailable(advice, headers)


class CallbackRefused(ServiceError):
    """The workflow refused a callback; ``reason`` is the validator's error type."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class AlreadyTerminal(ServiceError):
    """The execution had already ended; ``view`` is its state."""

    def __init__(self, view: ExecutionView) -> None:
        super().__init__(view.status.value)
        self.view = view


@dataclass(frozen=True)
class CreateCommand:
    organization_id: str
    initiated_by_id: str
    workflow: WorkflowRecord
    request: ExecutionRequest
    fingerprint: str
    notify: bool = False  # emit status webhook events (the organization has endpoints)


@dataclass(frozen=True)
class CreateOutcome:
    view: ExecutionView
    replayed: bool


_UNAVAILABLE = {RPCStatusCode.UNAVAILABLE, RPCStatusCode.DEADLINE_EXCEEDED, RPCStatusCode.CANCELLED}
# How a closed workflow whose recorded state is not terminal really ended (terminate and a
# timeout run no workflow code, so only Temporal knows).
_ABNORMAL_END = {
    WorkflowExecutionStatus.TERMINATED: (Status.CANCELLED, "terminated by an operator in Temporal"),
    WorkflowExecutionStatus.CANCELED: (Status.CANCELLED, "cancelled by an operator in Temporal"),
    WorkflowExecutionStatus.TIMED_OUT: (Status.FAILED, "timed out in Temporal"),
    WorkflowExecutionStatus.FAILED: (Status.FAILED, "failed unexpectedly in Temporal"),
}


def _refused(err: WorkflowUpdateFailedError, refusal: Refusal) -> bool:
    return isinstance(err.cause, ApplicationError) and err.cause.type == refusal


_SETTLED_PAYMENT = frozenset({PaymentStatus.REFUNDED, PaymentStatus.NOT_REQUIRED})


def _may_settle_later(view: ExecutionView) -> bool:
    return (
        view.status.terminal
        and view.orderId is not None
        and view.paymentStatus not in _SETTLED_PAYMENT
    )


def _settle(view: ExecutionView, found: Settlement | None) -> ExecutionView:
    if found is None:
        return view
    return settled(view, found.order_refunded, found.late_refunds)


class QueryRejected(ServiceError):
    """Temporal answered INVALID_ARGUMENT to a value that came from the caller (``field``:
    where that value was)."""

    def __init__(self, message: str, field: str = "path") -> None:
        super().__init__(message)
        self.field = field


class ExecutionNotRunning(Exception):
    """Temporal answered NOT_FOUND: the execution is closed, or was never started."""


class _TemporalCall:
    """Run Temporal calls under the request deadline, mapping failures by type and status:
    timeouts and an unreachable server -> :class:`TemporalUnavailable`, NOT_FOUND ->
    :class:`ExecutionNotRunning`; anything else is a real fault and propagates.

    A class rather than an ``@asynccontextmanager``: it sits on every create and webhook,
    and the latter's generator machinery cost 15–25 µs more CPU per call on this machine when
    the loop wakes cold (docs/bench.md, eleventh pass)."""

    __slots__ = ("_timeout",)

    def __init__(self, deadline: float) -> None:
        self._timeout = asyncio.timeout(deadline)

    async def __aenter__(self) -> None:
        await self._timeout.__aenter__()

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            # Turns the cancellation of a deadline that passed into TimeoutError.
            await self._timeout.__aexit__(kind, exc, tb)
        except TimeoutError:
            raise TemporalUnavailable from None
        if exc is None:
            return
        if isinstance(exc, TimeoutError | RPCTimeoutOrCancelledError):
            raise TemporalUnavailable from None
        if isinstance(exc, RPCError):
            if exc.status in _UNAVAILABLE:
                raise TemporalUnavailable from None
            if exc.status == RPCStatusCode.NOT_FOUND:
                raise ExecutionNotRunning from None
            if exc.status == RPCStatusCode.INVALID_ARGUMENT:
                raise QueryRejected(exc.message) from None


def temporal_call(deadline: float) -> _TemporalCall:
    """``async with temporal_call(deadline):`` around one or more Temporal calls."""
    return _TemporalCall(deadline)


def _static_details(cmd: CreateCommand) -> str:
    """What an operator sees in the Temporal UI: ids and money, no personal data."""
    price = cmd.workflow.definition.price
    cost = f"{price.amount} {price.currency} (minor units)" if price else "free"
    return (
        f"**Workflow** {cmd.workflow.definition.name} ({cmd.workflow.id}, "
        f"version {cmd.workflow.version})\n"
        f"**Caller** organization {cmd.organization_id}, token {cmd.initiated_by_id}\n"
        f"**Price** {cost}"
    )


@dataclass(frozen=True)
class StartPlan:
    """What a create starts: the workflow's input, the part of the start it shares with
    every start of the same workflow for the same caller and source, and its own search
    attributes."""

    input: ExecutionInput
    shape: StartShape
    own: list[SearchAttributePair[str]]

    def options(self) -> dict[str, Any]:
        """The SDK's start options for it (a priced start goes through update-with-start)."""
        shape = self.shape
        return {
            "id": self.input.execution_id,
            "task_timeout": shape.task_timeout,
            "task_queue": shape.task_queue,
            "id_reuse_policy": shape.id_reuse_policy,
            "search_attributes": TypedSearchAttributes([*shape.search_attributes, *self.own]),
            "static_summary": shape.summary,
            "static_details": shape.details,
        }


def plan_start(
    cmd: CreateCommand, task_queue: str, public_base_url: str, created_at: datetime
) -> StartPlan:
    """The start a create makes, free or priced; the bench's raw side starts the same."""
    eid = execution_id(cmd.organization_id, cmd.workflow.id, cmd.request.idempotencyKey)
    inp = ExecutionInput(
        execution_id=eid,
        organization_id=cmd.organization_id,
        initiated_by_id=cmd.initiated_by_id,
        initiated_by_type="api_token",
        public_workflow_id=cmd.workflow.id,
        workflow_version=cmd.workflow.version,
        definition=cmd.workflow.definition,
        request=cmd.request,
        fingerprint=cmd.fingerprint,
        public_base_url=public_base_url,
        notify=cmd.notify,
        created_at=created_at,
    )
    status, payment_status = initial_statuses(inp)
    # Shared by the workflow's executions for this caller and source (encoded once for a
    # free start), then this execution's own.
    shared = (
        SearchAttributePair(sa.ORGANIZATION_ID, cmd.organization_id),
        SearchAttributePair(sa.PUBLIC_WORKFLOW_ID, cmd.workflow.id),
        SearchAttributePair(sa.SOURCE_SYSTEM, cmd.request.sourceSystem),
        SearchAttributePair(sa.STATUS, status.value),
        SearchAttributePair(sa.PAYMENT_STATUS, payment_status.value),
        SearchAttributePair(sa.SOURCE_ENTITY_TYPE, cmd.request.sourceEntityType),
    )
    own = [
        SearchAttributePair(key, value)
        for key, value in (
            (sa.EXTERNAL_REF, cmd.request.externalRef),
            (sa.SOURCE_ENTITY_ID, cmd.request.sourceEntityId),
        )
        if value is not None
    ]
    # How the workflow is started, whichever way: the same for a free and a priced one.
    shape = StartShape(
        workflow_type=EXECUTION_WORKFLOW,
        task_queue=task_queue,
        task_timeout=WORKFLOW_TASK_TIMEOUT,
        id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
        search_attributes=shared,
        summary=f"{cmd.workflow.definition.name} for {cmd.request.sourceSystem}",
        details=_static_details(cmd),
    )
    return StartPlan(inp, shape, own)


def _retrieve_start_failure(start: WithStartWorkflowOperation[Any, Any]) -> None:
    """The SDK also stores a failed start on the operation's future; read it, so asyncio does
    not log "Future exception was never retrieved" for an error we already handle."""
    future = getattr(start, "_workflow_handle", None)
    if isinstance(future, asyncio.Future) and future.done() and not future.cancelled():
        future.exception()


class _Open:
    """The records' answer for a running execution, when asked to tell it apart."""


_OPEN = _Open()

_ClosedKey = tuple[str, WorkflowExecutionStatus | None, datetime | None, bytes]
_CACHED_STATE_BYTES = 16 * 1024  # a larger recorded state is decoded on every view


def _closed_key(desc: Described) -> _ClosedKey | None:
    """What a closed execution's view is built from, beside its start input (which never
    changes): the run (a reset starts a new one), how and when it ended, and the state it
    recorded (by digest). None when the recorded state is too large to keep a view of."""
    payload = desc.memo.get("state")
    if payload is not None and len(payload.data) > _CACHED_STATE_BYTES:
        return None
    digest = hashlib.sha256(payload.data).digest() if payload is not None else b""
    return (desc.run_id, desc.status, desc.close_time, digest)


class ExecutionService:
    def __init__(
        self,
        client: Client,
        task_queue: str,
        request_deadline: float,
        query_timeout: float,
        public_base_url: str = "",
        ledger: OrderLedger | None = None,
    ) -> None:
        self._public_base_url = public_base_url
        self._ledger = ledger
        # What never changes, remembered so that a closed execution's view is one describe:
        # its start input, and that it has closed (a reset reopens it: describe says so).
        self._inputs: Lru[str, ExecutionInput] = Lru(1000)
        self._closed: Lru[str, bool] = Lru(10_000)
        # A closed execution's view with the records it was built from (see _closed_key):
        # the next describe that shows the same records answers without decoding them again.
        self._closed_views: Lru[str, tuple[_ClosedKey, ExecutionView]] = Lru(1000)
        self._client = client
        self._direct = DirectCalls(client)
        self._task_queue = task_queue
        self._deadline = request_deadline
        self._query_timeout = timedelta(seconds=query_timeout)

    @property
    def client(self) -> Client:
        return self._client

    # -- create -----------------------------------------------------------------------------

    async def create(self, cmd: CreateCommand) -> CreateOutcome:
        plan = plan_start(cmd, self._task_queue, self._public_base_url, datetime.now(UTC))
        inp, shape, own, eid = plan.input, plan.shape, plan.own, plan.input.execution_id
        definition = cmd.workflow.definition
        # A free execution answers from its input after one start. Not one with a concurrency
        # limit: its create waits until its workflow asked for a slot, so that the queue's
        # order is the order of the creates.
        if definition.price is None and definition.maxConcurrency is None:
            return await self._start_free(inp, shape, own, cmd.fingerprint)
        options = plan.options()
        start = WithStartWorkflowOperation(
            ExecutionWorkflow.run,
            inp,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            **options,
        )
        nonce = uuid.uuid4().hex
        # One update ID per request fingerprint: the server deduplicates replays by it, so
        # they never add to the workflow's history.
        update_id = f"create-{cmd.fingerprint[:40]}"
        try:
            result = await self._attach(
                start, AttachInput(fingerprint=cmd.fingerprint, nonce=nonce), update_id
            )
        except BaseException as err:
            _retrieve_start_failure(start)
            if isinstance(err, WorkflowAlreadyStartedError):
                # Closed execution whose update outcome is no longer stored: compare directly.
                return await self._replay_closed(eid, cmd.fingerprint)
            raise
        if result.nonce == nonce:
            view = result.view
            if view.createdAt == inp.created_at and view.initiatedById == inp.initiated_by_id:
                # Started with this input (not a concurrent create's): kept, so that its
                # first view once closed is one describe.
                self._inputs.put(eid, inp)
            return CreateOutcome(view, replayed=False)
        # The stored outcome of an earlier create: answer with the current state instead.
        current = await self.view(eid)
        return CreateOutcome(current or result.view, replayed=True)

    async def _start_free(
        self,
        inp: ExecutionInput,
        shape: StartShape,
        own: list[SearchAttributePair[str]],
        fingerprint: str,
    ) -> CreateOutcome:
        """A free execution needs nothing from its workflow to answer (no checkout to wait
        for): one start, the view built from the input, as the workflow's first state will be.
        The same key again finds it started: answered from the records, after comparing the
        request with the one it was started with (kept here, or read from its start event)."""
        try:
            async with temporal_call(self._deadline):
                run_id = await self._direct.start(shape, inp.execution_id, [inp], own)
        except WorkflowAlreadyStartedError:
            return await self._replay_closed(inp.execution_id, fingerprint)
        self._inputs.put(inp.execution_id, inp)
        assert inp.created_at is not None
        state = initial_state(inp, inp.created_at, run_id)
        return CreateOutcome(ExecutionView.build(inp, state), replayed=False)

    async def _attach(
        self,
        start: WithStartWorkflowOperation[ExecutionWorkflow, ExecutionView],
        attach: AttachInput,
        update_id: str,
    ) -> AttachResult:
        try:
            async with temporal_call(self._deadline):
                return await self._client.execute_update_with_start_workflow(
                    ExecutionWorkflow.attach, attach, start_workflow_operation=start, id=update_id
                )
        except WorkflowUpdateFailedError as err:
            if _refused(err, Refusal.IDEMPOTENCY_KEY_REUSED):
                raise IdempotencyKeyReused from None
            raise

    async def _replay_closed(self, eid: str, fingerprint: str) -> CreateOutcome:
        current = await self.view(eid)
        if current is None:
            raise TemporalUnavailable
        started = await self._start_input(self._handle(eid))
        if started.fingerprint != fingerprint:
            raise IdempotencyKeyReused
        return CreateOutcome(current, replayed=True)

    # -- callbacks --------------------------------------------------------------------------

    async def callback(self, eid: str, step_id: str, token: str, body: Any) -> ExecutionView:
        """Deliver a ``wait_for_callback`` step's result. A wrong token is rejected by the
        workflow's validator and leaves no trace in history."""
        handle = self._handle(eid)
        try:
            async with temporal_call(self._deadline):
                return await handle.execute_update(
                    ExecutionWorkflow.callback,
                    CallbackInput(step_id=step_id, token=token, body=body),
                )
        except WorkflowUpdateFailedError as err:
            cause = err.cause
            if isinstance(cause, ApplicationError) and cause.type:
                raise CallbackRefused(cause.type) from None
            raise
        except ExecutionNotRunning:
            raise CallbackRefused(Refusal.CALLBACK_CLOSED) from None

    # -- cancel -----------------------------------------------------------------------------

    async def cancel(self, eid: str, by: str) -> ExecutionView:
        """Cancel an execution; a repeated cancel returns the state the first one produced.

        Raises :class:`AlreadyTerminal` when it had ended some other way first."""
        handle = self._handle(eid)
        view: ExecutionView | None = None
        try:
            async with temporal_call(self._deadline):
                # One update id per execution: a repeated cancel is deduplicated by Temporal.
                view = await handle.execute_update(
                    ExecutionWorkflow.cancel, CancelInput(by=by), id="cancel"
                )
        except WorkflowUpdateFailedError as err:
            if not _refused(err, Refusal.ALREADY_TERMINAL):
                raise
        except ExecutionNotRunning:
            pass  # closed before the cancel: its records say how it ended
        if view is None:
            view = await self.view(eid)
            assert view is not None
        if view.status != Status.CANCELLED or view.cancelledBy is None:
            raise AlreadyTerminal(view)
        return view

    # -- list -------------------------------------------------------------------------------

    async def list_executions(
        self,
        organization_id: str,
        workflow_id: str,
        filters: dict[str, str],
        limit: int,
        cursor: bytes | None,
        created_after: datetime | None = None,
        created_before: datetime | None = None,
    ) -> tuple[list[dict[str, Any]], bytes | None]:
        """A page of the caller's executions of one workflow, newest (created) first, from
        visibility (see :mod:`tollway.newest_first` for how, without ``ORDER BY``).

        ``filters`` maps list parameters (``sa.FILTERS``) to the values their search
        attributes must have; the created-at range is Temporal's ``StartTime``; ``cursor`` is
        what an earlier page returned (:class:`QueryRejected` on ``cursor`` otherwise)."""
        try:
            after = Position.decode(cursor) if cursor is not None else None
        except ValueError:
            raise QueryRejected(
                "is not a page position of this release: list again from the first page", "cursor"
            ) from None
        conditions = [
            "WorkflowType = 'TollwayExecution'",
            f"{sa.ORGANIZATION_ID.name} = {quoted(organization_id)}",
            f"{sa.PUBLIC_WORKFLOW_ID.name} = {quoted(workflow_id)}",
        ]
        conditions += [f"{sa.FILTERS[k].name} = {quoted(v)}" for k, v in sorted(filters.items())]
        if created_after is not None:
            conditions.append(f"StartTime >= {quoted_instant(created_after)}")
        if created_before is not None:
            conditions.append(f"StartTime < {quoted_instant(created_before)}")
        async with temporal_call(self._deadline):
            page = await newest_page(self._client, " AND ".join(conditions), limit, after)
        items = [await self._summary(execution, workflow_id) for execution in page.rows]
        await self._settle_items(items)
        return items, page.after.encode() if page.after else None

    @staticmethod
    async def _summary(execution: WorkflowExecution, workflow_id: str) -> dict[str, Any]:
        state = await execution.memo_value("state", None, type_hint=ExecutionState)
        attrs = execution.typed_search_attributes
        summary = ExecutionSummary(
            id=execution.id,
            workflowId=workflow_id,
            status=state.status if state else attrs.get(sa.STATUS),
            paymentStatus=state.paymentStatus if state else attrs.get(sa.PAYMENT_STATUS),
            statusReason=state.statusReason if state else None,
            sourceSystem=attrs.get(sa.SOURCE_SYSTEM),
            externalRef=attrs.get(sa.EXTERNAL_REF),
            runId=execution.run_id,
            createdAt=execution.start_time,
            updatedAt=state.updatedAt if state else execution.start_time,
            finishedAt=state.finishedAt if state else None,
        )
        return summary.model_dump(mode="json")

    async def _settle_items(self, items: list[dict[str, Any]]) -> None:
        """The list agrees with the view: the same ledger settlement for closed executions."""
        if self._ledger is None:
            return
        ids = [i["id"] for i in items if i["paymentStatus"] not in _SETTLED_PAYMENT]
        try:
            found = await anyio.to_thread.run_sync(self._ledger.settlements, ids)
        except DATABASE_DOWN:
            return
        for item in items:
            settlement = found.get(item["id"])
            if settlement is None:
                continue
            note = settlement_note(
                Status(item["status"]),
                PaymentStatus(item["paymentStatus"]),
                settlement.order_refunded,
                settlement.late_refunds,
            )
            if note is not None:
                item["paymentStatus"] = PaymentStatus.REFUNDED.value
                item["statusReason"] = with_note(item["statusReason"], note)

    async def list_for_operator(
        self, workflow_id: str, status: str | None, limit: int
    ) -> list[dict[str, Any]]:
        """Executions of one published workflow, every organization's (operators only)."""
        query = (
            f"WorkflowType = 'TollwayExecution' "
            f"AND {sa.PUBLIC_WORKFLOW_ID.name} = {quoted(workflow_id)}"
        )
        if status:
            query += f" AND {sa.STATUS.name} = {quoted(status)}"
        rows: list[dict[str, Any]] = []
        async with temporal_call(self._deadline):
            async for execution in self._client.list_workflows(query, limit=limit):
                attrs = execution.typed_search_attributes
                rows.append(
                    {
                        "id": execution.id,
                        "organizationId": attrs.get(sa.ORGANIZATION_ID),
                        "status": attrs.get(sa.STATUS),
                        "paymentStatus": attrs.get(sa.PAYMENT_STATUS),
                        "temporalStatus": execution.status.name if execution.status else None,
                        "createdAt": rfc3339(execution.start_time),
                    }
                )
        return rows

    # -- view -------------------------------------------------------------------------------

    def _handle(self, eid: str) -> WorkflowHandle[ExecutionWorkflow, ExecutionView]:
        return self._client.get_workflow_handle_for(ExecutionWorkflow.run, eid)

    async def view(self, eid: str) -> ExecutionView | None:
        """The live view (a query), else the state the workflow recorded on itself; for a
        closed execution, completed with what the ledger learnt after it closed."""
        view = await self._workflow_view(eid)
        if view is None:
            return None
        try:
            return await self._settled(view)
        except DATABASE_DOWN:
            return view  # what the workflow recorded; the ledger's addition comes back later

    async def refunded_after_close(self, eid: str) -> ExecutionView | None:
        """The view of a closed execution whose payment the ledger learnt was refunded after
        its workflow recorded its last state (a refund at the provider, a late payment given
        back): no workflow announced that refund. None for any other execution."""
        view = await self._workflow_view(eid)
        if view is None or view.paymentStatus == PaymentStatus.REFUNDED:
            return None  # none, or refunded by its workflow (which announced it)
        settled_view = await self._settled(view)
        return settled_view if settled_view.paymentStatus == PaymentStatus.REFUNDED else None

    async def _settled(self, view: ExecutionView) -> ExecutionView:
        """``view`` completed with the ledger's settlement, for a closed execution whose money
        may have moved since (raises while the database is down)."""
        if not _may_settle_later(view) or self._ledger is None:
            return view
        found = await anyio.to_thread.run_sync(self._ledger.settlements, [view.id])
        return _settle(view, found.get(view.id))

    async def _workflow_view(self, eid: str) -> ExecutionView | None:
        if self._closed.get(eid):
            known = await self._recorded(eid, unless_open=True)
            if not isinstance(known, _Open):
                return known
            self._closed.pop(eid)
        handle = self._handle(eid)
        try:
            # Open executions only: a closed one is read from Temporal's records, which know
            # how it ended (a query would replay a terminated one to its last live state).
            return await handle.query(
                ExecutionWorkflow.view,
                rpc_timeout=self._query_timeout,
                reject_condition=QueryRejectCondition.NOT_OPEN,
            )
        except RPCError as err:
            if err.status in {RPCStatusCode.NOT_FOUND, RPCStatusCode.INVALID_ARGUMENT}:
                return None  # no such execution (an id Temporal cannot even take is none)
            if err.status not in _UNAVAILABLE and err.status != RPCStatusCode.FAILED_PRECONDITION:
                raise
        except (WorkflowQueryFailedError, WorkflowQueryRejectedError, RPCTimeoutOrCancelledError):
            pass
        return await self.recorded_view(eid)

    async def recorded_view(self, eid: str) -> ExecutionView | None:
        """The view from Temporal's own records (describe, and the start input once): no
        worker needed."""
        found = await self._recorded(eid, unless_open=False)
        assert not isinstance(found, _Open)
        return found

    async def _recorded(self, eid: str, unless_open: bool) -> ExecutionView | _Open | None:
        """``unless_open``: answer ``_OPEN`` for a running execution."""
        try:
            desc = await self._direct.describe(eid)
        except RPCError as err:
            if err.status in {RPCStatusCode.NOT_FOUND, RPCStatusCode.INVALID_ARGUMENT}:
                return None
            raise
        if desc.status == WorkflowExecutionStatus.RUNNING:
            if unless_open:
                return _OPEN
            return await self._view_of_records(eid, desc)
        self._closed.put(eid, True)
        key = _closed_key(desc)
        known = self._closed_views.get(eid)
        if key is not None and known is not None and known[0] == key:
            return known[1]
        view = await self._view_of_records(eid, desc)
        if key is not None:
            self._closed_views.put(eid, (key, view))
        return view

    async def _view_of_records(self, eid: str, desc: Described) -> ExecutionView:
        handle = self._handle(eid)
        state = await self._recorded_state(desc)
        if state is None and desc.status == WorkflowExecutionStatus.COMPLETED:
            view: ExecutionView = await handle.result()
            return view
        inp = await self._start_input(handle)
        if state is None:
            state = initial_state(inp, inp.created_at or desc.start_time, desc.run_id)
        abnormal = _ABNORMAL_END.get(desc.status) if desc.status else None
        if abnormal and not state.status.terminal:
            status, said = abnormal
            why = await self._close_reason(handle) if status == Status.CANCELLED else None
            state = state.model_copy(
                update={
                    "status": status,
                    "statusReason": f"{said}: {why}" if why else said,
                    "clientStatusReason": said,
                    "finishedAt": desc.close_time,
                    "updatedAt": desc.close_time or state.updatedAt,
                    "callbacks": None,
                    "cancelledBy": "an operator in Temporal"
                    if desc.status == WorkflowExecutionStatus.CANCELED
                    else None,
                }
            )
        return ExecutionView.build(inp, state)

    async def _recorded_state(self, desc: Described) -> ExecutionState | None:
        """The state the workflow last recorded in its memo (none before its first task)."""
        payload = desc.memo.get("state")
        if payload is None:
            return None
        [state] = await self._client.data_converter.decode([payload], [ExecutionState])
        assert isinstance(state, ExecutionState)
        return state

    async def _close_reason(
        self, handle: WorkflowHandle[ExecutionWorkflow, ExecutionView]
    ) -> str | None:
        """The reason an operator gave when terminating (None if none, or not terminated)."""
        async for event in handle.fetch_history_events(
            event_filter_type=WorkflowHistoryEventFilterType.CLOSE_EVENT
        ):
            if event.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_TERMINATED:
                return event.workflow_execution_terminated_event_attributes.reason or None
        return None

    async def _start_input(
        self, handle: WorkflowHandle[ExecutionWorkflow, ExecutionView]
    ) -> ExecutionInput:
        known = self._inputs.get(handle.id)
        if known is not None:
            return known
        inp = await self._read_start_input(handle)
        self._inputs.put(handle.id, inp)
        return inp

    async def _read_start_input(
        self, handle: WorkflowHandle[ExecutionWorkflow, ExecutionView]
    ) -> ExecutionInput:
        async for event in handle.fetch_history_events(page_size=1):
            if event.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED:
                payloads = event.workflow_execution_started_event_attributes.input.payloads
                [inp] = await self._client.data_converter.decode(payloads, [ExecutionInput])
                assert isinstance(inp, ExecutionInput)
                return inp
            break
        raise LookupError(f"no start event for {handle.id}")
