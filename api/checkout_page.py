"""The local provider's checkout page: workflow name, amount, status, Pay and Cancel.

Plain HTML forms (no JavaScript), every value escaped, a strict CSP. Forms carry a CSRF
token bound to a SameSite=Strict cookie and to the session, and a cross-origin ``Origin``
is refused, so another site cannot drive Pay or Cancel. Pay captures the money in the local
bank, then emits a signed Stripe-format ``checkout.session.completed`` event through the
same verification path as Stripe's webhooks; Cancel emits ``checkout.session.expired``.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from html import escape
from urllib.parse import parse_qs, urlsplit

import anyio.to_thread
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from api.access import deps_of
from api.bodies import read_limited
from api.client_tokens import issue
from api.deps import Deps
from api.errors import ApiError
from api.payment_events import verify
from tollway.executions import TemporalUnavailable
from tollway.local_bank import checkout_event, encode, sign
from tollway.settings import webhook_secrets
from tollway.tables import Order, utcnow
from workflows.models import RefundRequest

COOKIE = "tollway_csrf"
MAX_FORM_BYTES = 4096
HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
    "Referrer-Policy": "same-origin",  # "no-referrer" would make browsers send Origin: null
    "X-Content-Type-Options": "nosniff",
}
ZERO_DECIMAL = frozenset({"jpy", "krw", "vnd", "clp", "isk", "huf", "twd", "ugx", "xof"})


def _csrf(deps: Deps, cookie: str, session_id: str) -> str:
    key = deps.client_token_secret.encode()
    return hmac.new(key, f"csrf:{cookie}:{session_id}".encode(), hashlib.sha256).hexdigest()


def money(amount: int, currency: str) -> str:
    if currency in ZERO_DECIMAL:
        return f"{amount} {currency.upper()}"
    return f"{amount / 100:.2f} {currency.upper()}"


def _page(
    title: str, body: str, status: int = 200, cookie: str | None = None, secure: bool = False
) -> HTMLResponse:
    html = (
        "<!doctype html><html lang=en><meta charset=utf-8>"
        "<meta name=viewport content='width=device-width,initial-scale=1'>"
        f"<title>{escape(title)}</title>"
        "<style>body{font-family:system-ui,sans-serif;max-width:32rem;margin:3rem auto;"
        "padding:0 1rem}dt{color:#555}dd{margin:0 0 .8rem}button{font-size:1rem;"
        "padding:.5rem 1.2rem;margin-right:.5rem}</style>"
        f"<h1>{escape(title)}</h1>{body}</html>"
    )
    response = HTMLResponse(html, status_code=status, headers=HEADERS)
    if cookie is not None:
        response.set_cookie(
            COOKIE, cookie, httponly=True, samesite="strict", path="/checkout", secure=secure
        )
    return response


def _payable(order: Order) -> bool:
    expires = order.expires_at
    if expires is not None and expires.tzinfo is None:  # SQLite returns naive UTC
        expires = expires.replace(tzinfo=utcnow().tzinfo)
    return order.status in {"pending", "failed"} and (expires is None or expires > utcnow())


async def _order(deps: Deps, session_id: str) -> Order | None:
    """The local provider's order behind ``session_id``; never another provider's (a Stripe
    order is paid at Stripe, never by this page)."""
    if len(session_id) > 255:
        return None
    order = await anyio.to_thread.run_sync(deps.ledger.by_session, session_id)
    return order if order is not None and order.provider == "local" else None


async def _limited(request: Request, deps: Deps) -> Response | None:
    """The checkout takes no token: limited per client address (an HTML 429 when spent)."""
    try:
        await deps.limit_address(request, deps.settings.checkout_rate_limit, "checkout")
    except ApiError as exc:
        page = _page("Too many requests", f"<p>{escape(exc.message)}</p>", 429)
        page.headers.update(exc.headers)
        return page
    return None


async def show(request: Request) -> Response:
    deps = deps_of(request)
    if (refused := await _limited(request, deps)) is not None:
        return refused
    session_id = request.path_params["session_id"]
    order = await _order(deps, session_id)
    if order is None:
        return _page("Checkout not found", "<p>This checkout does not exist.</p>", 404)
    view = await deps.service.view(order.execution_id)
    cookie = request.cookies.get(COOKIE) or secrets.token_urlsafe(32)
    status = view.status.value if view else "unknown"
    payment = view.paymentStatus.value if view else order.status
    token = _csrf(deps, cookie, session_id)
    message = {
        "paid": "Thank you: your payment was received.",
        "error": "The payment could not be completed; you were not charged.",
    }.get(request.query_params.get("result", ""), "")
    body = (
        (f"<p role=status>{escape(message)}</p>" if message else "") + "<dl>"
        f"<dt>Workflow</dt><dd id=workflow>{escape(order.workflow_name)}</dd>"
        f"<dt>Amount</dt><dd id=amount>{escape(money(order.amount, order.currency))}</dd>"
        f"<dt>Currency</dt><dd id=currency>{escape(order.currency.upper())}</dd>"
        f"<dt>Status</dt><dd id=status>{escape(status)}</dd>"
        f"<dt>Payment</dt><dd id=payment>{escape(payment)}</dd>"
        "</dl>"
    )
    if _payable(order) and view is not None and status == "awaiting_payment":
        action = f"/checkout/{escape(session_id, quote=True)}"
        hidden = f"<input type=hidden name=csrf value='{escape(token, quote=True)}'>"
        body += (
            f"<form method=post action='{action}/pay' style=display:inline>{hidden}"
            "<button id=pay type=submit>Pay</button></form>"
            f"<form method=post action='{action}/cancel' style=display:inline>{hidden}"
            "<button id=cancel type=submit>Cancel</button></form>"
        )
    secure = deps.settings.public_base_url.startswith("https://")
    return _page("Checkout", body, cookie=cookie, secure=secure)


async def _check_form(request: Request, deps: Deps, session_id: str) -> bool:
    # A foreign Origin is refused outright; an absent or opaque ("null") one still needs the
    # token, which only a page holding our SameSite=Strict cookie can pair with it.
    origin = request.headers.get("origin")
    if origin and origin != "null":
        allowed = {_origin(deps.settings.public_base_url), _origin(str(request.base_url))}
        if origin.rstrip("/") not in allowed:
            return False
    try:  # read with a limit: the form is a few hundred bytes, anything big is refused early
        raw = await read_limited(request, MAX_FORM_BYTES)
    except ApiError:
        return False
    form = parse_qs(raw.decode("latin-1"))
    cookie = request.cookies.get(COOKIE)
    given = (form.get("csrf") or [""])[0]
    return bool(cookie) and hmac.compare_digest(given, _csrf(deps, cookie or "", session_id))


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


async def act(request: Request) -> Response:
    deps = deps_of(request)
    if (refused := await _limited(request, deps)) is not None:
        return refused
    session_id, action = request.path_params["session_id"], request.path_params["action"]
    if action not in {"pay", "cancel"}:
        return _page("Not found", "<p>Unknown action.</p>", 404)
    if not await _check_form(request, deps, session_id):
        return _page("Refused", "<p>This form was not sent from the checkout page.</p>", 403)
    order = await _order(deps, session_id)
    if order is None:
        return _page("Checkout not found", "<p>This checkout does not exist.</p>", 404)
    back = f"/checkout/{session_id}"
    if not _payable(order):
        return RedirectResponse(back, status_code=303)
    provider = deps.local_bank
    reference = None
    if action == "pay":
        reference = await anyio.to_thread.run_sync(
            provider.capture, order.execution_id, session_id, order.amount, order.currency
        )
    event = checkout_event(
        "checkout.session.completed" if action == "pay" else "checkout.session.expired",
        execution_id=order.execution_id,
        session_id=session_id,
        amount=order.amount,
        currency=order.currency,
        payment_reference=reference,
        payment_status="paid" if action == "pay" else "unpaid",
    )
    secrets_ = webhook_secrets(deps.settings, "local")
    raw = encode(event)
    try:
        verified = verify(raw, sign(raw, secrets_[0]), secrets_)  # the webhook's own path
        await deps.payments.process("local", verified)
    except TemporalUnavailable:
        if reference is not None:  # not delivered: give the money straight back
            await anyio.to_thread.run_sync(
                provider.refund,
                RefundRequest(
                    execution_id=order.execution_id,
                    provider="local",
                    payment_reference=reference,
                    amount=order.amount,
                    currency=order.currency,
                    reason="could not be delivered",
                ),
            )
        return RedirectResponse(f"{back}?result=error", status_code=303)
    if reference is None:
        return RedirectResponse(back, status_code=303)
    # Paid: on to the payer's status page, which follows the execution to its end (whoever
    # holds the checkout may watch that execution: a client token for it).
    token = issue(
        deps.client_token_secret, order.execution_id, deps.settings.client_token_ttl_seconds
    )
    return RedirectResponse(f"/status/{order.execution_id}?client_token={token}", status_code=303)


def routes() -> list[BaseRoute]:
    """Mounted only when the payment provider is ``local``."""
    return [
        Route("/checkout/{session_id}", show, methods=["GET"]),
        Route("/checkout/{session_id}/{action}", act, methods=["POST"]),
    ]
