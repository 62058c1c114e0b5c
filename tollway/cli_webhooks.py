"""``tollway admin webhook create|list|delete|deliveries|resend``: organizations' status
webhook endpoints and what was delivered to them."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Callable
from typing import Any

from sqlalchemy import Engine

from tollway.settings import get_settings, secret_value
from tollway.status_webhooks import EVENT_TYPES, WebhookStore
from tollway.tables import Organization, WebhookDelivery, WebhookEndpoint

Action = Callable[[argparse._SubParsersAction, str, str], argparse.ArgumentParser]  # type: ignore[type-arg]


def add_parsers(what: Any, action: Action) -> None:
    hook = what.add_parser("webhook").add_subparsers(dest="action", required=True)
    create = action(
        hook, "create", "add a status webhook endpoint; its signing secret is shown once"
    )
    create.add_argument("--org", required=True)
    create.add_argument("--url", required=True)
    create.add_argument(
        "--event",
        action="append",
        choices=EVENT_TYPES,
        metavar="TYPE",
        help=f"an event type to send (repeat; all by default): {', '.join(EVENT_TYPES)}",
    )
    action(hook, "list", "list endpoints (never their secrets)").add_argument("--org")
    action(hook, "delete", "delete an endpoint (its pending deliveries stop)").add_argument("id")
    deliveries = action(hook, "deliveries", "what was sent to an endpoint, with every attempt")
    deliveries.add_argument("--endpoint", required=True)
    action(hook, "resend", "send a delivery's event again (same webhook-id)").add_argument(
        "delivery"
    )


def _out(value: Any, as_json: bool, text: str) -> None:
    sys.stdout.write((json.dumps(value, default=str) if as_json else text) + "\n")


def _endpoint(row: WebhookEndpoint) -> dict[str, Any]:
    return {
        "id": row.id,
        "organizationId": row.organization_id,
        "url": row.url,
        "events": row.events or list(EVENT_TYPES),
        "createdAt": row.created_at.isoformat(),
    }


def _delivery(store: WebhookStore, row: WebhookDelivery) -> dict[str, Any]:
    return {
        "id": row.id,
        "eventId": row.event_id,
        "type": row.event_type,
        "executionId": row.execution_id,
        "status": row.status,
        "attempts": [
            {
                "attempt": a.attempt,
                "at": a.started_at.isoformat(),
                "durationMs": a.duration_ms,
                "statusCode": a.status_code,
                "error": a.error,
            }
            for a in store.attempts(row.id)
        ],
        "resendOf": row.resend_of,
        "createdAt": row.created_at.isoformat(),
        "deliveredAt": row.delivered_at.isoformat() if row.delivered_at else None,
    }


def run(args: argparse.Namespace, engine: Engine) -> int:
    settings = get_settings()
    store = WebhookStore(engine, secret_value(settings.secrets_key, "TOLLWAY_SECRETS_KEY"))
    if args.action == "create":
        from sqlmodel import Session

        with Session(engine) as session:
            if session.get(Organization, args.org) is None:
                raise LookupError(f"no organization {args.org}")
        row, secret = store.create(args.org, args.url, args.event or [])
        _out(
            {"id": row.id, "secret": secret},
            args.json,
            f"created endpoint {row.id} -> {row.url}\n"
            f"signing secret (shown once, store it now): {secret}",
        )
    elif args.action == "list":
        rows = [_endpoint(r) for r in store.endpoints(args.org)]
        text = "\n".join(f"{r['id']}  {r['url']}  {','.join(r['events'])}" for r in rows)
        _out(rows, args.json, text or "(none)")
    elif args.action == "delete":
        if not store.delete(args.id):
            raise LookupError(f"no endpoint {args.id}")
        _out({"id": args.id, "deleted": True}, args.json, f"deleted endpoint {args.id}")
    elif args.action == "deliveries":
        if store.endpoint(args.endpoint) is None:
            raise LookupError(f"no endpoint {args.endpoint}")
        rows = [_delivery(store, d) for d in store.deliveries(args.endpoint)]
        text = "\n".join(
            f"{r['id']}  {r['type']}  {r['status']}  {len(r['attempts'])} attempt(s)" for r in rows
        )
        _out(rows, args.json, text or "(none)")
    elif args.action == "resend":
        again = asyncio.run(_resend(store, args.delivery))
        _out({"id": again.id, "eventId": again.event_id}, args.json, f"resending as {again.id}")
    return 0


async def _resend(store: WebhookStore, original_id: str) -> WebhookDelivery:
    """A new delivery of the same event (same ``webhook-id``, same body), as its own
    durable workflow."""
    from activities.webhook_activities import start_delivery
    from tollway.temporal import connect

    original = store.delivery(original_id)
    if original is None:
        raise LookupError(f"no delivery {original_id}")
    number = sum(1 for d in store.deliveries(original.endpoint_id) if d.resend_of == original.id)
    again = WebhookDelivery(
        id=f"{original.id}_r{number + 1}",
        endpoint_id=original.endpoint_id,
        organization_id=original.organization_id,
        event_id=original.event_id,
        event_type=original.event_type,
        execution_id=original.execution_id,
        body=original.body,
        resend_of=original.id,
    )
    store.open_delivery(again)
    settings = get_settings()
    client = await connect(settings)
    await start_delivery(
        client, settings.task_queue, again.id, settings.webhook_retry_initial_seconds
    )
    return again
