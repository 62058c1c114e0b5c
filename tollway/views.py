"""The two shapes of an execution: the full view (the creating organization) and the
client-safe view (a payer's client token), built from an allowlist so that a field added to
the full view never reaches payers by default."""

from __future__ import annotations

from typing import Any

from workflows.models import ExecutionView, Status

CLIENT_FIELDS = (
    "id",
    "workflowId",
    "status",
    "paymentStatus",
    "statusReason",
    "clientSafeMetadata",
    "responsePayload",
    "checkoutUrl",
    "checkoutSessionId",
    "createdAt",
    "updatedAt",
    "startedAt",
    "finishedAt",
)
INTERNAL_FIELDS = frozenset({"clientStatusReason", "cancelledBy"})
# For states recorded before the workflow kept a payer-safe reason: say only what happened.
_GENERIC_REASON = {
    Status.FAILED: "the execution failed",
    Status.CANCELLED: "the execution was cancelled",
}


def full_view(view: ExecutionView) -> dict[str, Any]:
    return view.model_dump(mode="json", exclude=set(INTERNAL_FIELDS))


def client_reason(view: ExecutionView) -> str | None:
    if view.clientStatusReason is not None or view.statusReason is None:
        return view.clientStatusReason
    return _GENERIC_REASON.get(view.status)


def client_view(view: ExecutionView) -> dict[str, Any]:
    dumped = view.model_dump(mode="json", include=set(CLIENT_FIELDS))
    dumped["statusReason"] = client_reason(view)
    return {name: dumped[name] for name in CLIENT_FIELDS}
