"""Outbound status webhooks, as the Standard Webhooks specification describes them: an
organization's endpoints, each with its own ``whsec_`` secret (stored encrypted, shown once),
and the deliveries of its executions' events with every attempt.

Headers ``webhook-id`` (the event id: the same on every attempt and resend, so receivers can
deduplicate), ``webhook-timestamp`` and ``webhook-signature: v1,<base64 HMAC-SHA256>`` over
``id.timestamp.body``; body ``{type, timestamp, data: {execution: <full view>}}``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import Engine
from sqlmodel import Session, col, select
from standardwebhooks import Webhook

from tollway.ids import new_id
from tollway.org_secrets import cipher
from tollway.tables import WebhookAttempt, WebhookDelivery, WebhookEndpoint, utcnow

EVENT_TYPES = (
    "execution.created",
    "execution.payment_confirmed",
    "execution.running",
    "execution.waiting",
    "execution.succeeded",
    "execution.failed",
    "execution.cancelled",
    "execution.refunded",
)


class WebhookError(ValueError):
    """An endpoint cannot be made or used as asked; the message says why."""


def new_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()


def delivery_id(endpoint_id: str, event_id: str) -> str:
    """One delivery per endpoint and event, whoever asks twice (a retried emit, a replay)."""
    digest = hashlib.sha256(f"{endpoint_id}:{event_id}".encode()).hexdigest()[:32]
    return f"whd_{digest}"


def refund_after_close_event_id(execution_id: str) -> str:
    """The id of the ``execution.refunded`` event for a refund learnt after the execution
    closed. Fixed per execution, so a second late refund delivers nothing new; after the
    numbered ids of the workflow's own events when sorted."""
    return f"msg_{execution_id}_refunded"


def event_body(event_type: str, occurred_at: datetime, execution: dict[str, Any]) -> str:
    return json.dumps(
        {
            "type": event_type,
            "timestamp": occurred_at.isoformat(),
            "data": {"execution": execution},
        },
        separators=(",", ":"),
        ensure_ascii=False,
    )


def signed_headers(secret: str, event_id: str, body: str, at: datetime) -> dict[str, str]:
    signature = Webhook(secret).sign(event_id, at, body)
    return {
        "webhook-id": event_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": signature,
        "content-type": "application/json",
        "user-agent": "Tollway-Webhooks/1",
    }


def check_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in {"http", "https"} or not parts.hostname or len(url) > 2000:
        raise WebhookError("the URL must be an http or https URL with a host")
    return url


class WebhookStore:
    def __init__(self, engine: Engine, secrets_key: str) -> None:
        self._engine = engine
        self._keys = secrets_key

    # -- endpoints ------------------------------------------------------------------------

    def create(
        self, organization_id: str, url: str, events: list[str]
    ) -> tuple[WebhookEndpoint, str]:
        unknown = sorted(set(events) - set(EVENT_TYPES))
        if unknown:
            raise WebhookError(
                f"unknown event types: {', '.join(unknown)} (known: {', '.join(EVENT_TYPES)})"
            )
        secret = new_secret()
        row = WebhookEndpoint(
            id=new_id("whe"),
            organization_id=organization_id,
            url=check_url(url),
            secret_ciphertext=cipher(self._keys).encrypt(secret.encode()).decode(),
            events=sorted(set(events)),
        )
        with Session(self._engine) as session:
            session.add(row)
            session.commit()
            session.refresh(row)
        return row, secret

    def endpoints(self, organization_id: str | None = None) -> list[WebhookEndpoint]:
        with Session(self._engine) as session:
            query = select(WebhookEndpoint).order_by(col(WebhookEndpoint.created_at))
            if organization_id is not None:
                query = query.where(WebhookEndpoint.organization_id == organization_id)
            return list(session.exec(query))

    def endpoint(self, endpoint_id: str) -> WebhookEndpoint | None:
        with Session(self._engine) as session:
            return session.get(WebhookEndpoint, endpoint_id)

    def delete(self, endpoint_id: str) -> bool:
        with Session(self._engine) as session:
            row = session.get(WebhookEndpoint, endpoint_id)
            if row is None:
                return False
            session.delete(row)
            session.commit()
            return True

    def subscribed(self, organization_id: str, event_type: str) -> list[WebhookEndpoint]:
        return [
            e for e in self.endpoints(organization_id) if not e.events or event_type in e.events
        ]

    def secret(self, endpoint: WebhookEndpoint) -> str:
        return cipher(self._keys).decrypt(endpoint.secret_ciphertext.encode()).decode()

    # -- deliveries -----------------------------------------------------------------------

    def open_delivery(self, row: WebhookDelivery) -> bool:
        """Record a delivery; False when it exists already (the same event again)."""
        with Session(self._engine, expire_on_commit=False) as session:
            if session.get(WebhookDelivery, row.id) is not None:
                return False
            session.add(row)
            session.commit()
            return True

    def delivery(self, delivery_id: str) -> WebhookDelivery | None:
        with Session(self._engine) as session:
            return session.get(WebhookDelivery, delivery_id)

    def deliveries(self, endpoint_id: str) -> list[WebhookDelivery]:
        with Session(self._engine) as session:
            query = (
                select(WebhookDelivery)
                .where(WebhookDelivery.endpoint_id == endpoint_id)
                .order_by(col(WebhookDelivery.created_at), col(WebhookDelivery.event_id))
            )
            return list(session.exec(query))

    def attempts(self, delivery_id: str) -> list[WebhookAttempt]:
        with Session(self._engine) as session:
            query = (
                select(WebhookAttempt)
                .where(WebhookAttempt.delivery_id == delivery_id)
                .order_by(col(WebhookAttempt.attempt))
            )
            return list(session.exec(query))

    def record_attempt(
        self,
        delivery_id: str,
        attempt: int,
        started_at: datetime,
        duration_ms: int,
        status_code: int | None,
        error: str | None,
    ) -> None:
        succeeded = status_code is not None and 200 <= status_code < 300
        with Session(self._engine) as session:
            session.add(
                WebhookAttempt(
                    delivery_id=delivery_id,
                    attempt=attempt,
                    started_at=started_at,
                    duration_ms=duration_ms,
                    status_code=status_code,
                    error=error[:500] if error else None,
                )
            )
            row = session.get(WebhookDelivery, delivery_id, with_for_update=True)
            if row is not None:
                row.attempts = max(row.attempts, attempt)
                row.last_status_code = status_code
                row.last_error = error[:500] if error else None
                if succeeded:
                    row.status, row.delivered_at = "succeeded", utcnow()
                session.add(row)
            session.commit()

    def give_up(self, delivery_id: str, reason: str) -> None:
        with Session(self._engine) as session:
            row = session.get(WebhookDelivery, delivery_id, with_for_update=True)
            if row is not None and row.status != "succeeded":
                row.status, row.last_error = "failed", row.last_error or reason[:500]
                session.add(row)
                session.commit()
