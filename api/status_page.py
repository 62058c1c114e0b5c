"""The payer's status page, ``GET /status/{executionId}``: the workflow's name, status and
payment in words, a Pay link while payment is pending, the result or the reason once it ends.

Rendered on the server from the client-safe view, so it is correct without JavaScript (it
then refreshes itself while the execution runs); with JavaScript, ``/assets/status.js``
follows the execution's event stream and updates the page in place. The client token comes
as ``?client_token=`` once (it is moved into an HttpOnly cookie for this execution and the
page redirects to itself without it, so it stays out of history, referrers and logs) or from
that cookie. Every value is escaped; the CSP allows scripts from this origin only."""

from __future__ import annotations

import base64
import hashlib
import json
from html import escape
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from api.access import client_token_cookie, deps_of, limit_client
from api.client_tokens import verify
from tollway.views import client_view
from workflows.models import ExecutionView, PaymentStatus, Status

SCRIPT = (Path(__file__).parent / "assets" / "status.js").read_bytes()
STATUS_WORDS = {
    Status.AWAITING_PAYMENT: "Waiting for payment",
    Status.PAYMENT_CONFIRMED: "Payment received, starting",
    Status.QUEUED: "Queued",
    Status.RUNNING: "Running",
    Status.WAITING: "Waiting for a reply",
    Status.SUCCEEDED: "Done",
    Status.FAILED: "Failed",
    Status.CANCELLED: "Cancelled",
}
PAYMENT_WORDS = {
    PaymentStatus.NOT_REQUIRED: "No payment needed",
    PaymentStatus.PENDING: "Not paid yet",
    PaymentStatus.PAID: "Paid",
    PaymentStatus.FAILED: "Payment failed, you can try again",
    PaymentStatus.EXPIRED: "The checkout expired",
    PaymentStatus.REFUNDED: "Refunded",
    PaymentStatus.CANCELLED: "Cancelled",
}
_STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:36rem;margin:3rem auto;padding:0 1rem}"
    "dt{color:#555}dd{margin:0 0 .8rem}pre{background:#f4f4f4;padding:.6rem;overflow:auto}"
    "#pay a{display:inline-block;padding:.5rem 1.2rem;background:#1a56db;color:#fff;"
    "text-decoration:none;border-radius:4px}"
)
_STYLE_HASH = base64.b64encode(hashlib.sha256(_STYLE.encode()).digest()).decode()
CSP = (
    f"default-src 'none'; script-src 'self'; connect-src 'self'; style-src 'sha256-{_STYLE_HASH}'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
}


def payable(view: dict[str, Any]) -> bool:
    return view["status"] == Status.AWAITING_PAYMENT and bool(view["checkoutUrl"])


def _html(title: str, body: str, status: int = 200, refresh: bool = False) -> HTMLResponse:
    again = "<noscript><meta http-equiv=refresh content=10></noscript>" if refresh else ""
    page = (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        "<meta name=viewport content='width=device-width,initial-scale=1'>"
        f"<title>{escape(title)}</title><style>{_STYLE}</style>{again}</head>"
        f"<body>{body}</body></html>"
    )
    return HTMLResponse(page, status_code=status, headers=HEADERS)


def render(view: dict[str, Any], workflow_name: str) -> HTMLResponse:
    status, payment = Status(view["status"]), PaymentStatus(view["paymentStatus"])
    ended = status.terminal
    result = view["responsePayload"]
    words = {
        "status": {s.value: w for s, w in STATUS_WORDS.items()},
        "payment": {p.value: w for p, w in PAYMENT_WORDS.items()},
    }
    body = (
        f'<main id="execution" data-execution-id="{escape(view["id"])}">'
        f'<h1 id="workflow">{escape(workflow_name)}</h1>'
        f'<dl><dt>Status</dt><dd id="status">{escape(STATUS_WORDS[status])}</dd>'
        f'<dt>Payment</dt><dd id="payment">{escape(PAYMENT_WORDS[payment])}</dd></dl>'
        f'<p id="pay"{"" if payable(view) else " hidden"}>'
        f'<a id="pay-link" href="{escape(view["checkoutUrl"] or "")}">Pay</a></p>'
        f'<p id="reason"{"" if view["statusReason"] else " hidden"}>'
        f"{escape(view['statusReason'] or '')}</p>"
        f'<pre id="result"{"" if result is not None else " hidden"}>'
        f"{escape(json.dumps(result, indent=2, ensure_ascii=False)) if result is not None else ''}"
        "</pre></main>"
        # Data, not code: the CSP's script-src does not apply to a JSON block.
        f'<script type="application/json" id="words">{_json_for_html(words)}</script>'
        '<script src="/assets/status.js" defer></script>'
    )
    return _html(f"{workflow_name}: {STATUS_WORDS[status]}", body, refresh=not ended)


def _json_for_html(value: Any) -> str:
    """JSON safe inside a <script> block: no "</script>", no "<!--"."""
    return json.dumps(value).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _refused() -> HTMLResponse:
    return _html(
        "Link not valid",
        "<h1>This link is not valid</h1><p>It may have expired. Ask for a new one.</p>",
        401,
    )


async def show(request: Request) -> Response:
    deps = deps_of(request)
    execution_id = request.path_params["executionId"]
    secret = deps.client_token_secret
    given = request.query_params.get("client_token")
    if given is not None:  # keep it in a cookie, out of the address bar
        if verify(secret, given) != execution_id:
            return _refused()
        moved = RedirectResponse(f"/status/{execution_id}", status_code=303, headers=HEADERS)
        moved.set_cookie(
            client_token_cookie(execution_id),
            given,
            max_age=deps.settings.client_token_ttl_seconds,
            httponly=True,
            samesite="lax",
            secure=deps.settings.public_base_url.startswith("https://"),
            path="/",
        )
        return moved
    token = request.cookies.get(client_token_cookie(execution_id))
    if token is None or verify(secret, token) != execution_id:
        return _refused()
    await limit_client(request, execution_id)
    view: ExecutionView | None = await deps.service.view(execution_id)
    if view is None:
        return _refused()
    record = await deps.workflows.get(view.workflowId)
    name = record.definition.name if record is not None else "Your order"
    return render(client_view(view), name)


async def script(request: Request) -> Response:
    return Response(
        SCRIPT,
        media_type="text/javascript",
        headers={"Cache-Control": "public, max-age=300", "X-Content-Type-Options": "nosniff"},
    )


def routes() -> list[BaseRoute]:
    return [
        Route("/status/{executionId}", show, methods=["GET"]),
        Route("/assets/status.js", script, methods=["GET"]),
    ]
