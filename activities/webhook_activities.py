"""Status webhooks, the side effects: ``webhooks.emit`` (a local activity of the execution)
records one delivery per subscribed endpoint and starts its delivery workflow, whose id is the
delivery's (so an event emitted twice is delivered once); ``webhooks.deliver`` makes one
signed attempt through the same SSRF guard as ``http`` steps and records it;
``webhooks.announce_refund`` emits ``execution.refunded`` for a refund learnt after the
execution closed, which its own workflow could not announce."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import anyio.to_thread
import httpx
from temporalio import activity
from temporalio.client import Client
from temporalio.common import WorkflowIDReusePolicy
from temporalio.exceptions import ApplicationError, WorkflowAlreadyStartedError

from activities.steps.ssrf import AddressRefused
from tollway.status_webhooks import (
    WebhookStore,
    delivery_id,
    event_body,
    refund_after_close_event_id,
    signed_headers,
)
from tollway.tables import WebhookDelivery
from tollway.views import full_view
from workflows.models import DeliveryInput, EmitRequest, WebhookEvent
from workflows.policies import WORKFLOW_TASK_TIMEOUT

if TYPE_CHECKING:  # the service imports the workflows, which import these activities
    from tollway.executions import ExecutionService

ATTEMPT_TIMEOUT = 15.0  # seconds a receiver has to answer one attempt


async def start_delivery(
    client: Client, task_queue: str, delivery: str, retry_initial_seconds: float
) -> int:
    """Start a delivery's workflow (its id is the delivery's); 0 when it exists already."""
    from workflows.webhook_delivery import WebhookDeliveryWorkflow

    try:
        await client.start_workflow(
            WebhookDeliveryWorkflow.run,
            DeliveryInput(delivery_id=delivery, retry_initial_seconds=retry_initial_seconds),
            id=delivery,
            task_queue=task_queue,
            task_timeout=WORKFLOW_TASK_TIMEOUT,
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
            static_summary="status webhook delivery",
        )
    except WorkflowAlreadyStartedError:
        return 0  # the same event for the same endpoint: delivered once
    return 1


class WebhookActivities:
    def __init__(
        self,
        client: Client,
        task_queue: str,
        store: WebhookStore | None,
        http: httpx.AsyncClient,
        retry_initial_seconds: float = 5.0,
        executions: ExecutionService | None = None,
    ) -> None:
        self._client = client
        # Reads closed executions' views, completed with what the ledger learnt since.
        self._executions = executions
        self._task_queue = task_queue
        self._store = store
        self._http = http
        self._retry_initial = retry_initial_seconds

    def _require_store(self) -> WebhookStore:
        if self._store is None:
            raise ApplicationError(
                "status webhooks need TOLLWAY_SECRETS_KEY on the worker", non_retryable=True
            )
        return self._store

    @activity.defn(name="webhooks.emit")
    async def emit(self, request: EmitRequest) -> int:
        """Start the deliveries of these events; returns how many were new."""
        if self._store is None:
            activity.logger.warning("status webhooks need TOLLWAY_SECRETS_KEY on the worker")
            return 0
        store = self._store
        started = 0
        for event in request.events:
            endpoints = await anyio.to_thread.run_sync(
                store.subscribed, request.organization_id, event.type
            )
            for endpoint in endpoints:
                row = WebhookDelivery(
                    id=delivery_id(endpoint.id, event.event_id),
                    endpoint_id=endpoint.id,
                    organization_id=request.organization_id,
                    event_id=event.event_id,
                    event_type=event.type,
                    execution_id=event.view.id,
                    body=event_body(event.type, event.occurred_at, full_view(event.view)),
                )
                await anyio.to_thread.run_sync(store.open_delivery, row)
                started += await start_delivery(
                    self._client, self._task_queue, row.id, self._retry_initial
                )
        return started

    @activity.defn(name="webhooks.announce_refund")
    async def announce_refund(self, execution_id: str) -> int:
        """``execution.refunded`` for a closed execution the ledger now knows was refunded
        (once per execution: its event id is fixed, and a delivery is made once per event and
        endpoint). Returns how many deliveries were new."""
        if self._executions is None:
            raise ApplicationError("no execution service on this worker", non_retryable=True)
        view = await self._executions.refunded_after_close(execution_id)
        if view is None:
            return 0
        event = WebhookEvent(
            event_id=refund_after_close_event_id(execution_id),
            type="execution.refunded",
            occurred_at=datetime.now(UTC),
            view=view,
        )
        return await self.emit(EmitRequest(organization_id=view.organizationId, events=[event]))

    @activity.defn(name="webhooks.deliver")
    async def deliver(self, request: DeliveryInput) -> int:
        """One attempt; returns the receiver's 2xx status. Anything else is retried by
        Temporal with backoff; a refused address or a deleted endpoint is not."""
        store = self._require_store()
        attempt = activity.info().attempt
        delivery = await anyio.to_thread.run_sync(store.delivery, request.delivery_id)
        if delivery is None:
            raise ApplicationError("no such delivery", type="DeliveryGone", non_retryable=True)
        endpoint = await anyio.to_thread.run_sync(store.endpoint, delivery.endpoint_id)
        if endpoint is None:
            raise ApplicationError(
                "the endpoint was deleted", type="EndpointGone", non_retryable=True
            )
        now = datetime.now(UTC)
        headers = signed_headers(store.secret(endpoint), delivery.event_id, delivery.body, now)
        began = time.monotonic()
        status: int | None = None
        error: str | None = None
        refused = False
        try:
            response = await self._http.post(
                endpoint.url,
                content=delivery.body.encode(),
                headers=headers,
                timeout=ATTEMPT_TIMEOUT,
                follow_redirects=False,
            )
            status = response.status_code
            if not 200 <= status < 300:
                error = f"the receiver answered {status}"
        except AddressRefused as exc:
            refused, error = True, f"address refused: {exc}"
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}"[:300]
        took = int((time.monotonic() - began) * 1000)
        await anyio.to_thread.run_sync(
            store.record_attempt, delivery.id, attempt, now, took, status, error
        )
        if status is not None and 200 <= status < 300:
            return status
        raise ApplicationError(
            error or "not delivered",
            type="AddressRefused" if refused else "NotDelivered",
            non_retryable=refused,
        )

    @activity.defn(name="webhooks.give_up")
    async def give_up(self, request: DeliveryInput) -> None:
        store = self._require_store()
        await anyio.to_thread.run_sync(store.give_up, request.delivery_id, "retries ran out")
