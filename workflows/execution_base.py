"""The execution workflow's state and how it is recorded (memo + search attributes)."""

from __future__ import annotations

from typing import Any

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from workflows import search_attributes as sa
    from workflows.models import (
        CallbackAddress,
        CancelInput,
        ExecutionInput,
        ExecutionState,
        ExecutionView,
        PaymentNotice,
        PaymentStatus,
        Status,
        WebhookEvent,
    )

#: The status webhook event each status is announced with.
EVENT_OF_STATUS = {
    Status.PAYMENT_CONFIRMED: "execution.payment_confirmed",
    Status.RUNNING: "execution.running",
    Status.WAITING: "execution.waiting",
    Status.SUCCEEDED: "execution.succeeded",
    Status.FAILED: "execution.failed",
    Status.CANCELLED: "execution.cancelled",
}


class ExecutionBase:
    """State shared by the payment and work phases; set up by the workflow's ``__init__``."""

    _input: ExecutionInput
    _state: ExecutionState
    _payment: PaymentNotice | None
    _inbox: list[PaymentNotice]
    _handled: set[str]
    _outcomes: dict[str, str]
    _cancel: CancelInput | None
    _slot_requested: bool
    _slot_granted: bool
    _callbacks: dict[str, CallbackAddress]
    _callback_bodies: dict[str, Any]
    _closed_callbacks: set[str]
    # Status webhooks (only when the organization has endpoints): events waiting to be
    # emitted, numbered in the order of the execution's changes.
    _notifying: bool = False
    _outbox: list[WebhookEvent]
    _events_made: int = 0
    _announced_status: Status | None = None
    _announced_refund: bool = False

    def _view(self) -> ExecutionView:
        return ExecutionView.build(self._input, self._state)

    def _end(self, status: Status, reason: str | None, client: str | None, **changes: Any) -> None:
        """End with ``reason`` for the organization and ``client``, the same in words safe
        for the payer (no URLs, addresses, upstream bodies or who cancelled)."""
        self._set(
            status=status,
            statusReason=reason,
            clientStatusReason=client,
            finishedAt=workflow.now(),
            **changes,
        )

    def _end_cancelled(self, when: str, **changes: Any) -> None:
        """End by the cancellation asked for (``when``: "before payment", "while queued",
        "while running"); ``cancelledBy`` records that a cancel request ended it, so the API
        answers a repeated cancel from data, not from the words of the reason."""
        assert self._cancel is not None
        self._end(
            Status.CANCELLED,
            f"cancelled by {self._cancel.by} {when}",
            f"cancelled {when}",
            cancelledBy=self._cancel.by,
            **changes,
        )

    def _reason(self, reason: str | None, client: str | None, **changes: Any) -> None:
        self._set(statusReason=reason, clientStatusReason=client, **changes)

    def _set(self, **changes: Any) -> None:
        self._state = self._state.model_copy(update={**changes, "updatedAt": workflow.now()})
        self._record()

    _current_step: str | None = None

    def _show_details(self) -> None:
        """The current details the Temporal UI shows (no personal data, no history event)."""
        lines = [
            f"**Status** {self._state.status.value}",
            f"**Payment** {self._state.paymentStatus.value}",
        ]
        if self._current_step and not self._state.status.terminal:
            lines.append(f"**Step** {self._current_step}")
        if self._state.statusReason:
            lines.append(f"**Reason** {self._state.statusReason[:300]}")
        workflow.set_current_details("\n".join(lines))

    def _record(self) -> None:
        """Record the state on the workflow itself, so the view survives stopped workers."""
        if self._notifying:
            self._announce()
        self._show_details()
        workflow.upsert_memo({"state": self._state})
        workflow.upsert_search_attributes(
            [
                sa.STATUS.value_set(self._state.status.value),
                sa.PAYMENT_STATUS.value_set(self._state.paymentStatus.value),
            ]
        )

    def _announce(self) -> None:
        """Queue the status events this change makes (emitted by the workflow's notifier)."""
        kinds = []
        if self._events_made == 0:
            kinds.append("execution.created")
        status = self._state.status
        if status != self._announced_status:
            self._announced_status = status
            if status in EVENT_OF_STATUS:
                kinds.append(EVENT_OF_STATUS[status])
        if self._state.paymentStatus == PaymentStatus.REFUNDED and not self._announced_refund:
            self._announced_refund = True
            kinds.append("execution.refunded")
        view = self._view()
        for kind in kinds:
            self._events_made += 1
            self._outbox.append(
                WebhookEvent(
                    event_id=f"msg_{self._input.execution_id}_{self._events_made:04d}",
                    type=kind,
                    occurred_at=workflow.now(),
                    view=view,
                )
            )
