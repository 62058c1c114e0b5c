"""Callback tokens for ``wait_for_callback`` steps, made here and not in workflow code.

``workflow.uuid4()`` and ``workflow.random()`` are seeded from the run id, which callers and
payers can see: anything they produce can be recomputed by anyone who knows ``runId``. A
token must be unguessable, so it comes from the operating system's CSPRNG in an activity,
and the workflow keeps the result (replays read it back from history).
"""

from __future__ import annotations

import secrets

from temporalio import activity

from workflows.models import CallbackTokensRequest, CallbackTokensResult


@activity.defn(name="callbacks.new_tokens")
def new_callback_tokens(request: CallbackTokensRequest) -> CallbackTokensResult:
    return CallbackTokensResult(
        tokens={step_id: f"cb_{secrets.token_urlsafe(32)}" for step_id in request.step_ids}
    )
