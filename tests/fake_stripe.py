"""A small stand-in for the few Stripe endpoints Tollway calls, served on 127.0.0.1.

It records every request (path, form params, Idempotency-Key) and, like Stripe, answers a
repeated idempotency key with the first response."""

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

from tests.servers import serve


@dataclass
class Recorded:
    method: str
    path: str
    params: dict[str, str]
    idempotency_key: str | None
    authorization: str | None


@dataclass
class FakeStripe:
    requests: list[Recorded] = field(default_factory=list)
    sessions: dict[str, dict[str, Any]] = field(default_factory=dict)
    refunded: dict[str, str] = field(default_factory=dict)  # payment_intent -> refund id
    fail_next: int = 0  # answer this many requests with 500 first
    _replies: dict[str, tuple[int, dict[str, Any]]] = field(default_factory=dict)
    _ids: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    def calls(self, path_part: str) -> list[Recorded]:
        return [r for r in self.requests if path_part in r.path]

    async def _handle(self, request: Request) -> JSONResponse:
        params = dict(parse_qsl((await request.body()).decode()))
        key = request.headers.get("idempotency-key")
        self.requests.append(
            Recorded(
                request.method, request.url.path, params, key, request.headers.get("authorization")
            )
        )
        if self.fail_next > 0:
            self.fail_next -= 1
            return JSONResponse({"error": {"type": "api_error", "message": "boom"}}, 500)
        if key and key in self._replies:
            status, body = self._replies[key]
            return JSONResponse(body, status)
        status, body = self._answer(request.url.path, params)
        if key:
            self._replies[key] = (status, body)
        return JSONResponse(body, status)

    def _answer(self, path: str, params: dict[str, str]) -> tuple[int, dict[str, Any]]:
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
                return 400, {
                    "error": {
                        "type": "invalid_request_error",
                        "message": "Only open sessions can be expired.",
                    }
                }
            session["status"] = "expired"
            return 200, session
        if path == "/v1/refunds":
            intent = params["payment_intent"]
            if intent in self.refunded:
                return 400, {
                    "error": {
                        "type": "invalid_request_error",
                        "code": "charge_already_refunded",
                        "message": "Charge has already been refunded.",
                    }
                }
            self.refunded[intent] = f"re_test_{n}"
            return 200, {
                "id": f"re_test_{n}",
                "object": "refund",
                "payment_intent": intent,
                "status": "succeeded",
            }
        return 404, {"error": {"type": "invalid_request_error", "message": "no such route"}}


@contextmanager
def serve_fake_stripe() -> Iterator[tuple[FakeStripe, str]]:
    fake = FakeStripe()
    app = Starlette(routes=[Route("/{path:path}", fake._handle, methods=["GET", "POST"])])
    with serve(app) as base:
        yield fake, base
