"""``POST /v1/webhooks/payments/{provider}``: signed provider events in, workflow updates out."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse

from api.access import deps_of
from api.bodies import read_limited
from api.errors import FieldError, JsonResponse, bad_request, envelope, not_found
from api.payment_events import InvalidSignature, verify
from tollway.executions import TemporalUnavailable
from tollway.settings import webhook_secrets

MAX_EVENT_BYTES = 1024 * 1024


async def receive_payment_event(request: Request) -> JSONResponse:
    deps = deps_of(request)
    request.state.response_headers = await deps.limit_address(
        request, deps.settings.webhook_rate_limit, "webhook"
    )
    provider = request.path_params["provider"]
    if provider != deps.settings.payment_provider:
        raise not_found(f"No webhook for provider {provider!r} here.")
    raw = await read_limited(request, MAX_EVENT_BYTES)
    try:
        event = verify(
            raw, request.headers.get("stripe-signature"), webhook_secrets(deps.settings, provider)
        )
    except InvalidSignature as exc:
        request.app.state.metrics.webhooks.labels(provider, "invalid_signature").inc()
        raise bad_request(
            "Webhook signature verification failed.",
            [FieldError("Stripe-Signature", str(exc))],
            error="invalid_signature",
        ) from None
    try:
        outcome = await deps.payments.process(provider, event)
    except TemporalUnavailable as exc:
        raise exc.advise("The event could not be delivered now; retry later.") from None
    request.app.state.metrics.webhooks.labels(provider, outcome).inc()
    return JsonResponse(
        envelope(200, "success", {"received": True, "outcome": outcome}),
        headers=request.state.response_headers,
    )
