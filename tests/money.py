"""Payment helpers for tests: signed events as a provider sends them, and the three money
invariants asserted from Temporal's history, the ledger and the local bank."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from typing import Any, Protocol

import httpx
from sqlalchemy import Engine
from sqlmodel import Session, select
from temporalio.api.enums.v1 import EventType
from temporalio.api.history.v1 import HistoryEvent
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from activities.local_provider import LocalPaymentProvider, checkout_event, encode, sign
from tests.helpers import WEBHOOK_SECRET
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


@dataclass(frozen=True)
class Held:
    """Money a provider took for an execution, as the provider itself records it."""

    reference: str
    amount: int
    currency: str
    refunds: int  # how many refunds the provider made of it (more than one is a bug)


class Bank(Protocol):
    def money(self, execution_id: str) -> list[Held]: ...


class LocalBank:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def money(self, execution_id: str) -> list[Held]:
        return [
            Held(c.payment_reference, c.amount, c.currency, int(c.refund_id is not None))
            for c in charges(self._engine, execution_id)
        ]


# The Stripe stand-in in use, if any: the per-test check reads Stripe's books from it.
STRIPE_BANKS: list[Bank] = []


def bank_for(engine: Engine, provider: str) -> Bank:
    if provider == "stripe":
        assert STRIPE_BANKS, "a Stripe order exists but no Stripe stand-in is serving"
        return STRIPE_BANKS[-1]
    return LocalBank(engine)


async def _history_events(client: Client, execution_id: str) -> list[HistoryEvent]:
    try:
        history = await client.get_workflow_handle(execution_id).fetch_history()
    except RPCError as err:
        if err.status == RPCStatusCode.NOT_FOUND:
            return []
        raise
    return list(history.events)


def _activity_name(event: HistoryEvent) -> str | None:
    if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
        return event.activity_task_scheduled_event_attributes.activity_type.name
    return None


async def steps_ran(client: Client, execution_id: str) -> bool:
    return any(
        _activity_name(e) == "steps.run" for e in await _history_events(client, execution_id)
    )


async def payment_accepted_before_work(
    client: Client, execution_id: str, price: tuple[int, str]
) -> None:
    """Read from history: the payment's acceptance (the ``payments.confirm`` activity, with the
    exact amount and currency, completed) comes before the first step activity is scheduled."""
    events = await _history_events(client, execution_id)
    first_step = next((e.event_id for e in events if _activity_name(e) == "steps.run"), None)
    if first_step is None:
        return
    scheduled = {
        e.event_id: e.activity_task_scheduled_event_attributes
        for e in events
        if _activity_name(e) == "payments.confirm"
    }
    completed = [
        e
        for e in events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED
        and e.activity_task_completed_event_attributes.scheduled_event_id in scheduled
    ]
    assert completed, "steps were scheduled without a confirmed payment"
    confirmed = completed[0]
    assert confirmed.event_id < first_step, "a step was scheduled before the payment was accepted"
    attrs = scheduled[confirmed.activity_task_completed_event_attributes.scheduled_event_id]
    [payload] = attrs.input.payloads
    codec = client.data_converter.payload_codec
    [plain] = await codec.decode([payload]) if codec else [payload]
    request = json.loads(plain.data)
    assert (request["amount"], request["currency"]) == price, f"work ran on {request}"


async def assert_money_invariants(
    client: Client,
    engine: Engine,
    view: dict[str, Any],
    price: tuple[int, str] = (500, "usd"),
    refund_on_failure: bool = True,
    bank: Bank | None = None,
) -> None:
    eid = view["id"]
    order = OrderLedger(engine).by_execution(eid)
    bank = bank or bank_for(engine, order.provider if order else "local")
    money = bank.money(eid)
    held = [m for m in money if m.refunds == 0]
    # (a) No step ever runs without a confirmed payment of the exact amount and currency:
    # the ledger, the provider's books and the order of events in history all say so.
    if await steps_ran(client, eid):
        assert order is not None and order.paid_at is not None, "work ran unpaid"
        paid = [m for m in money if m.reference == order.payment_reference]
        assert paid and (paid[0].amount, paid[0].currency) == price, "work ran on a wrong payment"
        await payment_accepted_before_work(client, eid, price)
    # (b) Charged at most once, and nothing refunded twice.
    assert len(held) <= 1, f"charged {len(held)} times"
    assert all(m.refunds <= 1 for m in money), f"refunded twice: {money}"
    # (c) Every paid execution ends succeeded or refunded.
    terminal = view["status"] in {"workflow_succeeded", "workflow_failed", "workflow_cancelled"}
    if terminal and view["status"] != "workflow_succeeded":
        if refund_on_failure or view["status"] == "workflow_cancelled":
            assert not held, f"{view['status']} yet still holding {held}"
            if order is not None and order.payment_reference:
                assert order.status == "refunded" and order.refunded_at is not None
                assert view["paymentStatus"] == "refunded", view


async def assert_tenant_money_invariants(client: Client, engine: Engine, org_id: str) -> None:
    """Every priced execution a test made for ``org_id``, checked after the test: the money
    rules hold whatever the test itself asserted."""
    from tollway.executions import ExecutionService
    from tollway.tables import Order
    from tollway.views import full_view

    with Session(engine) as session:
        orders = list(session.exec(select(Order).where(Order.organization_id == org_id)))
    service = ExecutionService(client, "unused", 10.0, 2.0, ledger=OrderLedger(engine))
    for order in orders:
        refund_on_failure = _refund_on_failure(engine, order)
        price = (order.amount, order.currency)
        deadline = asyncio.get_running_loop().time() + 15
        while True:  # a refund or an ending may still be under way: give it a moment
            current = await service.view(order.execution_id)
            assert current is not None, f"order {order.id} has no execution"
            try:
                await assert_money_invariants(
                    client, engine, full_view(current), price, refund_on_failure
                )
                break
            except AssertionError:
                if asyncio.get_running_loop().time() > deadline:
                    raise
                await asyncio.sleep(0.2)


def _refund_on_failure(engine: Engine, order: Any) -> bool:
    from tollway.definitions import WorkflowDefinition
    from tollway.tables import WorkflowVersion

    with Session(engine) as session:
        version = session.exec(
            select(WorkflowVersion).where(
                WorkflowVersion.workflow_id == order.workflow_id,
                WorkflowVersion.version == order.workflow_version,
            )
        ).one()
    return WorkflowDefinition.model_validate(version.definition).refundOnFailure
