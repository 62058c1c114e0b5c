"""Payment helpers for tests: signed events as a provider sends them, and the three money
invariants asserted from Temporal's history, the ledger and the local bank."""

from __future__ import annotations

import time
from typing import Any

import httpx
from sqlalchemy import Engine
from sqlmodel import Session, select
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client

from activities.local_provider import LocalPaymentProvider, checkout_event, encode, sign
from tests.conftest import WEBHOOK_SECRET
from tollway.ledger import OrderLedger
from tollway.tables import LocalCharge

WEBHOOK = "/v1/webhooks/payments/local"


def capture(
    engine: Engine, execution: dict[str, Any], amount: int = 500, currency: str = "usd"
) -> str:
    """Money taken by the (local) provider: what a real payer's card would be charged."""
    return LocalPaymentProvider(engine, "http://unused").capture(
        execution["id"], execution["checkoutSessionId"], amount, currency
    )


def completed(
    execution: dict[str, Any],
    reference: str | None,
    amount: int = 500,
    currency: str = "usd",
    **kw: Any,
) -> dict[str, Any]:
    return checkout_event(
        kw.pop("type", "checkout.session.completed"),
        execution_id=execution["id"],
        session_id=execution["checkoutSessionId"] or "cs_x",
        amount=amount,
        currency=currency,
        payment_reference=reference,
        **kw,
    )


async def send(
    http: httpx.AsyncClient,
    event: dict[str, Any],
    secret: str = WEBHOOK_SECRET,
    timestamp: int | None = None,
    header: str | None = None,
    path: str = WEBHOOK,
) -> httpx.Response:
    raw = encode(event)
    signature = header if header is not None else sign(raw, secret, timestamp or int(time.time()))
    headers = {"Content-Type": "application/json"}
    if signature:
        headers["Stripe-Signature"] = signature
    return await http.post(path, content=raw, headers=headers)


async def pay_via_webhook(
    http: httpx.AsyncClient, engine: Engine, execution: dict[str, Any]
) -> str:
    reference = capture(engine, execution)
    response = await send(http, completed(execution, reference))
    assert response.status_code == 200, response.text
    return reference


def charges(engine: Engine, execution_id: str) -> list[LocalCharge]:
    with Session(engine) as session:
        query = select(LocalCharge).where(LocalCharge.execution_id == execution_id)
        return list(session.exec(query))


async def steps_ran(client: Client, execution_id: str) -> bool:
    history = await client.get_workflow_handle(execution_id).fetch_history()
    return any(
        e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
        and e.activity_task_scheduled_event_attributes.activity_type.name == "steps.run"
        for e in history.events
    )


async def assert_money_invariants(
    client: Client,
    engine: Engine,
    view: dict[str, Any],
    price: tuple[int, str] = (500, "usd"),
    refund_on_failure: bool = True,
) -> None:
    eid = view["id"]
    held = [c for c in charges(engine, eid) if c.refunded_at is None]
    order = OrderLedger(engine).by_execution(eid)
    # (a) No step ever runs without a confirmed payment of the exact amount and currency.
    if await steps_ran(client, eid):
        assert order is not None and order.paid_at is not None, "work ran unpaid"
        paid = [c for c in charges(engine, eid) if c.payment_reference == order.payment_reference]
        assert paid and (paid[0].amount, paid[0].currency) == price, "work ran on a wrong payment"
    # (b) Charged at most once.
    assert len(held) <= 1, f"charged {len(held)} times"
    # (c) Every paid execution ends succeeded or refunded.
    terminal = view["status"] in {"workflow_succeeded", "workflow_failed", "workflow_cancelled"}
    if terminal and view["status"] != "workflow_succeeded":
        if refund_on_failure or view["status"] == "workflow_cancelled":
            assert not held, f"{view['status']} yet still holding {held}"
            if order is not None and order.payment_reference:
                assert order.status == "refunded" and order.refunded_at is not None
