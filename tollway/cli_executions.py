"""``tollway admin executions list|show|cancel|refund``: operators acting on executions."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Callable
from typing import Any

from sqlalchemy import Engine
from sqlmodel import Session, select

from tollway.settings import get_settings
from tollway.tables import Order, Payment

Action = Callable[[argparse._SubParsersAction, str, str], argparse.ArgumentParser]  # type: ignore[type-arg]


def add_parsers(what: Any, action: Action) -> None:
    exe = what.add_parser("executions").add_subparsers(dest="action", required=True)
    listing = action(exe, "list", "list the executions of a workflow, newest first")
    listing.add_argument("--workflow", required=True)
    listing.add_argument("--status")
    listing.add_argument("--limit", type=int, default=50)
    action(exe, "show", "the full view of an execution and its order and payments").add_argument(
        "id"
    )
    cancel = action(exe, "cancel", "cancel an execution (expires its checkout, refunds)")
    cancel.add_argument("id")
    cancel.add_argument("--reason", required=True)
    refund = action(
        exe,
        "refund",
        "refund a closed execution's payment through the provider (e.g. one terminated in "
        "Temporal); a second call is a no-op",
    )
    refund.add_argument("id")
    refund.add_argument("--reason", required=True)


def _out(value: Any, as_json: bool, text: str) -> None:
    sys.stdout.write((json.dumps(value, default=str) if as_json else text) + "\n")


def _ledger(engine: Engine, execution_id: str) -> dict[str, Any] | None:
    with Session(engine) as session:
        order = session.exec(select(Order).where(Order.execution_id == execution_id)).first()
        payments = list(session.exec(select(Payment).where(Payment.execution_id == execution_id)))
    if order is None and not payments:
        return None
    return {
        "order": order.model_dump(mode="json") if order else None,
        "payments": [p.model_dump(mode="json") for p in payments],
    }


def run(args: argparse.Namespace, engine: Engine) -> int:
    return asyncio.run(_run(args, engine))


async def _run(args: argparse.Namespace, engine: Engine) -> int:
    from tollway.executions import AlreadyTerminal, ExecutionService
    from tollway.ledger import OrderLedger
    from tollway.temporal import connect
    from tollway.views import full_view

    settings = get_settings()
    client = await connect(settings)
    service = ExecutionService(
        client,
        settings.task_queue,
        request_deadline=settings.request_deadline_seconds,
        query_timeout=settings.query_timeout_seconds,
        ledger=OrderLedger(engine),
    )
    if args.action == "list":
        rows = await service.list_for_operator(args.workflow, args.status, args.limit)
        text = "\n".join(
            f"{r['id']}  {r['status']}  {r['paymentStatus']}  {r['createdAt']}" for r in rows
        )
        _out(rows, args.json, text or "(none)")
        return 0
    if args.action == "refund":
        return await _refund(args, engine, client)
    view = await service.view(args.id)
    if view is None:
        raise LookupError(f"execution {args.id!r} does not exist")
    if args.action == "show":
        shown = {"execution": full_view(view), "ledger": _ledger(engine, args.id)}
        text = (
            f"{view.id}  {view.status.value}  payment {view.paymentStatus.value}\n"
            f"  {view.statusReason or ''}".rstrip()
        )
        _out(shown, args.json, text)
        return 0
    try:
        cancelled = await service.cancel(args.id, f"an operator ({args.reason})")
    except AlreadyTerminal as ended:
        _out(
            {"error": f"already ended: {ended.view.status.value}", "execution": full_view(view)},
            args.json,
            f"error: execution already ended: {ended.view.status.value}",
        )
        return 1
    _out(
        {"execution": full_view(cancelled)},
        args.json,
        f"{cancelled.id}  {cancelled.status.value}  {cancelled.statusReason}",
    )
    return 0


async def _refund(args: argparse.Namespace, engine: Engine, client: Any) -> int:
    from tollway.settle import refund_execution
    from worker.main import build_provider

    provider = build_provider(get_settings(), engine)
    done = await refund_execution(engine, client, provider, args.id, args.reason)
    _out(
        {
            "executionId": done.execution_id,
            "paymentReference": done.payment_reference,
            "refundReference": done.refund_reference,
            "alreadyRefunded": done.already,
        },
        args.json,
        f"{'already refunded' if done.already else 'refunded'} {done.payment_reference} "
        f"of {done.execution_id} ({done.refund_reference})",
    )
    return 0
