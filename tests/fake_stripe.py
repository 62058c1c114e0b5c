"""A small stand-in for the few Stripe endpoints Tollway calls, served on 127.0.0.1.

It behaves like Stripe where Tollway relies on it:
- it records every request (path, form params, Idempotency-Key);
- a repeated idempotency key gets the first response; reused with *different* parameters it
  is a 400 ``idempotency_error``, as at Stripe;
- it keeps its own books of PaymentIntents (a test "pays" with :meth:`FakeStripe.charge`):
  unknown intents cannot be refunded, a refund beyond what is left of the charge is refused,
  and every refund is kept, so a double refund is visible to the money checks (it is also a
  :class:`tests.money.Bank`).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tests.money import STRIPE_BANKS, Held
from tests.servers import serve


@dataclass
class Recorded:
    method: str
    path: str
    params: dict[str, str]
    idempotency_key: str | None
    authorization: str | None


@dataclass
class Intent:
    id: str
    amount: int
    currency: str
    execution_id: str
    refunds: list[dict[str, Any]] = field(default_factory=list)

    @property
    def refunded(self) -> int:
        return sum(int(r["amount"]) for r in self.refunds)


def _error(kind: str, message: str, code: str | None = None) -> tuple[int, dict[str, Any]]:
    error: dict[str, Any] = {"type": kind, "message": message}
    if code:
        error["code"] = code
    return 400 if kind != "api_error" else 500, {"error": error}


@dataclass
class FakeStripe:
    requests: list[Recorded] = field(default_factory=list)
    sessions: dict[str, dict[str, Any]] = field(default_factory=dict)
    intents: dict[str, Intent] = field(default_factory=dict)
    fail_next: int = 0  # answer this many requests with 500 first
    _replies: dict[str, tuple[dict[str, str], int, dict[str, Any]]] = field(default_factory=dict)
    _ids: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    def calls(self, path_part: str) -> list[Recorded]:
        return [r for r in self.requests if path_part in r.path]

    def charge(self, intent_id: str, amount: int, currency: str, execution_id: str) -> str:
        """A payer paid: Stripe now holds the money of this PaymentIntent."""
        self.intents[intent_id] = Intent(intent_id, amount, currency, execution_id)
        return intent_id

    @property
    def refunded(self) -> dict[str, str]:
        """payment intent -> its (first) refund id."""
        return {i.id: i.refunds[0]["id"] for i in self.intents.values() if i.refunds}

    def money(self, execution_id: str) -> list[Held]:
        return [
            Held(i.id, i.amount, i.currency, len(i.refunds))
            for i in self.intents.values()
            if i.execution_id == execution_id
        ]

    async def _handle(self, request: Request) -> JSONResponse:
        params = dict(parse_qsl((await request.body()).decode()))
        if request.method == "GET":
            params.update(request.query_params)
        key = request.headers.get("idempotency-key")
        self.requests.append(
            Recorded(
                request.method, request.url.path, params, key, request.headers.get("authorization")
            )
        )
        if self.fail_next > 0:
            self.fail_next -= 1
            status, body = _error("api_error", "boom")
            return JSONResponse(body, status)
        if key and key in self._replies:
            first_params, status, body = self._replies[key]
            if first_params != params:
                status, body = _error(
                    "idempotency_error",
                    "Keys for idempotent requests can only be used with the same parameters "
                    "they were first used with.",
                )
            return JSONResponse(body, status)
        status, body = self._answer(request.method, request.url.path, params)
        if key:
            self._replies[key] = (params, status, body)
        return JSONResponse(body, status)

    def _answer(self, method: str, path: str, params: dict[str, str]) -> tuple[int, dict[str, Any]]:
        n = next(self._ids)
        if path == "/v1/checkout/sessions":
            session = {
                "id": f"cs_test_{n}",
                "object": "checkout.session",
                "status": "open",
                "url": f"https://checkout.stripe.test/c/pay/cs_test_{n}",
                "client_reference_id": params.get("client_reference_id"),
                "metadata": {"executionId": params.get("metadata[executionId]")},
            }
            self.sessions[session["id"]] = session
            return 200, session
        if path.endswith("/expire"):
            session = self.sessions[path.split("/")[-2]]
            if session["status"] != "open":
                return _error("invalid_request_error", "Only open sessions can be expired.")
            session["status"] = "expired"
            return 200, session
        if path == "/v1/refunds" and method == "GET":
            intent = self.intents.get(params.get("payment_intent", ""))
            data = intent.refunds if intent else []
            return 200, {"object": "list", "data": data, "has_more": False, "url": path}
        if path == "/v1/refunds":
            return self._refund(n, params)
        return _error("invalid_request_error", "no such route")

    def _refund(self, n: int, params: dict[str, str]) -> tuple[int, dict[str, Any]]:
        intent = self.intents.get(params.get("payment_intent", ""))
        if intent is None:
            return _error(
                "invalid_request_error",
                f"No such payment_intent: '{params.get('payment_intent')}'",
                "resource_missing",
            )
        left = intent.amount - intent.refunded
        if left <= 0:
            return _error(
                "invalid_request_error",
                "Charge has already been refunded.",
                "charge_already_refunded",
            )
        amount = int(params.get("amount", left))
        if amount > left:
            return _error(
                "invalid_request_error",
                f"Refund amount ({amount}) is greater than unrefunded amount on charge ({left})",
                "amount_too_large",
            )
        refund = {
            "id": f"re_test_{n}",
            "object": "refund",
            "payment_intent": intent.id,
            "amount": amount,
            "status": "succeeded",
        }
        intent.refunds.append(refund)
        return 200, refund


@contextmanager
def serve_fake_stripe() -> Iterator[tuple[FakeStripe, str]]:
    fake = FakeStripe()
    app = Starlette(routes=[Route("/{path:path}", fake._handle, methods=["GET", "POST"])])
    STRIPE_BANKS.append(fake)
    try:
        with serve(app) as base:
            yield fake, base
    finally:
        STRIPE_BANKS.remove(fake)
